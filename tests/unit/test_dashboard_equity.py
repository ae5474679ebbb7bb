"""The track record's equity of the live signals equals the backtest's own trades over the same calls.

One symbol's candles (a random walk with jumps that gap through the barriers, and missing hours) are fed
to the board with calls of random signals and their outcomes, settled by the worker's own resolver core
(:mod:`bse_predict.monitoring.outcomes`), in a shuffled order. The backtest's
:func:`~bse_predict.backtest.trading.simulate_brackets` trades the same signalled calls on the gap-filled grid
of the same candles: every trade priced from an outcome is the backtest's, and the board's hour sums give the
same counts, total and equity curve (at each exit time) over all hours and over a period."""

from __future__ import annotations

import random

import numpy as np
import pytest

from configs.dashboard import DashboardConfig
from bse_predict.backtest.trading import Trade, equity_curve, max_drawdown, side_of, simulate_brackets
from bse_predict.candles.grid import fill_gaps
from bse_predict.candles.schema import Candle, ModelRef, Outcome, Prediction, TargetPrediction, prediction_id
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.equity import EquityKey, SeriesEquity, call_trade
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


def _filled(seed: int, hours: int = 260) -> tuple[Board, list[Candle], list[Prediction], list[Outcome]]:
    """The board after the candles, the calls of every candle and the outcomes the resolver settles, read in
    a shuffled order (the candles among themselves in order); also the candles, the calls and the outcomes."""
    rng = random.Random(seed)
    candles = _candles(rng, hours, missing={40, 41, 97, 150, 151, 152})
    calls = [_call(rng, c, rng.choice(["v1", "v2"])) for c in candles]
    pending = [p for call in calls for p in pending_from_prediction(call, TARGETS, HORIZON, HOUR_MS, "live")]
    outcomes = [to_outcome(s) for s in settle_in_order(pending, [(c.open_time, [c.open, c.high, c.low, c.close,
                                                                                c.volume]) for c in candles])]
    board = Board(DashboardConfig(lookback_hours=hours, history_hours=hours, chart_extra_hours=HORIZON + 2), COST_PCT)
    messages: list[tuple[str, object]] = [("candle", c) for c in candles] + [("call", c) for c in calls]
    messages += [("outcome", o) for o in outcomes]
    rng.shuffle(messages)
    in_order = iter(candles)  # the candles of a symbol come in order (one partition); the topics side by side
    messages = [("candle", next(in_order)) if kind == "candle" else (kind, m) for kind, m in messages]
    for kind, message in messages:
        {"candle": board.add_candle, "call": board.add_prediction, "outcome": board.add_outcome}[kind](message)
    return board, candles, calls, outcomes


def _backtest(candles: list[Candle], calls: list[Prediction], outcomes: list[Outcome],
              start_ms: int | None = None) -> dict[EquityKey, list[Trade]]:
    """simulate_brackets on the gap-filled grid, per (version, target), every settled signalled call a trade."""
    grid = fill_gaps(np.array([c.open_time for c in candles], dtype=np.int64),
                     np.array([[c.open, c.high, c.low, c.close, c.volume] for c in candles]), HOUR_MS)
    settled = {(o.open_time, o.target) for o in outcomes}
    result: dict[EquityKey, list[Trade]] = {}
    for version in ("v1", "v2"):
        for target, frac in TARGETS.items():
            mine = [c for c in calls if c.model.version == version and (c.open_time, target) in settled
                    and (start_ms is None or c.open_time >= start_ms)]
            rows = np.searchsorted(grid.open_time_ms, [c.open_time for c in mine])
            sides = np.array([side_of(c.targets[target].signal) for c in mine])
            trades = simulate_brackets("BTCUSDT", target, frac * 100, grid.open_time_ms, grid.ohlcv, rows, sides,
                                       HORIZON, COST_PCT, HOUR_MS, max_open=len(mine) + 1)
            if trades:
                result[EquityKey(version, "control", target)] = trades
    return result


def _same_trade(mine: Trade, theirs: Trade) -> None:
    assert (mine.side, mine.entry_time_ms, mine.exit_time_ms, mine.exit_reason, mine.entry_price) == \
        (theirs.side, theirs.entry_time_ms, theirs.exit_time_ms, theirs.exit_reason, theirs.entry_price)
    assert mine.exit_price == pytest.approx(theirs.exit_price, rel=1e-12)
    assert (mine.gross_pct, mine.net_pct, mine.hours) == pytest.approx((theirs.gross_pct, theirs.net_pct, theirs.hours),
                                                                       rel=1e-9, abs=1e-12)


