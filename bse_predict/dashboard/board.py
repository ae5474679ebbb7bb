"""What the dashboard knows, in memory and bounded: the topics' messages folded into per-symbol state.

Per symbol: the newest live call per target (a call of an older candle never replaces a newer one),
a deque of the last ``history_hours`` calls with each target's outcome joined to its call when it
resolves (an outcome read before its call waits for it, among at most ``history_hours`` such calls),
the same for the shadow version's calls (``predictions.shadow``, their outcomes those of stream
``shadow``: a second deque and waiting room of the same bounds), a deque of closed candles for the
chart, and at most ``history_hours`` trades waiting for the candle that prices them. At most
``max_symbols`` symbols: past that the one updated longest ago is dropped. Beside them a deque of recent
control events and dead letters, dead-letter counts by kind (a small fixed set of kinds), the newest
breaker change per (version, worker) (at most ``recent_events`` of them), and the track record's score
sums per (version, arm, target, stream), a fixed number of fields each: one total, and one per candle
hour for the ``lookback_hours`` hours up to the newest (:mod:`bse_predict.dashboard.track_record`); the
same hours of the equity of the live signals per (version, arm, target)
(:mod:`bse_predict.dashboard.equity`). Only live calls trade: a live outcome joined to its call (when the
outcome is read, or when its call comes after it) prices that call's signal once the board holds the
candle it needs; shadow calls are scored, never traded. Outcomes are counted once per (id, target,
version, stream), the key a re-published outcome repeats, among the last ``outcome_keys`` keys (a crash
re-publishes within seconds, so a recent window catches it).

``revision`` grows with every change a page shows (a call, a shadow call, a closed candle, a counted
outcome, a trade priced, a control event, a dead letter); the live pages send what changed after the
revision they were loaded at. Per symbol, ``changed_at`` is the revision of its last live call or
outcome (the markets row) and ``chart_at`` that of its last change of any kind (the symbol page).
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from configs.dashboard import DashboardConfig
from bse_predict.backtest.trading import side_of
from bse_predict.candles.schema import Candle, Outcome, Prediction
from bse_predict.dashboard.breakers import BreakerBook
from bse_predict.dashboard.equity import EquityKey, EquityRecord, call_trade, needed_candle_ms
from bse_predict.dashboard.track_record import SeriesKey, TrackRecord

__all__ = ["Call", "SymbolState", "Board"]


@dataclass
class Call:
    """One live prediction and, per target, its outcome once known."""

    prediction: Prediction
    outcomes: dict[str, Outcome] = field(default_factory=dict)


Early = OrderedDict[tuple[str, str], dict[str, Outcome]]
"""Outcomes read before their call, by (id, version)."""


@dataclass
class SymbolState:
    calls: deque[Call]
    candles: deque[Candle]
    early: Early
    shadow_calls: deque[Call]  # the shadow version's calls, as ``calls``
    shadow_early: Early
    # live trades waiting for the candle that prices them, by (open time, version, target)
    unpriced: OrderedDict[tuple[int, str, str], tuple[Prediction, Outcome]] = field(default_factory=OrderedDict)
    newest: Prediction | None = None
    changed_at: int = 0  # the board's revision of this symbol's last live call or outcome
    chart_at: int = 0  # the board's revision of this symbol's last change of any kind

    def call_at(self, open_time: int) -> Call | None:
        """The kept call of the candle that opened at ``open_time``."""
        return next((call for call in self.calls if call.prediction.open_time == open_time), None)

    def shadow_at(self, open_time: int) -> Call | None:
        """The kept shadow call of the candle that opened at ``open_time``."""
        return next((call for call in self.shadow_calls if call.prediction.open_time == open_time), None)


def _insert(calls: deque[Call], early: Early, prediction: Prediction) -> Call | None:
    """``prediction`` slotted into ``calls`` (kept in candle order) with the outcomes waiting for it, as the
    new call; None when it changes nothing (a replay of a kept call, or older than every call of a full deque)."""
    position = len(calls)
    while position > 0 and calls[position - 1].prediction.open_time >= prediction.open_time:
        if calls[position - 1].prediction.open_time == prediction.open_time:
            return None  # a replayed prediction: the first one stands, with the outcomes joined to it
        position -= 1
    if len(calls) == calls.maxlen:
        if position == 0:
            return None  # older than every call kept
        calls.popleft()
        position -= 1
    call = Call(prediction, early.pop((prediction.id, prediction.model.version), {}))
    calls.insert(position, call)
    return call


def _join(calls: deque[Call], early: Early, outcome: Outcome, bound: int) -> Call | None:
    """The call ``outcome`` is joined to; None when the call is not read yet and the outcome waits in
    ``early`` for it (at most ``bound`` calls' outcomes wait)."""
    for call in calls:
        if call.prediction.id == outcome.id and call.prediction.model.version == outcome.model.version:
            call.outcomes[outcome.target] = outcome
            return call
    # Its call not read yet (the topics are read side by side, and at start-up a week at once): kept for it.
    early.setdefault((outcome.id, outcome.model.version), {})[outcome.target] = outcome
    while len(early) > bound:
        early.popitem(last=False)
    return None


class Board:
    """The state above; ``round_trip_cost_pct`` (``signals.round_trip_cost_pct``) is charged on each trade."""

    def __init__(self, config: DashboardConfig, round_trip_cost_pct: float) -> None:
        self._config = config
        self.symbols: OrderedDict[str, SymbolState] = OrderedDict()  # least recently changed first
        self.control_events: deque[dict[str, Any]] = deque(maxlen=config.recent_events)
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=config.recent_events)
        self.dead_letter_counts: Counter[str] = Counter()
        self.breakers = BreakerBook(config.recent_events)
        self.track_record = TrackRecord(config.lookback_hours)
        self.equity = EquityRecord(config.lookback_hours, round_trip_cost_pct)
        self.revision = 0
        self._counted: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()

    @property
    def config(self) -> DashboardConfig:
        return self._config

    def _symbol(self, symbol: str) -> SymbolState:
        state = self.symbols.get(symbol)
        if state is None:
            hours = self._config.history_hours
            state = SymbolState(calls=deque(maxlen=hours), candles=deque(maxlen=hours + self._config.chart_extra_hours),
                                early=OrderedDict(), shadow_calls=deque(maxlen=hours), shadow_early=OrderedDict())
            self.symbols[symbol] = state
            while len(self.symbols) > self._config.max_symbols:
                self.symbols.popitem(last=False)
        return state

    def _touch(self, symbol: str, state: SymbolState, markets: bool = True) -> None:
        """A change of ``symbol`` that its page shows; ``markets``: its markets row too."""
        self.revision += 1
        state.chart_at = self.revision
        if markets:
            state.changed_at = self.revision
        self.symbols.move_to_end(symbol)

    def add_prediction(self, prediction: Prediction) -> None:
        state = self._symbol(prediction.symbol)
        call = _insert(state.calls, state.early, prediction)
        if call is None:
            return
        for outcome in call.outcomes.values():  # outcomes read before it: their trades now
            self._trade(state, prediction, outcome)
        if state.newest is None or prediction.open_time > state.newest.open_time:
            state.newest = prediction
        self._touch(prediction.symbol, state)

    def add_shadow_prediction(self, prediction: Prediction) -> None:
        """A call of the shadow version (``predictions.shadow``): shown beside the live call, never as it."""
        state = self._symbol(prediction.symbol)
        if _insert(state.shadow_calls, state.shadow_early, prediction) is not None:
            self._touch(prediction.symbol, state, markets=False)

    def add_outcome(self, outcome: Outcome) -> None:
        key = (outcome.id, outcome.target, outcome.model.version, outcome.stream)
        if key in self._counted:
            return
        self._counted[key] = None
        while len(self._counted) > self._config.outcome_keys:
            self._counted.popitem(last=False)
        self.track_record.add(SeriesKey(outcome.model.version, outcome.variant, outcome.target, outcome.stream),
                              outcome)
        self.revision += 1
        state = self._symbol(outcome.symbol)
        live = outcome.stream == "live"
        calls, early = (state.calls, state.early) if live else (state.shadow_calls, state.shadow_early)
        call = _join(calls, early, outcome, self._config.history_hours)
        if call is None:
            return
        if live:
            self._trade(state, call.prediction, outcome)
        self._touch(outcome.symbol, state, markets=live)

    def add_candle(self, candle: Candle) -> None:
        if not candle.closed:
            return
        state = self._symbol(candle.symbol)
        candles = state.candles
        if candles and candle.open_time <= candles[-1].open_time:
            for i, kept in enumerate(candles):
                if kept.open_time == candle.open_time:
                    if kept != candle:
                        candles[i] = candle
                        self._touch(candle.symbol, state, markets=False)
                    return
            return  # a late candle older than the newest: the chart keeps its order, it is left out
        candles.append(candle)
        ready = [key for key, (call, outcome) in state.unpriced.items()
                 if needed_candle_ms(call, outcome) <= candle.open_time]
        for key in ready:
            self._trade(state, *state.unpriced.pop(key))
        self._touch(candle.symbol, state, markets=False)  # the revision covers the trades priced too

    def _trade(self, state: SymbolState, call: Prediction, outcome: Outcome) -> None:
        """Add the trade of ``call``'s signal for the outcome's target to the equity, or keep it until the
        board holds the candle that prices it (:func:`~bse_predict.dashboard.equity.needed_candle_ms`)."""
        part = call.targets.get(outcome.target)
        if part is None or side_of(part.signal) == 0:
            return
        if not state.candles or state.candles[-1].open_time < needed_candle_ms(call, outcome):
            state.unpriced[(call.open_time, call.model.version, outcome.target)] = (call, outcome)
            while len(state.unpriced) > self._config.history_hours:
                state.unpriced.popitem(last=False)
            return
        trade = call_trade(call, outcome, state.candles, self.equity.cost_pct)
        if trade is not None:
            self.equity.add(EquityKey(call.model.version, call.variant, outcome.target), call.open_time, trade)

    def waiting_trades(self, start_ms: int | None, end_ms: int | None) -> dict[EquityKey, int]:
        """Per series, the trades of calls whose candle opened in [``start_ms``, ``end_ms``) still waiting."""
        waiting: dict[EquityKey, int] = {}
        for state in self.symbols.values():
            for call, outcome in state.unpriced.values():
                if (start_ms is None or call.open_time >= start_ms) and (end_ms is None or call.open_time < end_ms):
                    key = EquityKey(call.model.version, call.variant, outcome.target)
                    waiting[key] = waiting.get(key, 0) + 1
        return waiting

    def add_control_event(self, event: dict[str, Any]) -> None:
        self.control_events.appendleft(event)
        self.breakers.add(event)
        self.revision += 1

    def add_dead_letter(self, letter: dict[str, Any]) -> None:
        self.dead_letters.appendleft(letter)
        self.dead_letter_counts[str(letter.get("kind", "unknown"))] += 1
        self.revision += 1
