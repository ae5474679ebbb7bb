"""Bracket trades by hand-computed candles: the label rule's exits, gaps, costs, one open position."""

from __future__ import annotations

import numpy as np
import pytest

from bse_predict.labels.first_touch import label_matrix
from bse_predict.backtest.trading import simulate_brackets, trade_stats

H = 3_600_000


def _candles(rows: list[tuple[float, float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    ohlcv = np.array([[o, h, l, c, 1.0] for o, h, l, c in rows])
    return np.arange(len(rows), dtype=np.int64) * H, ohlcv


def test_take_profit_stop_horizon_and_gap_fills() -> None:
    times, ohlcv = _candles([
        (100, 100, 100, 100),    # 0: entry long
        (100, 101, 99.5, 100.5),  # 1
        (100.5, 102.5, 100, 102),  # 2: touches +2 % (102): take profit at 102
        (102, 102, 102, 102),    # 3: entry short at 102
        (102, 102, 99, 99),      # 4: low 99 <= 99.96: a short's take profit at 99.96
        (99, 99, 99, 99),        # 5: entry long at 99
        (96, 97, 95, 96),        # 6: opens 96 below the stop 97.02: filled at the open
    ])
    trades = simulate_brackets("X", "2%", 2.0, times, ohlcv, np.array([0, 3, 5]), np.array([1, -1, 1]),
                               horizon_candles=3, cost_pct=0.1, step_ms=H)
    assert [t.exit_reason for t in trades] == ["take_profit", "take_profit", "stop"]
    assert trades[0].exit_price == pytest.approx(102.0) and trades[0].gross_pct == pytest.approx(2.0)
    assert trades[0].net_pct == pytest.approx(1.9) and trades[0].hours == 2
    assert trades[1].exit_price == pytest.approx(102 * 0.98) and trades[1].gross_pct == pytest.approx(2.0)
    assert trades[2].exit_price == 96 and trades[2].gross_pct == pytest.approx((96 / 99 - 1) * 100)
    assert trades[0].entry_time_ms == H and trades[0].exit_time_ms == 3 * H  # closes of candles 0 and 2


def test_exit_at_the_horizon_close_and_one_open_position_at_a_time() -> None:
    times, ohlcv = _candles([(100, 100, 100, 100)] + [(100, 100.5, 99.5, 100.4)] * 5)
    trades = simulate_brackets("X", "1%", 1.0, times, ohlcv, np.array([0, 1, 2, 3]), np.array([1, 1, -1, 1]),
                               horizon_candles=3, cost_pct=0.0, step_ms=H)
    # 0 opens until row 3; the signals at 1 and 2 are skipped; 3 opens again and is marked at the data end
    assert [(t.entry_time_ms // H - 1, t.exit_reason) for t in trades] == [(0, "horizon"), (3, "end_of_data")]
    assert trades[0].exit_price == 100.4 and trades[0].gross_pct == pytest.approx(0.4)
    two = simulate_brackets("X", "1%", 1.0, times, ohlcv, np.array([0, 1, 2, 3]), np.array([1, 1, -1, 1]),
                            horizon_candles=3, cost_pct=0.0, step_ms=H, max_open=2)
    assert len(two) == 3


def test_exits_agree_with_the_label_rule_on_real_candles(futures_series) -> None:
    """A long's take profit / stop / horizon is exactly the first-touch label up / down / none."""
    series = futures_series["ETHUSDT"].tail(1500)
    ohlcv = series.ohlcv
    labels = label_matrix(ohlcv, np.ones(len(ohlcv), dtype=bool), 0.02, 72)
    rows = np.arange(0, 1400, 7)
    trades = simulate_brackets("ETHUSDT", "2%", 2.0, series.open_time_ms, ohlcv, rows, np.ones(len(rows)),
                               horizon_candles=72, cost_pct=0.0, step_ms=H, max_open=len(rows))
    reason = {0: "take_profit", 1: "stop", 2: "horizon"}
    assert [t.exit_reason for t in trades] == [reason[int(labels[r])] for r in rows]


def test_stats_hit_rate_break_even_and_sharpe_uncertainty() -> None:
    times, ohlcv = _candles([(100, 100, 100, 100), (100, 102, 100, 101)] * 30)
    rows = np.arange(0, 60, 2)
    trades = simulate_brackets("X", "1%", 1.0, times, ohlcv, rows, np.ones(len(rows)), 1, 0.2, H)
    stats = trade_stats(trades, 1.0, 0.2, 0, 60 * H, symbol_hours=60)
    assert stats.trades == 30 and stats.hit_rate == 1.0 and stats.break_even_hit_rate == pytest.approx(0.6)
    assert stats.total_net_pct == pytest.approx(30 * 0.8) and stats.exposure == pytest.approx(0.5)
    assert stats.max_drawdown_pct == 0.0 and stats.sharpe_annual is not None and stats.sharpe_se > 0
