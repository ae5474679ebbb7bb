"""The equity of trading the live signals, per series (version, arm, target), in sums per candle hour.

Each live call with a signal (LONG or STRONG_BUY: long; SHORT or STRONG_SELL: short) and an outcome for a
target is one ±X% bracket trade, priced by the backtest's own functions (:mod:`bse_predict.backtest.trading`:
the exit price, the exit reason, the return less the round trip cost ``signals.round_trip_cost_pct``):

- entry at the call's candle close (the prediction's ``close``);
- ``up`` or ``down``: exit at the touched barrier, or at the open of the candle that touched it (the one
  closing at the outcome's ``resolved_at``) when that candle opened beyond the barrier;
- ``none``: exit at the close of the horizon's last candle, or of the newest candle before it when it is
  missing (the backtest's gap-filled grid holds the previous close there).

The outcome does not carry those prices: they come from the board's candles. A trade is priced once the
board holds a candle opening at or after the one it needs (``resolved_at`` − one candle); until then it
waits (:meth:`Board.add_candle <bse_predict.dashboard.board.Board.add_candle>` prices it). A needed
candle the board left out (it came after a newer one) counts as opened inside the barrier.

Every signalled call trades (no limit on open positions: the backtest's ``max_open_per_symbol_target``
would skip calls that come while one is open). A trade adds to the sums of its call's candle hour: counts,
the net return, and the net return by exit time. :class:`EquityRecord` keeps ``keep_hours`` such hours
per series (a fixed set of fields and at most horizon + 1 exit times each); a period is a sum of hours,
its curve the cumulative net return by exit time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from configs.settings import TIMEFRAME_MS
from bse_predict.backtest.trading import (Trade, break_even_hit_rate, exit_reason, max_drawdown, side_of,
                                          touch_exit_price, trade_return_pct)
from bse_predict.candles.schema import Candle, Outcome, Prediction
from bse_predict.dashboard.periods import HOUR_MS
from bse_predict.labels.first_touch import CLASS_NAMES, NONE
from bse_predict.monitoring.live_scores import add_fields
from bse_predict.serving.signals import target_pct

__all__ = ["SeriesEquity", "EquityKey", "needed_candle_ms", "call_trade", "EquityRecord"]


class EquityKey(NamedTuple):
    version: str
    variant: str  # the A/B arm
    target: str


class SeriesEquity(NamedTuple):
    trades: int
    long: int
    short: int
    take_profits: int
    stops: int
    hit_rate: float | None  # take profits / (take profits + stops), as the backtest's
    break_even_hit_rate: float
    total_net_pct: float
    mean_net_pct: float | None
    max_drawdown_pct: float
    curve: tuple[tuple[int, float], ...]  # (exit time ms, cumulative net %), one point per exit time


def needed_candle_ms(call: Prediction, outcome: Outcome) -> int:
    """The open time of the candle a trade's price needs: the one that touched, or the horizon's last."""
    return outcome.resolved_at - TIMEFRAME_MS[call.timeframe]


def _newest_at_or_before(candles: Sequence[Candle], open_time_ms: int) -> Candle | None:
    at = bisect.bisect_right(candles, open_time_ms, key=lambda c: c.open_time)
    return candles[at - 1] if at else None


def call_trade(call: Prediction, outcome: Outcome, candles: Sequence[Candle], cost_pct: float) -> Trade | None:
    """The trade of ``call``'s signal for ``outcome.target`` on ``candles`` (closed, in open-time order,
    reaching :func:`needed_candle_ms`); None for a NEUTRAL signal, or when no candle at or before the
    needed one is kept (a ``none`` cannot be priced)."""
    part = call.targets.get(outcome.target)
    side = 0 if part is None else side_of(part.signal)
    if side == 0:
        return None
    needed_ms = needed_candle_ms(call, outcome)
    found = _newest_at_or_before(candles, needed_ms)
    label = CLASS_NAMES.index(outcome.outcome)
    entry = call.close
    if label == NONE:
        if found is None:
            return None
        price = found.close
    else:
        touch_open = found.open if found is not None and found.open_time == needed_ms else float("nan")
        price = touch_exit_price(label, entry, target_pct(outcome.target) / 100.0, touch_open)
    gross, net = trade_return_pct(side, entry, price, cost_pct)
    entry_ms = call.open_time + TIMEFRAME_MS[call.timeframe]
    return Trade(call.symbol, outcome.target, side, entry_ms, outcome.resolved_at, entry, price,
                 exit_reason(label, side), gross, net, (outcome.resolved_at - entry_ms) / HOUR_MS)


class _Hour(NamedTuple):
    counts: dict[str, float]  # trades, long, short, take_profit, stop, horizon, net
    exits: dict[int, float]  # exit time ms -> net %


class EquityRecord:
    """Trade sums per series and candle hour, the last ``keep_hours`` hours up to the newest (see above)."""

    def __init__(self, keep_hours: int, cost_pct: float) -> None:
        self.keep_hours = keep_hours
        self.cost_pct = cost_pct
        self._newest_hour: int | None = None
        self._hours: dict[EquityKey, dict[int, _Hour]] = {}

    def add(self, key: EquityKey, call_open_time_ms: int, trade: Trade) -> None:
        hour = call_open_time_ms // HOUR_MS
        if self._newest_hour is None or hour > self._newest_hour:
            self._newest_hour = hour
            for hours in self._hours.values():
                for old in [h for h in hours if h <= hour - self.keep_hours]:
                    del hours[old]
        if hour <= self._newest_hour - self.keep_hours:
            return  # older than every hour kept
        kept = self._hours.setdefault(key, {}).setdefault(hour, _Hour({}, {}))
        kept.counts.update(add_fields([kept.counts, {
            "trades": 1.0, "long": float(trade.side == 1), "short": float(trade.side == -1),
            trade.exit_reason: 1.0, "net": trade.net_pct}]))
        kept.exits[trade.exit_time_ms] = kept.exits.get(trade.exit_time_ms, 0.0) + trade.net_pct

    def hour_count(self) -> int:
        return sum(len(hours) for hours in self._hours.values())

    def series(self, start_ms: int | None, end_ms: int | None) -> Mapping[EquityKey, SeriesEquity]:
        """Per series with a trade of a call whose candle opened in [``start_ms``, ``end_ms``) (None: open)."""
        result = {}
        for key in sorted(self._hours):
            picked = [kept for hour, kept in sorted(self._hours[key].items())
                      if (start_ms is None or hour * HOUR_MS >= start_ms) and (end_ms is None or hour * HOUR_MS < end_ms)]
            if picked:
                result[key] = _summary(key, picked, self.cost_pct)
        return result


def _summary(key: EquityKey, hours: Iterable[_Hour], cost_pct: float) -> SeriesEquity:
    hours = list(hours)
    counts = add_fields(h.counts for h in hours)
    exits = add_fields({str(t): v for t, v in h.exits.items()} for h in hours)
    times = sorted(int(t) for t in exits)
    cumulative = np.cumsum([exits[str(t)] for t in times])
    n, tp, sl = round(counts["trades"]), round(counts.get("take_profit", 0.0)), round(counts.get("stop", 0.0))
    return SeriesEquity(trades=n, long=round(counts.get("long", 0.0)), short=round(counts.get("short", 0.0)),
                        take_profits=tp, stops=sl, hit_rate=tp / (tp + sl) if tp + sl else None,
                        break_even_hit_rate=break_even_hit_rate(cost_pct, target_pct(key.target)),
                        total_net_pct=counts["net"], mean_net_pct=counts["net"] / n if n else None,
                        max_drawdown_pct=max_drawdown(cumulative),
                        curve=tuple(zip(times, cumulative.tolist(), strict=True)))
