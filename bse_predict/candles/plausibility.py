"""Plausibility of a well-formed candle: bounds that real markets never reach.

A candle can be valid JSON with consistent OHLC and still be absurd: a price
of 1e308, a 10,000-fold wick, a volume of 2**70, a close ten times the
previous one. Each such rule has its own dead-letter ``kind``; the bounds are
``candles.*`` settings whose defaults sit far outside every candle of
``../shared/data`` (the measured extremes are in ``configs/default.yaml`` and
docs/candles.md).

:func:`check_bounds` needs the candle alone (``parse_candle`` calls it);
:func:`price_jump_refusals` needs the symbol's last close, which the stream
reads from its window store and passes in. Both are pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from configs.settings import CandleRules
from bse_predict.errors import InvalidCandle

if TYPE_CHECKING:  # the schema imports this module
    from bse_predict.candles.schema import Candle

__all__ = ["LastClose", "check_bounds", "price_jump_refusals"]


class LastClose(NamedTuple):
    """The close of a symbol's newest closed candle and that candle's open time, and the close of the
    candle before it (None when unknown): a correction of the newest candle (same open time) is held
    to the candle before it, so repeated corrections cannot walk the reference past the bound."""

    open_time_ms: int
    close: float
    previous_close: float | None = None


def check_bounds(open_: float, high: float, low: float, close: float, volume: float, rules: CandleRules) -> None:
    """Raise :class:`InvalidCandle` when a price, the volume or the candle's range is beyond ``rules``.

    Expects prices already positive with ``low <= open, close <= high`` (the schema's rules), so
    bounding ``low`` and ``high`` bounds all four.
    """
    if low < rules.min_price:
        raise InvalidCandle("price_out_of_bounds", f"low {low:.6g} is under candles.min_price={rules.min_price:g}")
    if high > rules.max_price:
        raise InvalidCandle("price_out_of_bounds", f"high {high:.6g} is over candles.max_price={rules.max_price:g}")
    if volume > rules.max_volume:
        raise InvalidCandle("volume_out_of_bounds", f"volume {volume:.6g} is over candles.max_volume={rules.max_volume:g}")
    if high / low > rules.max_high_low_ratio:
        raise InvalidCandle("range_too_wide", f"high {high:.6g} is {high / low:.4g} times low {low:.6g}, over "
                                              f"candles.max_high_low_ratio={rules.max_high_low_ratio:g}")


def _jump(close: float, last: LastClose, rules: CandleRules) -> InvalidCandle | None:
    if not last.close > 0:  # nothing to compare with (the schema never stores such a close)
        return None
    ratio = max(close / last.close, last.close / close)
    if ratio <= rules.max_close_jump_ratio:
        return None
    return InvalidCandle("price_jump", f"close {close:.6g} is {ratio:.4g} times away from the symbol's last close "
                                       f"{last.close:.6g} (candle {last.open_time_ms}), over "
                                       f"candles.max_close_jump_ratio={rules.max_close_jump_ratio:g}")


def price_jump_refusals(candles: Sequence[Candle], last_closes: Mapping[tuple[str, str], LastClose],
                        rules: CandleRules) -> list[InvalidCandle | None]:
    """For each candle (arrival order), the refusal of its close against its symbol's last close, or None.

    ``last_closes`` holds, per ``(symbol, timeframe)``, the newest closed candle stored before these;
    a symbol without one is not checked until it has one. An accepted closed candle newer than the
    reference becomes the reference of the candles after it, so a batch is checked in sequence; a
    refused one never does, and in-progress candles (``closed=False``) are checked but never become
    a reference.
    """
    reference = dict(last_closes)
    refusals: list[InvalidCandle | None] = []
    for candle in candles:
        key = (candle.symbol, candle.timeframe)
        last = reference.get(key)
        refused = _jump(candle.close, _compared_with(candle, last), rules) if last is not None else None
        refusals.append(refused)
        if refused is None and candle.closed:
            if last is None or candle.open_time > last.open_time_ms:
                reference[key] = LastClose(candle.open_time, candle.close, None if last is None else last.close)
            elif candle.open_time == last.open_time_ms:  # a correction: the candle before stays the anchor
                anchor = last.close if last.previous_close is None else last.previous_close
                reference[key] = LastClose(candle.open_time, candle.close, anchor)
    return refusals


def _compared_with(candle: Candle, last: LastClose) -> LastClose:
    """A correction of the newest candle is compared with the candle before it, when known."""
    if candle.open_time == last.open_time_ms and last.previous_close is not None:
        return LastClose(last.open_time_ms, last.previous_close)
    return last
