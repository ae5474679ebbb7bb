"""What the dashboard knows, in memory and bounded: the topics' messages folded into per-symbol state.

Per symbol: the newest live call per target (a call of an older candle never replaces a newer one),
a deque of the last ``history_hours`` calls with each target's outcome joined to its call when it
resolves (an outcome read before its call waits for it, among at most ``history_hours`` such calls),
and a deque of closed candles for the chart. At most ``max_symbols`` symbols: past that the
one updated longest ago is dropped. Beside them a deque of recent control events and dead letters,
dead-letter counts by kind (a small fixed set of kinds), and the track record's score sums per
(version, arm, target, stream), a fixed number of fields each: one total, and one per candle hour for the
``lookback_hours`` hours up to the newest (:mod:`bse_predict.dashboard.track_record`); the same hours of the
equity of the live signals per (version, arm, target) (:mod:`bse_predict.dashboard.equity`), with per
symbol at most ``history_hours`` trades waiting for the candle that prices them. Outcomes are counted once per
(id, target, version, stream), the key a re-published outcome repeats, among the last ``outcome_keys``
keys (a crash re-publishes within seconds, so a recent window catches it).

``revision`` grows with every change a page shows (a call, a counted outcome, a control event, a dead
letter, a trade priced); the live pages send what changed after the revision they were loaded at.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from configs.dashboard import DashboardConfig
from bse_predict.backtest.trading import side_of
from bse_predict.candles.schema import Candle, Outcome, Prediction
from bse_predict.dashboard.equity import EquityKey, EquityRecord, call_trade, needed_candle_ms
from bse_predict.dashboard.track_record import SeriesKey, TrackRecord

__all__ = ["Call", "SymbolState", "Board"]


@dataclass
class Call:
    """One live prediction and, per target, its outcome once known."""

    prediction: Prediction
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@dataclass
class SymbolState:
    calls: deque[Call]
    candles: deque[Candle]
    early: OrderedDict[tuple[str, str], dict[str, Outcome]]  # outcomes read before their call, by (id, version)
    # trades waiting for the candle that prices them, by (open time, version, target)
    unpriced: OrderedDict[tuple[int, str, str], tuple[Prediction, Outcome]] = field(default_factory=OrderedDict)
    newest: Prediction | None = None
    changed_at: int = 0  # the board's revision of this symbol's last change

    def call_at(self, open_time: int) -> Call | None:
        """The kept call of the candle that opened at ``open_time``."""
        return next((call for call in self.calls if call.prediction.open_time == open_time), None)


class Board:
    """The state above; ``round_trip_cost_pct`` (``signals.round_trip_cost_pct``) is charged on each trade."""

    def __init__(self, config: DashboardConfig, round_trip_cost_pct: float) -> None:
        self._config = config
        self.symbols: OrderedDict[str, SymbolState] = OrderedDict()  # least recently changed first
        self.control_events: deque[dict[str, Any]] = deque(maxlen=config.recent_events)
        self.dead_letters: deque[dict[str, Any]] = deque(maxlen=config.recent_events)
        self.dead_letter_counts: Counter[str] = Counter()
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
            state = SymbolState(calls=deque(maxlen=self._config.history_hours),
                                candles=deque(maxlen=self._config.history_hours + self._config.chart_extra_hours),
                                early=OrderedDict())
            self.symbols[symbol] = state
            while len(self.symbols) > self._config.max_symbols:
                self.symbols.popitem(last=False)
        return state

    def _touch(self, symbol: str, state: SymbolState) -> None:
        self.revision += 1
        state.changed_at = self.revision
        self.symbols.move_to_end(symbol)

    def add_prediction(self, prediction: Prediction) -> None:
        state = self._symbol(prediction.symbol)
        calls = state.calls
        position = len(calls)  # calls stay in candle order; a late one is slotted in
        while position > 0 and calls[position - 1].prediction.open_time >= prediction.open_time:
            if calls[position - 1].prediction.open_time == prediction.open_time:
                return  # a replayed prediction: the first one stands, with the outcomes joined to it
            position -= 1
        if len(calls) == calls.maxlen:
            if position == 0:
                return  # older than every call kept
            calls.popleft()
            position -= 1
        early = state.early.pop((prediction.id, prediction.model.version), {})
        calls.insert(position, Call(prediction, early))
        for outcome in early.values():
            self._trade(state, prediction, outcome)
        if state.newest is None or prediction.open_time > state.newest.open_time:
            state.newest = prediction
        self._touch(prediction.symbol, state)

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
        if outcome.stream != "live":
            return
        state = self._symbol(outcome.symbol)
        for call in state.calls:
            if call.prediction.id == outcome.id and call.prediction.model.version == outcome.model.version:
                call.outcomes[outcome.target] = outcome
                self._trade(state, call.prediction, outcome)
                self._touch(outcome.symbol, state)
                return
        # Its call not read yet (the topics are read side by side, and at start-up a week at once): kept for it.
        state.early.setdefault((outcome.id, outcome.model.version), {})[outcome.target] = outcome
        while len(state.early) > self._config.history_hours:
            state.early.popitem(last=False)

    def add_candle(self, candle: Candle) -> None:
        if not candle.closed:
            return
        state = self._symbol(candle.symbol)
        candles = state.candles
        if candles and candle.open_time <= candles[-1].open_time:
            for i, kept in enumerate(candles):
                if kept.open_time == candle.open_time:
                    candles[i] = candle
                    return
            return  # a late candle older than the newest: the chart keeps its order, it is left out
        candles.append(candle)
        ready = [key for key, (call, outcome) in state.unpriced.items()
                 if needed_candle_ms(call, outcome) <= candle.open_time]
        for key in ready:
            self._trade(state, *state.unpriced.pop(key))
        if ready:
            self.revision += 1

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
        self.revision += 1

    def add_dead_letter(self, letter: dict[str, Any]) -> None:
        self.dead_letters.appendleft(letter)
        self.dead_letter_counts[str(letter.get("kind", "unknown"))] += 1
        self.revision += 1
