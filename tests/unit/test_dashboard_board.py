"""The dashboard's in-memory model: bounded, newest call wins, outcomes join their calls, and the track
record equals the formulas computed here by hand from the same messages."""

from __future__ import annotations

import math
import random

import pytest

from configs.dashboard import DashboardConfig
from bse_predict.candles.schema import Candle, Outcome, Prediction, prediction_id
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.track_record import SeriesKey

HOUR_MS = 3_600_000
T0 = 1_735_689_600_000
COST_PCT = 0.14


def prediction(symbol: str, hour: int, p_up: float = 0.5, p_down: float = 0.3, version: str = "v1") -> Prediction:
    target = {"p_up": p_up, "p_down": p_down, "p_none": round(1 - p_up - p_down, 12),
              "direction": "up" if p_up >= p_down else "down", "confidence": max(p_up, p_down) / (p_up + p_down),
              "signal": "LONG" if p_up > p_down else "SHORT"}
    return Prediction.model_validate({
        "id": prediction_id(symbol, "1h", T0 + hour * HOUR_MS), "symbol": symbol, "timeframe": "1h",
        "open_time": T0 + hour * HOUR_MS, "close": 100.0 + hour, "horizon_hours": 72,
        "targets": {t: target for t in ("1%", "2%", "5%")}, "model": {"name": "rf", "version": version},
        "latency_ms": 1.0})


def outcome(call: Prediction, target: str, result: str, stream: str = "live") -> Outcome:
    p = call.targets[target]
    return Outcome(id=call.id, symbol=call.symbol, open_time=call.open_time, target=target, outcome=result,
                   resolved_at=call.open_time + 5 * HOUR_MS, model=call.model, p_up=p.p_up, p_down=p.p_down,
                   p_none=p.p_none, stream=stream)


def test_the_newest_call_wins_also_when_an_older_one_arrives_late() -> None:
    board = Board(DashboardConfig(), COST_PCT)
    board.add_prediction(prediction("BTCUSDT", 2, p_up=0.6))
    board.add_prediction(prediction("BTCUSDT", 1, p_up=0.2))
    state = board.symbols["BTCUSDT"]
    assert state.newest is not None and state.newest.open_time == T0 + 2 * HOUR_MS
    assert [c.prediction.open_time for c in state.calls] == [T0 + HOUR_MS, T0 + 2 * HOUR_MS]
    board.add_prediction(prediction("BTCUSDT", 3, p_up=0.1))
    assert state.newest.targets["1%"].p_up == 0.1


def test_a_replayed_prediction_keeps_the_first_and_its_outcome() -> None:
    board = Board(DashboardConfig(), COST_PCT)
    call = prediction("ETHUSDT", 0)
    board.add_prediction(call)
    board.add_outcome(outcome(call, "2%", "up"))
    board.add_prediction(prediction("ETHUSDT", 0, p_up=0.1))
    (kept,) = board.symbols["ETHUSDT"].calls
    assert kept.prediction == call and kept.outcomes["2%"].outcome == "up"


def test_memory_is_bounded_per_symbol_and_in_symbols() -> None:
    config = DashboardConfig(history_hours=5, chart_extra_hours=2, max_symbols=3, recent_events=4)
    board = Board(config, COST_PCT)
    for hour in range(20):
        board.add_prediction(prediction("BTCUSDT", hour))
        board.add_candle(Candle(symbol="BTCUSDT", timeframe="1h", open_time=T0 + hour * HOUR_MS, open=1.0, high=2.0,
                                low=0.5, close=1.5, volume=1.0))
        board.add_control_event({"status": "applied", "n": hour})
        board.add_dead_letter({"kind": "schema", "n": hour})
    state = board.symbols["BTCUSDT"]
    assert [c.prediction.open_time for c in state.calls] == [T0 + h * HOUR_MS for h in range(15, 20)]
    assert [c.open_time for c in state.candles] == [T0 + h * HOUR_MS for h in range(13, 20)]
    board.add_prediction(prediction("BTCUSDT", 3))  # older than every call kept
    assert len(state.calls) == 5 and state.calls[0].prediction.open_time == T0 + 15 * HOUR_MS
    assert len(board.control_events) == 4 and board.control_events[0]["n"] == 19
    assert len(board.dead_letters) == 4 and board.dead_letter_counts == {"schema": 20}
    for symbol in ("A", "B", "C"):
        board.add_prediction(prediction(symbol, 0))
    assert list(board.symbols) == ["A", "B", "C"]  # BTCUSDT, changed longest ago, dropped
    board.add_prediction(prediction("A", 1))
    board.add_prediction(prediction("D", 0))
    assert list(board.symbols) == ["C", "A", "D"]


