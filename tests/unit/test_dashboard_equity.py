"""The track record's equity of the live signals equals the backtest's own trades over the same calls.

One symbol's candles (a random walk with jumps that gap through the barriers, and missing hours) are fed
to the board with calls of random signals and their outcomes, settled by the worker's own resolver core
(:mod:`bse_predict.monitoring.outcomes`). The backtest's :func:`~bse_predict.backtest.trading.simulate_brackets`
trades the same signalled calls on the gap-filled grid of the same candles; every trade, the equity curve
and the statistics must be the same."""

from __future__ import annotations

import random

import numpy as np
import pytest

from configs.dashboard import DashboardConfig
from bse_predict.backtest.trading import Trade, equity_curve, side_of, simulate_brackets, trade_stats
from bse_predict.candles.grid import fill_gaps
from bse_predict.candles.schema import Candle, ModelRef, Prediction, TargetPrediction, prediction_id
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.equity import series_equity, series_trades
from bse_predict.dashboard.track_record import SeriesKey
from bse_predict.monitoring.outcomes import pending_from_prediction, settle_in_order, to_outcome

HOUR_MS = 3_600_000
T0 = 1_735_689_600_000
HORIZON = 12
TARGETS = {"1%": 0.01, "2%": 0.02, "5%": 0.05}
COST_PCT = 0.14
SIGNALS = ("STRONG_BUY", "LONG", "NEUTRAL", "SHORT", "STRONG_SELL")


def _candles(rng: random.Random, hours: int, missing: set[int]) -> list[Candle]:
    candles, close = [], 100.0
    for hour in range(hours):
        jump = rng.choice([0.0] * 8 + [0.03, -0.03])  # a jump opens beyond the 1% and 2% barriers
        opened = close * (1 + jump + rng.gauss(0, 0.001))
        close = opened * (1 + rng.gauss(0, 0.006))
        high = max(opened, close) * (1 + abs(rng.gauss(0, 0.003)))
        low = min(opened, close) * (1 - abs(rng.gauss(0, 0.003)))
        if hour not in missing:
            candles.append(Candle(symbol="BTCUSDT", timeframe="1h", open_time=T0 + hour * HOUR_MS, open=opened,
                                  high=high, low=low, close=close, volume=1.0))
    return candles


def _call(rng: random.Random, candle: Candle, version: str) -> Prediction:
    targets = {}
    for target in TARGETS:
        signal = rng.choice(SIGNALS)
        direction = "up" if signal in ("STRONG_BUY", "LONG") or (signal == "NEUTRAL" and rng.random() < 0.5) else "down"
        targets[target] = TargetPrediction(p_up=0.4, p_down=0.3, p_none=0.3, direction=direction, confidence=0.57,
                                           signal=signal)
    return Prediction(id=prediction_id("BTCUSDT", "1h", candle.open_time), symbol="BTCUSDT", timeframe="1h",
                      open_time=candle.open_time, close=candle.close, horizon_hours=HORIZON, targets=targets,
                      model=ModelRef(name="rf", version=version), latency_ms=1.0)


def _filled(seed: int, hours: int = 260) -> tuple[Board, list[Candle], list[Prediction], set[tuple[int, str]]]:
    """The board after the candles, the calls of every candle and the outcomes the resolver settles, read in
    a shuffled order (the candles among themselves in order); also the (open time, target) of every settled outcome."""
    rng = random.Random(seed)
    candles = _candles(rng, hours, missing={40, 41, 97, 150, 151, 152})
    calls = [_call(rng, c, rng.choice(["v1", "v2"])) for c in candles]
    pending = [p for call in calls for p in pending_from_prediction(call, TARGETS, HORIZON, HOUR_MS, "live")]
    outcomes = [to_outcome(s) for s in settle_in_order(pending, [(c.open_time, [c.open, c.high, c.low, c.close,
                                                                                c.volume]) for c in candles])]
    board = Board(DashboardConfig(history_hours=hours, chart_extra_hours=HORIZON + 2))
    messages: list[tuple[str, object]] = [("candle", c) for c in candles] + [("call", c) for c in calls]
    messages += [("outcome", o) for o in outcomes]
    rng.shuffle(messages)
    in_order = iter(candles)  # the candles of a symbol come in order (one partition); the topics side by side
    messages = [("candle", next(in_order)) if kind == "candle" else (kind, m) for kind, m in messages]
    for kind, message in messages:
        {"candle": board.add_candle, "call": board.add_prediction, "outcome": board.add_outcome}[kind](message)
    return board, candles, calls, {(o.open_time, o.target) for o in outcomes}


def _backtest(candles: list[Candle], calls: list[Prediction], settled: set[tuple[int, str]],
              start_ms: int | None = None) -> dict[SeriesKey, list[Trade]]:
    """simulate_brackets on the gap-filled grid, per (version, target), every settled signalled call a trade."""
    grid = fill_gaps(np.array([c.open_time for c in candles], dtype=np.int64),
                     np.array([[c.open, c.high, c.low, c.close, c.volume] for c in candles]), HOUR_MS)
    result: dict[SeriesKey, list[Trade]] = {}
    for version in ("v1", "v2"):
        for target, frac in TARGETS.items():
            mine = [c for c in calls if c.model.version == version and (c.open_time, target) in settled
                    and (start_ms is None or c.open_time >= start_ms)]
            rows = np.searchsorted(grid.open_time_ms, [c.open_time for c in mine])
            sides = np.array([side_of(c.targets[target].signal) for c in mine])
            trades = simulate_brackets("BTCUSDT", target, frac * 100, grid.open_time_ms, grid.ohlcv, rows, sides,
                                       HORIZON, COST_PCT, HOUR_MS, max_open=len(mine) + 1)
            if trades:
                result[SeriesKey(version, "control", target, "live")] = trades
    return result


