"""Signals traded as ±X% brackets, and what the trades are worth: pure, no IO, no clock.

A LONG or STRONG_BUY (SHORT or STRONG_SELL) at candle t enters at t's close.
The bracket exits with the rule of :mod:`bse_predict.labels.first_touch` (the same first-touch
scan, the same tie-break): take profit at +X% (−X% for a short), stop at the
other barrier, else at the close of the horizon's last candle. A candle that
opens beyond a barrier fills at its open (a gap is not a fill at the barrier).
When the data ends first, the trade is marked at the last close. Costs are
charged per round trip (2 × (taker fee + slippage), in percent of the entry).
At most ``max_open`` brackets per symbol and target are open at once; a signal
while they are is skipped.

Statistics: hit rate (take profits over take profits and stops) beside the
break-even hit rate 0.5 + cost / 2X, exposure (the share of symbol-hours in a
trade), and the Sharpe ratio of daily P&L (zero days included, √365 per year)
with Lo's (2002) standard error for i.i.d. returns, √((1 + SR²/2) / T).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.candles.files import CandleSeries
from bse_predict.candles.grid import fill_gaps
from bse_predict.labels.first_touch import DOWN, UNKNOWN, UP, first_touch, time_to_touch
from bse_predict.candles.schema import Prediction
from bse_predict.serving.signals import target_pct

__all__ = ["Trade", "TradeStats", "simulate_brackets", "trade_stats", "daily_pnl", "equity_curve",
           "side_of", "exit_reason", "touch_exit_price", "trade_return_pct", "break_even_hit_rate", "max_drawdown",
           "trades_from_predictions", "DAY_MS"]

DAY_MS = 86_400_000
_LONG = {"STRONG_BUY", "LONG"}
_SHORT = {"STRONG_SELL", "SHORT"}


def side_of(signal: str) -> int:
    """+1 long, −1 short, 0 no trade."""
    return 1 if signal in _LONG else -1 if signal in _SHORT else 0


def touch_exit_price(label: int, entry: float, frac: float, touch_open: float) -> float:
    """Where a ±``frac`` bracket on ``entry`` exits when the first-touch ``label`` (UP or DOWN) says a
    barrier was touched: at that barrier, or at the open of the candle that touched it (``touch_open``)
    when that candle opened beyond it (a gap is not a fill at the barrier)."""
    barrier = entry * (1 + frac) if label == UP else entry * (1 - frac)
    beyond = touch_open >= barrier if label == UP else touch_open <= barrier
    return touch_open if beyond else barrier


def exit_reason(label: int, side: int) -> str:
    """take_profit (the touched barrier is the side's), stop (the other one), horizon (none), end_of_data."""
    if label in (UP, DOWN):
        return "take_profit" if (label == UP) == (side == 1) else "stop"
    return "horizon" if label != UNKNOWN else "end_of_data"


def trade_return_pct(side: int, entry: float, exit_price: float, cost_pct: float) -> tuple[float, float]:
    """(gross, net) return in percent of the entry of a ``side`` (+1 long, −1 short) position from
    ``entry`` to ``exit_price``; net is gross less the round trip cost ``cost_pct``."""
    gross = side * (exit_price / entry - 1.0) * 100.0
    return gross, gross - cost_pct


@dataclass(frozen=True)
class Trade:
    symbol: str
    target: str
    side: int
    entry_time_ms: int
    exit_time_ms: int
    """Close time of the candle the trade ended in."""
    entry_price: float
    exit_price: float
    exit_reason: str  # take_profit | stop | horizon | end_of_data
    gross_pct: float
    net_pct: float
    hours: float


def simulate_brackets(symbol: str, target: str, bracket_pct: float, open_time_ms: np.ndarray, ohlcv: np.ndarray,
                      signal_rows: np.ndarray, sides: np.ndarray, horizon_candles: int, cost_pct: float,
                      step_ms: int, max_open: int = 1) -> list[Trade]:
    """Trades of one symbol and target over its gap-filled grid (``open_time_ms`` [T], ``ohlcv`` [T, 5]).

    ``signal_rows`` are grid rows with a signal, in time order, ``sides`` their +1/−1."""
    frac = bracket_pct / 100.0
    n = len(open_time_ms)
    trades: list[Trade] = []
    open_until: list[int] = []  # exit rows of the open trades
    for row, side in zip(np.asarray(signal_rows, dtype=np.int64).tolist(), np.asarray(sides).tolist(), strict=True):
        open_until = [e for e in open_until if e > row]
        if side == 0 or len(open_until) >= max_open or row >= n - 1:
            continue
        entry = float(ohlcv[row, 3])
        future = np.full((1, horizon_candles, 5), np.nan)
        valid = np.zeros((1, horizon_candles), dtype=bool)
        ahead = ohlcv[row + 1: row + 1 + horizon_candles]
        future[0, : len(ahead)] = ahead
        valid[0, : len(ahead)] = True
        label = int(first_touch(np.array([entry]), future, valid, frac)[0])
        if label in (UP, DOWN):
            exit_row = row + int(time_to_touch(np.array([entry]), future, valid, frac)[0])
            price = touch_exit_price(label, entry, frac, float(ohlcv[exit_row, 0]))
        else:
            exit_row = min(row + horizon_candles, n - 1)
            price = float(ohlcv[exit_row, 3])
        gross, net = trade_return_pct(int(side), entry, price, cost_pct)
        trades.append(Trade(symbol, target, int(side), int(open_time_ms[row]) + step_ms,
                            int(open_time_ms[exit_row]) + step_ms, entry, price, exit_reason(label, int(side)), gross,
                            net, (exit_row - row) * step_ms / 3_600_000))
        open_until.append(exit_row)
    return trades


@dataclass(frozen=True)
class TradeStats:
    trades: int
    long: int
    short: int
    take_profits: int
    stops: int
    horizon_exits: int
    hit_rate: float | None
    """Take profits / (take profits + stops)."""
    break_even_hit_rate: float
    win_rate: float | None
    """Trades with a positive net return / trades."""
    mean_net_pct: float | None
    total_net_pct: float
    exposure: float
    sharpe_annual: float | None
    sharpe_se: float | None
    max_drawdown_pct: float


def daily_pnl(trades: Sequence[Trade], start_ms: int, end_ms: int) -> np.ndarray:
    """Net P&L in percent per UTC day from ``start_ms`` to ``end_ms``, each trade booked on its exit day."""
    days = max(1, int((end_ms - start_ms) // DAY_MS) + 1)
    pnl = np.zeros(days)
    for trade in trades:
        day = min(days - 1, max(0, int((trade.exit_time_ms - start_ms) // DAY_MS)))
        pnl[day] += trade.net_pct
    return pnl


def equity_curve(trades: Sequence[Trade]) -> tuple[np.ndarray, np.ndarray]:
    """(exit times ms, cumulative net percent) in exit order."""
    ordered = sorted(trades, key=lambda t: t.exit_time_ms)
    return (np.array([t.exit_time_ms for t in ordered], dtype=np.int64),
            np.cumsum([t.net_pct for t in ordered]) if ordered else np.zeros(0))


def break_even_hit_rate(cost_pct: float, bracket_pct: float) -> float:
    """The hit rate (take profits over take profits and stops) at which a ±``bracket_pct`` bracket paying
    ``cost_pct`` a round trip breaks even: 0.5 + cost / 2X."""
    return 0.5 + cost_pct / (2.0 * bracket_pct)


def max_drawdown(cumulative: np.ndarray) -> float:
    """The largest fall of a cumulative net return (percent) from its running peak, starting from 0."""
    if not len(cumulative):
        return 0.0
    peak = np.maximum.accumulate(np.r_[0.0, cumulative])
    return float(np.max(peak - np.r_[0.0, cumulative]))


def trade_stats(trades: Sequence[Trade], bracket_pct: float, cost_pct: float, start_ms: int, end_ms: int,
                symbol_hours: float) -> TradeStats:
    """Summary of one set of trades; ``symbol_hours`` is the time that could have been in a trade."""
    tp = sum(t.exit_reason == "take_profit" for t in trades)
    sl = sum(t.exit_reason == "stop" for t in trades)
    pnl = daily_pnl(trades, start_ms, end_ms)
    sharpe = se = None
    if len(pnl) > 1 and pnl.std(ddof=1) > 0:
        daily = pnl.mean() / pnl.std(ddof=1)
        sharpe = float(daily * np.sqrt(365.0))
        se = float(np.sqrt((1 + 0.5 * daily**2) / len(pnl)) * np.sqrt(365.0))
    net = np.array([t.net_pct for t in trades])
    return TradeStats(
        trades=len(trades), long=sum(t.side == 1 for t in trades), short=sum(t.side == -1 for t in trades),
        take_profits=tp, stops=sl, horizon_exits=sum(t.exit_reason in ("horizon", "end_of_data") for t in trades),
        hit_rate=tp / (tp + sl) if tp + sl else None,
        break_even_hit_rate=break_even_hit_rate(cost_pct, bracket_pct),
        win_rate=float((net > 0).mean()) if len(net) else None,
        mean_net_pct=float(net.mean()) if len(net) else None,
        total_net_pct=float(net.sum()),
        exposure=float(sum(t.hours for t in trades) / symbol_hours) if symbol_hours > 0 else 0.0,
        sharpe_annual=sharpe, sharpe_se=se,
        max_drawdown_pct=max_drawdown(equity_curve(trades)[1]),
    )


def trades_from_predictions(predictions: Sequence[Prediction], series: Sequence[CandleSeries],
                            horizon_candles: int, cost_pct: float, max_open: int = 1,
                            start_ms: int | None = None) -> dict[str, list[Trade]]:
    """Each target's trades (all symbols) from the signals of published predictions; only
    predictions of candles at or after ``start_ms`` trade."""
    by_symbol: dict[str, list[Prediction]] = {}
    for prediction in predictions:
        if start_ms is None or prediction.open_time >= start_ms:
            by_symbol.setdefault(prediction.symbol, []).append(prediction)
    out: dict[str, list[Trade]] = {}
    for one in series:
        mine = sorted(by_symbol.get(one.symbol, []), key=lambda p: p.open_time)
        if not mine:
            continue
        grid = fill_gaps(one.open_time_ms, one.ohlcv, one.step_ms)
        rows = np.searchsorted(grid.open_time_ms, [p.open_time for p in mine])
        for target in mine[0].targets:
            sides = np.array([side_of(p.targets[target].signal) for p in mine])
            out.setdefault(target, []).extend(simulate_brackets(
                one.symbol, target, target_pct(target), grid.open_time_ms, grid.ohlcv, rows, sides,
                horizon_candles, cost_pct, one.step_ms, max_open))
    return out