def _same_sums(shown: SeriesEquity, theirs: list[Trade]) -> None:
    times, cumulative = equity_curve(theirs)
    at_each_exit = dict(zip(times.tolist(), cumulative.tolist(), strict=True))  # the last of each exit time
    assert (shown.trades, shown.long, shown.short) == (len(theirs), sum(t.side == 1 for t in theirs),
                                                       sum(t.side == -1 for t in theirs))
    assert (shown.take_profits, shown.stops) == (sum(t.exit_reason == "take_profit" for t in theirs),
                                                 sum(t.exit_reason == "stop" for t in theirs))
    assert shown.total_net_pct == pytest.approx(sum(t.net_pct for t in theirs), rel=1e-9, abs=1e-9)
    assert [t for t, _ in shown.curve] == list(at_each_exit)
    assert [v for _, v in shown.curve] == pytest.approx(list(at_each_exit.values()), rel=1e-9, abs=1e-9)
    assert shown.max_drawdown_pct == pytest.approx(max_drawdown(np.array(list(at_each_exit.values()))), abs=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_trade_is_the_backtests_trade_of_the_same_call(seed: int) -> None:
    _, candles, calls, outcomes = _filled(seed)
    expected = _backtest(candles, calls, outcomes)
    reasons = {t.exit_reason for trades in expected.values() for t in trades}
    assert reasons == {"take_profit", "stop", "horizon"}
    gaps = [t for trades in expected.values() for t in trades if t.exit_reason in ("take_profit", "stop")
            and abs(abs(t.gross_pct) - float(t.target.rstrip("%"))) > 1e-9]
    assert gaps, "some trade must exit at a gap's open, not at its barrier"
    by_time = {c.open_time: c for c in calls}
    for key, theirs in expected.items():
        mine = [call_trade(by_time[o.open_time], o, candles, COST_PCT) for o in outcomes
                if o.target == key.target and o.model.version == key.version
                and side_of(by_time[o.open_time].targets[o.target].signal) != 0]
        assert len(mine) == len(theirs)
        for a, b in zip(sorted(mine, key=lambda t: t.entry_time_ms), theirs, strict=True):
            _same_trade(a, b)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_boards_equity_sums_equal_the_backtest_over_the_same_calls(seed: int) -> None:
    board, candles, calls, outcomes = _filled(seed)
    expected = _backtest(candles, calls, outcomes)
    assert board.waiting_trades(None, None) == {}
    shown = board.equity.series(None, None)
    assert shown.keys() == expected.keys()
    for key, theirs in expected.items():
        _same_sums(shown[key], theirs)


def test_a_period_sums_only_the_calls_of_its_candles() -> None:
    board, candles, calls, outcomes = _filled(4)
    start_ms = T0 + 200 * HOUR_MS
    expected = _backtest(candles, calls, outcomes, start_ms)
    shown = board.equity.series(start_ms, None)
    assert shown.keys() == expected.keys()
    for key, theirs in expected.items():
        _same_sums(shown[key], theirs)
    assert board.equity.series(start_ms, start_ms) == {}


def test_hours_past_keep_hours_are_dropped() -> None:
    board, *_ = _filled(5)
    assert board.equity.hour_count() <= len(board.equity.series(None, None)) * board.config.lookback_hours
    small = Board(DashboardConfig(lookback_hours=24, history_hours=260, chart_extra_hours=HORIZON + 2), COST_PCT)
    _, candles, calls, outcomes = _filled(5)
    for message in [*candles, *calls, *outcomes]:
        {Candle: small.add_candle, Prediction: small.add_prediction, Outcome: small.add_outcome}[type(message)](message)
    series = small.equity.series(None, None)
    assert small.equity.hour_count() <= 24 * len(series)
    assert min(t for s in series.values() for t, _ in s.curve) > candles[-1].open_time - (24 + HORIZON + 1) * HOUR_MS


def test_a_trade_waits_for_the_candle_that_prices_it_and_neutral_never_trades() -> None:
    candles = _candles(random.Random(5), 3, missing=set())
    calm = [c.model_copy(update={"open": 100.0, "high": 100.1, "low": 99.9, "close": 100.0}) for c in candles]
    call = _call(random.Random(6), calm[0], "v1")
    parts = {t: p.model_copy(update={"signal": "LONG" if t == "1%" else "NEUTRAL"}) for t, p in call.targets.items()}
    call = call.model_copy(update={"targets": parts})
    board = Board(DashboardConfig(), COST_PCT)
    board.add_candle(calm[0])
    board.add_prediction(call)
    for target, frac in TARGETS.items():
        (item,) = pending_from_prediction(call, {target: frac}, HORIZON, HOUR_MS, "live")
        (settlement,) = settle_in_order([item], [(calm[0].open_time + HORIZON * HOUR_MS, [100.0, 100.1, 99.9, 100.0, 1.0])])
        board.add_outcome(to_outcome(settlement))  # none: the horizon's candle, not on the board yet
    key = EquityKey("v1", "control", "1%")
    assert board.waiting_trades(None, None) == {key: 1} and board.equity.series(None, None) == {}
    revision = board.revision
    board.add_candle(calm[1].model_copy(update={"open_time": calm[0].open_time + HORIZON * HOUR_MS, "close": 100.05}))
    assert board.revision > revision  # the track record shows it: its live section is sent again
    assert board.waiting_trades(None, None) == {}
    (shown,) = board.equity.series(None, None).values()
    assert (shown.trades, shown.long) == (1, 1)
    assert shown.total_net_pct == pytest.approx(0.05 - COST_PCT)