def test_an_outcome_read_before_its_call_is_joined_when_the_call_comes() -> None:
    config = DashboardConfig(history_hours=3)
    board = Board(config, COST_PCT)
    calls = [prediction("BTCUSDT", hour) for hour in range(6)]
    board.add_outcome(outcome(calls[0], "2%", "up"))
    board.add_outcome(outcome(calls[0], "5%", "none"))
    board.add_outcome(outcome(calls[0], "1%", "down", stream="shadow"))  # not a live call's: not joined
    for call in calls[1:5]:  # four more calls waiting: past history_hours (3), the oldest waiting is dropped
        board.add_outcome(outcome(call, "2%", "down"))
    board.add_prediction(calls[0])
    board.add_prediction(calls[4])
    state = board.symbols["BTCUSDT"]
    assert {t: o.outcome for t, o in state.calls[0].outcomes.items()} == {}
    assert {t: o.outcome for t, o in state.calls[1].outcomes.items()} == {"2%": "down"}
    assert len(state.early) == 2
    board.add_prediction(calls[2])
    assert [c.prediction.open_time for c in state.calls] == [calls[h].open_time for h in (0, 2, 4)]
    assert state.calls[1].outcomes["2%"].outcome == "down" and len(state.early) == 1


def test_the_chart_keeps_closed_candles_only() -> None:
    board = Board(DashboardConfig(), COST_PCT)

    def candle(symbol: str, hour: int, close: float, closed: bool) -> Candle:
        return Candle(symbol=symbol, timeframe="1h", open_time=T0 + hour * HOUR_MS, open=1.0, high=9.0, low=0.5,
                      close=close, volume=1.0, closed=closed)

    board.add_candle(candle("BTCUSDT", 0, 1.5, True))
    board.add_candle(candle("BTCUSDT", 0, 7.0, False))  # an update of a closed candle: ignored
    board.add_candle(candle("BTCUSDT", 1, 2.0, False))  # the forming candle: not on the chart until it closes
    board.add_candle(candle("ETHUSDT", 0, 3.0, False))
    assert [(c.open_time, c.close) for c in board.symbols["BTCUSDT"].candles] == [(T0, 1.5)]
    assert "ETHUSDT" not in board.symbols
    board.add_candle(candle("BTCUSDT", 1, 2.5, True))
    assert [(c.open_time, c.close) for c in board.symbols["BTCUSDT"].candles] == [(T0, 1.5), (T0 + HOUR_MS, 2.5)]


def test_an_outcome_joins_its_call_and_a_repeat_counts_once() -> None:
    board = Board(DashboardConfig(), COST_PCT)
    first, second = prediction("SOLUSDT", 0), prediction("SOLUSDT", 1)
    board.add_prediction(first)
    board.add_prediction(second)
    revision = board.revision
    board.add_outcome(outcome(first, "1%", "down"))
    assert board.revision > revision
    revision = board.revision
    board.add_outcome(outcome(first, "1%", "down"))
    assert board.revision == revision  # a repeat changes nothing
    board.add_outcome(outcome(first, "1%", "down", stream="shadow"))
    assert board.revision > revision  # the track record changed: its live page is sent again
    calls = board.symbols["SOLUSDT"].calls
    assert calls[0].outcomes["1%"].outcome == "down" and calls[0].outcomes.keys() == {"1%"}
    assert calls[1].outcomes == {}
    records = board.track_record.records()
    assert records[SeriesKey("v1", "control", "1%", "live")].count == 1 and records[SeriesKey("v1", "control", "1%", "shadow")].count == 1


