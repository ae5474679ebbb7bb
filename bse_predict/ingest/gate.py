"""Which kline updates go to ``candles``: each closed candle once per open time, in-progress updates throttled,
and the exchange's own gaps found, never filled.

Per symbol the gate keeps a *floor*, the newest open time up to which every slot of the timeframe's grid is
done (produced, already in the topic at start, or confirmed missing at the exchange), and the set of closed
open times produced above it. A closed candle at or below the floor, or in that set, is a duplicate (a
second close, a late close after a backfill, an overlap of two connections) and is dropped. The floor
advances over the set as the holes below fill, so the set holds only what lies above a hole.

A hole is filled by a REST backfill, or confirmed as the exchange's own gap by :meth:`CandleGate.confirm_gaps`
once the exchange returned a later candle and the missing slot closed long enough ago: then it is reported
(:class:`Gap`) and the floor moves past it. Nothing is ever produced for a gap. A reported slot is remembered
(:meth:`CandleGate.reported_gaps`) until :meth:`CandleGate.forget_gaps`: if the exchange publishes that candle
after all (late, by a stream or a later REST answer), its first close passes, once, and
:meth:`CandleGate.is_reported_gap` told the caller beforehand that it corrects a report.

At a (re)start the floor may sit below candles already in the topic (``present`` of :meth:`CandleGate.start`,
the closed open times read back from the topic's tail over a lookback): those count as produced, and the holes
between them are backfilled like any other, so a crash that lost an older candle after a newer one was
acknowledged loses nothing.

In-progress updates (``closed: false``) of a candle not yet closed pass at most once per ``update_interval_s``
(the first update of a new candle passes at once); the time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Gap", "CandleGate"]


@dataclass(frozen=True)
class Gap:
    """Candles the exchange does not have: open times ``first_open_ms`` to ``last_open_ms``, both included."""

    symbol: str
    first_open_ms: int
    last_open_ms: int
    timeframe_ms: int

    @property
    def candles(self) -> int:
        return (self.last_open_ms - self.first_open_ms) // self.timeframe_ms + 1


@dataclass
class _Symbol:
    floor_ms: int
    floor_is_candle: bool
    above: set[int] = field(default_factory=set)
    gaps: set[int] = field(default_factory=set)
    update_open_ms: int | None = None
    update_at_s: float = float("-inf")


class CandleGate:
    def __init__(self, timeframe_ms: int, update_interval_s: float) -> None:
        self.timeframe_ms = timeframe_ms
        self.update_interval_s = update_interval_s
        self._symbols: dict[str, _Symbol] = {}

    def start(self, symbol: str, floor_ms: int, floor_is_candle: bool = True, present: Iterable[int] = ()) -> None:
        """Everything of ``symbol`` at or before ``floor_ms`` (an open time on the grid) is already in the topic,
        and so are the closed candles at ``present`` above it (off-grid ones are ignored); every other slot
        above the floor is still to be produced (or found to be the exchange's gap).
        ``floor_is_candle=False``: the floor is only where a backfill starts; slots before the first candle
        known (returned by the exchange or ``present``) are then history it never had (a later listing), not
        gaps."""
        state = _Symbol(floor_ms, floor_is_candle)
        state.above.update(t for t in present if t > floor_ms and not (t - floor_ms) % self.timeframe_ms)
        self._advance(state)
        state.floor_is_candle = state.floor_is_candle or state.floor_ms != floor_ms  # now a candle of the topic
        self._symbols[symbol] = state

    def knows(self, symbol: str) -> bool:
        return symbol in self._symbols

    def floor_ms(self, symbol: str) -> int:
        return self._symbols[symbol].floor_ms

    def has_hole(self, symbol: str) -> bool:
        """A closed candle was produced above a slot still missing: a backfill should look."""
        return bool(self._symbols[symbol].above)

    def is_reported_gap(self, symbol: str, open_ms: int) -> bool:
        """The slot was reported as the exchange's gap and its candle has not come since."""
        return open_ms in self._symbols[symbol].gaps

    def reported_gaps(self, symbol: str) -> list[int]:
        """The open times reported as the exchange's gaps whose candle has not come since, oldest first."""
        return sorted(self._symbols[symbol].gaps)

    def forget_gaps(self, symbol: str, before_ms: int) -> None:
        """Stop waiting for the reported gaps older than ``before_ms``: a candle for them is then dropped."""
        state = self._symbols[symbol]
        state.gaps = {t for t in state.gaps if t >= before_ms}

    def accept_closed(self, symbol: str, open_ms: int) -> bool:
        """True the first time a closed candle of this open time is seen (produce it), False for a duplicate.
        A candle of a reported gap (:meth:`is_reported_gap`) passes once: the exchange published it late."""
        state = self._symbols[symbol]
        if open_ms in state.gaps:
            state.gaps.discard(open_ms)
            return True
        if open_ms <= state.floor_ms or open_ms in state.above or (open_ms - state.floor_ms) % self.timeframe_ms:
            return False
        state.above.add(open_ms)
        self._advance(state)
        return True

    def accept_update(self, symbol: str, open_ms: int, now_s: float) -> bool:
        """True when an in-progress update of the candle at ``open_ms`` should be produced at ``now_s``."""
        state = self._symbols[symbol]
        if open_ms <= state.floor_ms or open_ms in state.above:
            return False  # that candle is closed already: an update would undo its close downstream
        if state.update_open_ms == open_ms and now_s - state.update_at_s < self.update_interval_s:
            return False
        state.update_open_ms, state.update_at_s = open_ms, now_s
        return True

    def confirm_gaps(self, symbol: str, returned_open_ms: Iterable[int], covered_until_ms: int,
                     confirm_until_ms: int) -> list[Gap]:
        """After a backfill that asked the exchange for every candle up to ``covered_until_ms``: the slots above
        the floor that neither the exchange returned nor a stream delivered, below a newer candle that exists,
        and not after ``confirm_until_ms``, are the exchange's gaps. They are returned and the floor moves past."""
        state = self._symbols[symbol]
        known = {t for t in returned_open_ms if state.floor_ms < t <= covered_until_ms}
        known |= {t for t in state.above if t <= covered_until_ms}
        if not known:
            return []
        newest = max(known)
        missing = [t for t in range(state.floor_ms + self.timeframe_ms, min(newest, confirm_until_ms + 1),
                                    self.timeframe_ms) if t not in known]
        if not state.floor_is_candle:
            before_history = [t for t in missing if t < min(known)]
            state.above.update(before_history)
            missing = missing[len(before_history):]
            state.floor_is_candle = True
        gaps: list[Gap] = []
        for t in missing:
            if gaps and gaps[-1].last_open_ms + self.timeframe_ms == t:
                gaps[-1] = Gap(symbol, gaps[-1].first_open_ms, t, self.timeframe_ms)
            else:
                gaps.append(Gap(symbol, t, t, self.timeframe_ms))
        state.above.update(missing)
        state.gaps.update(missing)
        self._advance(state)
        return gaps

    def _advance(self, state: _Symbol) -> None:
        step = self.timeframe_ms
        while state.floor_ms + step in state.above:
            state.floor_ms += step
            state.above.discard(state.floor_ms)
