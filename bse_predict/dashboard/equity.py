"""The equity of trading the live signals, per series, from what the board keeps: no state of its own.

Each kept live call with a signal (LONG or STRONG_BUY: long; SHORT or STRONG_SELL: short) and an outcome
for a target is one ±X% bracket trade, priced by the backtest's own functions
(:mod:`bse_predict.backtest.trading`: the exit price, the return, the round trip cost of
``signals.taker_fee_pct`` and ``slippage_pct``, the equity curve and the statistics):

- entry at the call's candle close (the prediction's ``close``);
- ``up`` or ``down``: exit at the touched barrier, or at the open of the candle that touched it (the one
  closing at the outcome's ``resolved_at``) when that candle opened beyond the barrier (a touching candle
  the board does not hold is taken to have opened inside: the barrier);
- ``none``: exit at the close of the horizon's last candle (the newest kept candle at or before it, as
  the backtest's gap-filled grid has it). The outcome does not carry that price, so it comes from the
  board's candles (``history_hours + chart_extra_hours`` of them, which reach the horizon of every kept
  call); until that candle is on the board the trade is counted as waiting, not booked.

Every signalled call trades (no limit on open positions: the backtest's ``max_open_per_symbol_target``
would skip calls that come while one is open; the live signals are all shown). Calls are those the board
keeps (the last ``history_hours`` per symbol), so the equity covers at most that span.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from configs.settings import TIMEFRAME_MS
from bse_predict.backtest.trading import (Trade, TradeStats, equity_curve, exit_reason, side_of, touch_exit_price,
                                          trade_return_pct, trade_stats)
from bse_predict.candles.schema import Outcome, Prediction
from bse_predict.dashboard.board import SymbolState
from bse_predict.dashboard.periods import HOUR_MS
from bse_predict.dashboard.track_record import SeriesKey
from bse_predict.labels.first_touch import CLASS_NAMES, NONE
from bse_predict.serving.signals import target_pct

__all__ = ["SeriesEquity", "CandlePrices", "call_trade", "series_trades", "series_equity"]


class SeriesEquity(NamedTuple):
    stats: TradeStats  # the backtest's statistics of the trades
    curve: tuple[tuple[int, float], ...]  # (exit time ms, cumulative net %) per trade, in exit order
    waiting: int  # signalled calls answered "none" whose horizon close is not on the board yet


class CandlePrices:
    """One symbol's kept closed candles, looked up by open time."""

    def __init__(self, state: SymbolState) -> None:
        self._open_times = np.array([c.open_time for c in state.candles], dtype=np.int64)
        self._closes = [c.close for c in state.candles]
        self._opens = {c.open_time: c.open for c in state.candles}

    def open_at(self, open_time: int) -> float:
        """The open of the candle opening at ``open_time``; NaN when it is not kept."""
        return self._opens.get(open_time, float("nan"))

    def close_by(self, open_time: int) -> float | None:
        """The close of the newest candle opening at or before ``open_time`` (a gap holds the previous
        close); None while no kept candle opens at or after it (the answer could still change)."""
        if not len(self._open_times) or self._open_times[-1] < open_time or self._open_times[0] > open_time:
            return None
        return self._closes[int(np.searchsorted(self._open_times, open_time, side="right")) - 1]


def call_trade(call: Prediction, outcome: Outcome, prices: CandlePrices, cost_pct: float) -> Trade | None:
    """The trade of one call's signal for ``outcome.target``; None when the signal is NEUTRAL or when
    ``none``'s horizon close is not on the board (yet)."""
    part = call.targets.get(outcome.target)
    side = 0 if part is None else side_of(part.signal)
    if side == 0:
        return None
    step_ms = TIMEFRAME_MS[call.timeframe]
    label = CLASS_NAMES.index(outcome.outcome)
    entry, frac = call.close, target_pct(outcome.target) / 100.0
    if label == NONE:
        price = prices.close_by(call.open_time + call.horizon_hours * HOUR_MS)  # the horizon's last candle
        if price is None:
            return None
    else:
        price = touch_exit_price(label, entry, frac, prices.open_at(outcome.resolved_at - step_ms))
    gross, net = trade_return_pct(side, entry, price, cost_pct)
    entry_ms = call.open_time + step_ms
    return Trade(call.symbol, outcome.target, side, entry_ms, outcome.resolved_at, entry, price,
                 exit_reason(label, side), gross, net, (outcome.resolved_at - entry_ms) / HOUR_MS)


def series_trades(symbols: Iterable[SymbolState], start_ms: int | None, end_ms: int | None,
                  cost_pct: float) -> tuple[dict[SeriesKey, list[Trade]], dict[SeriesKey, int]]:
    """The trades of the kept live calls whose candle opened in [``start_ms``, ``end_ms``) (None: open),
    by series; beside them, per series, the signalled calls still waiting for their horizon close."""
    trades: dict[SeriesKey, list[Trade]] = {}
    waiting: dict[SeriesKey, int] = {}
    for state in symbols:
        prices = None
        for kept in state.calls:
            call = kept.prediction
            if (start_ms is not None and call.open_time < start_ms) or (end_ms is not None and call.open_time >= end_ms):
                continue
            for target, outcome in kept.outcomes.items():
                prices = prices or CandlePrices(state)
                key = SeriesKey(call.model.version, call.variant, target, "live")
                trade = call_trade(call, outcome, prices, cost_pct)
                if trade is not None:
                    trades.setdefault(key, []).append(trade)
                elif side_of(call.targets[target].signal) != 0:
                    waiting[key] = waiting.get(key, 0) + 1
    return trades, waiting


def series_equity(symbols: Iterable[SymbolState], start_ms: int | None, end_ms: int | None,
                  cost_pct: float) -> Mapping[SeriesKey, SeriesEquity]:
    """Per live series with a trade or a waiting call: the backtest's statistics and equity curve."""
    trades, waiting = series_trades(symbols, start_ms, end_ms, cost_pct)
    result = {}
    for key in sorted(trades.keys() | waiting.keys()):
        mine = trades.get(key, [])
        times, cumulative = equity_curve(mine)
        first = min((t.entry_time_ms for t in mine), default=0)
        last = max((t.exit_time_ms for t in mine), default=0)
        stats = trade_stats(mine, target_pct(key.target), cost_pct, first, last, 0.0)
        result[key] = SeriesEquity(stats, tuple(zip(times.tolist(), cumulative.tolist(), strict=True)),
                                   waiting.get(key, 0))
    return result