def test_the_track_record_equals_the_formulas_on_the_same_messages() -> None:
    rng = random.Random(7)
    board = Board(DashboardConfig(), COST_PCT)
    messages = []
    for hour in range(300):
        p_up = rng.uniform(0.05, 0.9)
        call = prediction("BTCUSDT", hour, p_up=round(p_up, 6), p_down=round(rng.uniform(0, 1 - p_up), 6),
                          version=rng.choice(["v1", "v2"]))
        board.add_prediction(call)
        for target in ("1%", "5%"):
            messages.append(outcome(call, target, rng.choice(["up", "down", "none", "none"])))
    for message in messages:
        board.add_outcome(message)
    records = board.track_record.records()
    assert {(k.version, k.target) for k in records} == {(v, t) for v in ("v1", "v2") for t in ("1%", "5%")}
    classes = ("up", "down", "none")
    for key, record in records.items():
        rows = [m for m in messages if (m.model.version, m.target) == (key.version, key.target)]
        n = len(rows)
        shares = [sum(m.outcome == c for m in rows) / n for c in classes]
        probabilities = [(m.p_up, m.p_down, m.p_none) for m in rows]
        truth = [classes.index(m.outcome) for m in rows]
        assert record.count == n
        assert record.hit_rate == pytest.approx(sum(max(range(3), key=p.__getitem__) == y
                                                    for p, y in zip(probabilities, truth)) / n)
        assert record.base_rate == pytest.approx(max(shares))
        assert record.log_loss == pytest.approx(sum(-math.log(max(p[y], 1e-12)) for p, y in zip(probabilities, truth)) / n)
        assert record.brier == pytest.approx(sum(sum((p[k] - (k == y)) ** 2 for k in range(3))
                                                 for p, y in zip(probabilities, truth)) / n)
        assert record.climatology_log_loss == pytest.approx(-sum(s * math.log(s) for s in shares if s > 0))
        assert record.climatology_brier == pytest.approx(sum(shares[y] * sum((shares[k] - (k == y)) ** 2
                                                                             for k in range(3)) for y in range(3)))


def test_shadow_calls_sit_beside_the_live_ones_with_their_outcomes_and_bounds() -> None:
    board = Board(DashboardConfig(history_hours=3), COST_PCT)
    live = [prediction("BTCUSDT", hour) for hour in range(5)]
    shadow = [prediction("BTCUSDT", hour, p_up=0.2, p_down=0.6, version="v2") for hour in range(5)]
    board.add_outcome(outcome(shadow[4], "2%", "down", stream="shadow"))  # before its shadow call: waits for it
    for call, shadow_call in zip(live, shadow):
        board.add_prediction(call)
        board.add_shadow_prediction(shadow_call)
    board.add_outcome(outcome(shadow[3], "2%", "up", stream="shadow"))
    board.add_outcome(outcome(live[3], "2%", "down"))
    state = board.symbols["BTCUSDT"]
    assert [c.prediction.open_time for c in state.shadow_calls] == [shadow[h].open_time for h in (2, 3, 4)]
    assert state.newest == live[4]  # a shadow call is never the symbol's call
    assert state.shadow_at(live[4].open_time).outcomes["2%"].outcome == "down"
    assert state.shadow_at(live[3].open_time).outcomes["2%"].outcome == "up"
    assert state.call_at(live[3].open_time).outcomes["2%"].outcome == "down"  # each stream joins its own calls
    assert state.shadow_at(live[0].open_time) is None and not state.shadow_early
    revision, changed = board.revision, state.changed_at
    board.add_shadow_prediction(shadow[4])  # a replay: nothing changes
    assert board.revision == revision
    board.add_shadow_prediction(prediction("BTCUSDT", 5, version="v2"))
    assert state.chart_at == board.revision and state.changed_at == changed  # the markets row did not change


