"""Live scores for the daily summary, checked against hand-computed numbers."""

from __future__ import annotations

import pytest

from bse_predict.alerts.summary_stats import ResolvedCall, group_stats, summarize


def _call(outcome: str, p_up: float, p_down: float, symbol: str = "BTCUSDT", target: str = "1%",
          alerted: bool = False, at: int = 10) -> ResolvedCall:
    return ResolvedCall(symbol=symbol, target=target, outcome=outcome, p_up=p_up, p_down=p_down,
                        p_none=round(1 - p_up - p_down, 10), alerted=alerted, resolved_at=at)


def test_group_stats_by_hand() -> None:
    calls = [_call("up", 0.6, 0.4, alerted=True), _call("down", 0.7, 0.3), _call("up", 0.2, 0.5),
             _call("none", 0.5, 0.3)]
    g = group_stats("g", calls)
    assert g.n == 4
    assert g.hit_rate == pytest.approx(1 / 4)  # only the first call's side came first
    assert g.base_rate == pytest.approx(2 / 4)  # up happened twice, down once
    assert g.edge == pytest.approx(-0.25)
    briers = [(0.6 - 1) ** 2 + 0.4**2 + 0, 0.7**2 + (0.3 - 1) ** 2 + 0, (0.2 - 1) ** 2 + 0.5**2 + 0.3**2,
              0.5**2 + 0.3**2 + (0.2 - 1) ** 2]
    assert g.brier == pytest.approx(sum(briers) / 4)
    f = (0.5, 0.25, 0.25)
    base = [(f[0] - 1) ** 2 + f[1] ** 2 + f[2] ** 2, f[0] ** 2 + (f[1] - 1) ** 2 + f[2] ** 2,
            (f[0] - 1) ** 2 + f[1] ** 2 + f[2] ** 2, f[0] ** 2 + f[1] ** 2 + (f[2] - 1) ** 2]
    assert g.brier_base == pytest.approx(sum(base) / 4)
    assert g.alerts == 1 and g.alert_hit_rate == 1.0


def test_summary_window_groups_reliability_and_ranking() -> None:
    calls = ([_call("up", 0.65, 0.3, "BTCUSDT", "1%")] * 5 + [_call("down", 0.65, 0.3, "ETHUSDT", "1%")] * 5
             + [_call("up", 0.45, 0.2, "ETHUSDT", "5%")] * 2 + [_call("up", 0.6, 0.3, at=99)])
    stats = summarize(calls, 0, 50, min_samples=3)
    assert stats is not None
    assert stats.overall.n == 12  # the call resolved at 99 is outside [0, 50)
    assert [g.name for g in stats.by_target] == ["1%", "5%"]
    assert [g.name for g in stats.by_symbol] == ["BTCUSDT", "ETHUSDT"]
    pairs, symbols, targets = stats.ranking["pair"], stats.ranking["symbol"], stats.ranking["target"]
    assert pairs.best is not None and pairs.best.name == "BTCUSDT 1%"
    assert pairs.worst is not None and pairs.worst.name == "ETHUSDT 1%"  # "ETHUSDT 5%" has too few outcomes
    # BTCUSDT: 5 of 5 up, base 1, edge 0; ETHUSDT: hit 2/7 (only its 5% calls), base 5/7, edge -3/7
    assert (symbols.best.name, symbols.worst.name) == ("BTCUSDT", "ETHUSDT")
    assert symbols.worst.edge == pytest.approx(2 / 7 - 5 / 7)
    assert targets.best is not None and targets.best.name == "1%" and targets.worst is None  # 5%: 2 < 3 outcomes
    bins = {(b.lower, b.upper): b for b in stats.reliability}
    assert bins[(0.6, 0.7)].n == 10 and bins[(0.6, 0.7)].observed == pytest.approx(0.5)
    assert bins[(0.4, 0.5)].n == 2 and bins[(0.4, 0.5)].mean_forecast == pytest.approx(0.45)


def test_no_outcomes_no_summary_and_one_pair_no_worst() -> None:
    assert summarize([], 0, 10, 1) is None
    stats = summarize([_call("up", 0.6, 0.3)] * 3, 0, 50, min_samples=1)
    assert stats is not None and stats.ranking["pair"].best is not None and stats.ranking["pair"].worst is None