def _by_entry(trades: list[Trade]) -> list[Trade]:
    return sorted(trades, key=lambda t: t.entry_time_ms)


def _same_trades(mine: list[Trade], theirs: list[Trade]) -> None:
    assert len(mine) == len(theirs)
    for a, b in zip(_by_entry(mine), _by_entry(theirs), strict=True):
        assert (a.side, a.entry_time_ms, a.exit_time_ms, a.exit_reason, a.entry_price) == \
            (b.side, b.entry_time_ms, b.exit_time_ms, b.exit_reason, b.entry_price)
        assert a.exit_price == pytest.approx(b.exit_price, rel=1e-12)
        assert (a.gross_pct, a.net_pct, a.hours) == pytest.approx((b.gross_pct, b.net_pct, b.hours), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_equity_equals_the_backtests_trades_over_the_same_calls(seed: int) -> None:
    board, candles, calls, settled = _filled(seed)
    expected = _backtest(candles, calls, settled)
    reasons = {t.exit_reason for trades in expected.values() for t in trades}
    assert reasons == {"take_profit", "stop", "horizon"}
    gaps = [t for trades in expected.values() for t in trades if t.exit_reason in ("take_profit", "stop")
            and abs(abs(t.gross_pct) - float(t.target.rstrip("%"))) > 1e-9]
    assert gaps, "some trade must exit at a gap's open, not at its barrier"
    trades, waiting = series_trades(board.symbols.values(), None, None, COST_PCT)
    assert waiting == {}
    assert trades.keys() == expected.keys()
    for key, theirs in expected.items():
        _same_trades(trades[key], theirs)
    equity = series_equity(board.symbols.values(), None, None, COST_PCT)
    for key, theirs in expected.items():
        times, cumulative = equity_curve(theirs)
        assert [t for t, _ in equity[key].curve] == times.tolist()
        assert [v for _, v in equity[key].curve] == pytest.approx(cumulative.tolist(), rel=1e-9, abs=1e-9)
        stats = trade_stats(theirs, float(key.target.rstrip("%")), COST_PCT, 0, 0, 1.0)
        assert equity[key].stats.trades == stats.trades and equity[key].stats.take_profits == stats.take_profits
        assert equity[key].stats.total_net_pct == pytest.approx(stats.total_net_pct, rel=1e-9, abs=1e-9)
        assert equity[key].stats.total_net_pct == pytest.approx(sum(t.net_pct for t in theirs))


def test_a_period_trades_only_the_calls_of_its_candles() -> None:
    board, candles, calls, settled = _filled(4)
    start_ms = T0 + 200 * HOUR_MS
    expected = _backtest(candles, calls, settled, start_ms)
    trades, _ = series_trades(board.symbols.values(), start_ms, None, COST_PCT)
    assert trades.keys() == expected.keys()
    for key, theirs in expected.items():
        _same_trades(trades[key], theirs)
    assert series_trades(board.symbols.values(), start_ms, start_ms, COST_PCT) == ({}, {})


def test_a_none_waits_for_its_horizon_close_and_neutral_never_trades() -> None:
    candles = _candles(random.Random(5), 3, missing=set())
    calm = [c.model_copy(update={"open": 100.0, "high": 100.1, "low": 99.9, "close": 100.0}) for c in candles]
    call = _call(random.Random(6), calm[0], "v1")
    parts = {t: p.model_copy(update={"signal": "LONG" if t == "1%" else "NEUTRAL"}) for t, p in call.targets.items()}
    call = call.model_copy(update={"targets": parts})
    board = Board(DashboardConfig())
    board.add_candle(calm[0])
    board.add_prediction(call)
    for target, frac in TARGETS.items():
        (item,) = pending_from_prediction(call, {target: frac}, HORIZON, HOUR_MS, "live")
        (settlement,) = settle_in_order([item], [(calm[0].open_time + HORIZON * HOUR_MS, [100.0, 100.1, 99.9, 100.0, 1.0])])
        board.add_outcome(to_outcome(settlement))  # none: the horizon's candle, not on the board yet
    key = SeriesKey("v1", "control", "1%", "live")
    assert series_trades(board.symbols.values(), None, None, COST_PCT) == ({}, {key: 1})
    board.add_candle(calm[1].model_copy(update={"open_time": calm[0].open_time + HORIZON * HOUR_MS, "close": 100.05}))
    trades, waiting = series_trades(board.symbols.values(), None, None, COST_PCT)
    assert waiting == {} and list(trades) == [key]
    (trade,) = trades[key]
    assert trade.exit_reason == "horizon" and trade.exit_price == 100.05
    assert trade.net_pct == pytest.approx(0.05 - COST_PCT)