def test_only_live_calls_trade_also_when_their_outcome_comes_first() -> None:
    board = Board(DashboardConfig(), COST_PCT)
    live, shadow = prediction("BTCUSDT", 0), prediction("BTCUSDT", 0, p_up=0.2, p_down=0.6, version="v2")
    board.add_outcome(outcome(live, "2%", "up"))  # before its call: priced when the call comes
    board.add_outcome(outcome(shadow, "2%", "down", stream="shadow"))
    board.add_prediction(live)
    board.add_shadow_prediction(shadow)
    board.add_outcome(outcome(shadow, "1%", "down", stream="shadow"))
    board.add_outcome(outcome(live, "1%", "up"))
    assert board.waiting_trades(None, None) == {("v1", "control", "2%"): 1, ("v1", "control", "1%"): 1}
    for hour in range(6):  # the outcome resolved at hour 5: the candle of hour 4 prices it
        board.add_candle(Candle(symbol="BTCUSDT", timeframe="1h", open_time=T0 + hour * HOUR_MS, open=100.0,
                                high=106.0, low=99.5, close=100.0 + hour, volume=1.0))
    assert board.waiting_trades(None, None) == {}
    assert set(board.equity.series(None, None)) == {("v1", "control", "1%"), ("v1", "control", "2%")}
    assert not board.symbols["BTCUSDT"].unpriced

def test_closed_candles_move_the_symbol_page_but_not_its_markets_row() -> None:
    board = Board(DashboardConfig(), COST_PCT)
    board.add_prediction(prediction("BTCUSDT", 0))
    state = board.symbols["BTCUSDT"]
    changed = state.changed_at

    def candle(hour: int, close: float, closed: bool = True) -> Candle:
        return Candle(symbol="BTCUSDT", timeframe="1h", open_time=T0 + hour * HOUR_MS, open=1.0, high=9.0, low=0.5,
                      close=close, volume=1.0, closed=closed)

    board.add_candle(candle(0, 1.5))
    assert state.chart_at == board.revision > changed == state.changed_at
    revision = board.revision
    board.add_candle(candle(1, 2.0, closed=False))
    board.add_candle(candle(0, 1.5))  # the same candle again
    assert board.revision == revision
    board.add_candle(candle(0, 1.6))  # corrected
    assert board.revision == revision + 1 and state.candles[0].close == 1.6


def test_breaker_changes_on_control_events_keep_the_newest_per_version_and_worker() -> None:
    board = Board(DashboardConfig(recent_events=2), COST_PCT)

    def change(version: str, status: str, worker: str, at: str, reason: str | None = None) -> dict:
        return {"status": "breaker", "command": "breaker", "version": version, "breaker": status, "worker": worker,
                "at": at, "reason": reason or f"{version} {status}"}

    board.add_control_event(change("v1", "open", "w1", "2026-01-01T00:00:00Z", "NaN output"))
    board.add_control_event(change("v1", "half_open", "w1", "2026-01-01T00:01:00Z"))
    board.add_control_event({"status": "applied", "command": "promote", "reason": "v1"})  # not a breaker's
    board.add_control_event(change("v1", "open", "w2", "2026-01-01T00:02:00Z", "slow"))
    assert [(r.version, r.worker, r.status, r.reason) for r in board.breakers.reports()] == [
        ("v1", "w1", "half_open", None), ("v1", "w2", "open", "slow")]
    board.add_control_event(change("v2", "open", "w1", "2026-01-01T00:03:00Z", "error"))
    assert [(r.version, r.worker) for r in board.breakers.reports()] == [("v1", "w2"), ("v2", "w1")]  # bounded
    assert len(board.control_events) == 2
