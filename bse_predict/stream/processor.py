"""The candle stream, one batch at a time: decode -> store -> features -> route -> predict -> publish.

Pure steps live in the concept packages (``candles``, ``features``, ``serving``);
this module sequences them around the IO (the window store and the publisher)
and keeps the event loop free by building the batch's inputs once and running
every model on them in a one-thread executor. The router returns everything it
decided (answers, shadow, counts, tripped breakers); ``on_routed`` hands that on
(the control plane's breaker events and warm-up windows). Expected bad input
(:class:`InvalidCandle`, a symbol past the fleet's cap, or a close too far
from the symbol's last close in its window) becomes a dead letter. Anything
else raised here (a Redis or broker fault, a bug) fails the batch as a whole:
every step is safe to repeat, and the worker's
:class:`~bse_predict.stream.batch_guard.BatchGuard` runs the batch again or leaves the
process without acknowledging it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from configs.settings import TIMEFRAME_MS, Settings
from bse_predict.candles.plausibility import price_jump_refusals
from bse_predict.errors import InvalidCandle
from bse_predict.serving.model_set import Predictor
from bse_predict.candles.schema import Candle, DeadLetter, ModelRef, Prediction, parse_candle
from bse_predict.serving.signals import target_predictions
from bse_predict.candles.window import window_ending_at
from bse_predict.features.inputs import BatchInputs
from bse_predict.stream.rebuild import WindowRebuilder
from bse_predict.stream.symbol_registry import SymbolRegistry
from bse_predict.stream.stage_times import StageTimes
from bse_predict.serving.router import ModelRouter, RoutedBatch, RowAnswer
from bse_predict.connections.topics import TopicNames
from bse_predict.stream.window_store import ClosedWrite, WindowStore

__all__ = ["RawMessage", "Publisher", "OutcomeSink", "PublishedPredictions", "MemberSink", "CandleProcessor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawMessage:
    """A Kafka record as the processor sees it: bytes plus where it came from."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int


class Publisher(Protocol):
    async def publish(self, predictions: Sequence[Prediction], dead_letters: Sequence[DeadLetter],
                      shadow: Sequence[Prediction] = ()) -> None:
        """Send all three (``shadow`` to ``predictions.shadow``) and return only when the broker
        acknowledged every message."""


_DEAD_LETTER_KEY_CHARS = 256


def _dead_letter(message: RawMessage, error: InvalidCandle, now_ms: int, keep_bytes: int) -> DeadLetter:
    """The dead letter of ``message``, bounded: the first ``keep_bytes`` of the original, with the whole
    one's length and sha256 (a record the broker refuses as too large would stop the batch for good)."""
    kept = message.value[:keep_bytes]
    try:
        text: str | None = kept.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    key = message.key[:_DEAD_LETTER_KEY_CHARS].decode("utf-8", "replace") if message.key is not None else None
    return DeadLetter(
        reason=error.reason[:1024],
        kind=error.kind,
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key,
        original_b64=base64.b64encode(kept).decode("ascii"),
        original_text=text,
        received_at_ms=now_ms,
        original_bytes=len(message.value),
        original_sha256=hashlib.sha256(message.value).hexdigest(),
        truncated=len(kept) < len(message.value),
    )


def _last_of_each(candles: Sequence[Candle]) -> list[Candle]:
    """One closed candle per id, the latest arrival winning, in arrival order."""
    latest = {c.id: c for c in candles}
    return list(latest.values())


class OutcomeSink(Protocol):
    """The outcome side (:class:`bse_predict.monitoring.resolver.OutcomeResolver`)."""

    async def after_publish(self, live: Sequence[Prediction], shadow: Sequence[Prediction],
                            closed: Sequence[Candle], live_features: Callable[[], np.ndarray] | None = None
                            ) -> Sequence[object]:
        """Register the published predictions and settle what the closed candles answer; ``live_features()``
        gives the live predictions' feature rows (computed once for the batch, on first call)."""

    async def restore(self, live: Sequence[Prediction], shadow: Sequence[Prediction],
                      candles: Sequence[tuple[int, Sequence[float]]]) -> int:
        """Register predictions read back after Redis lost them and settle them on ``candles``."""


class PublishedPredictions(Protocol):
    """Predictions read back from a topic (:class:`bse_predict.monitoring.prediction_history.PredictionHistory`)."""

    async def recent(self, topic: str, symbol: str, timeframe: str, from_ms: int, before_ms: int) -> list[Prediction]:
        """``symbol``'s predictions on ``topic`` with ``from_ms <= open_time < before_ms``, one per id."""


class MemberSink(Protocol):
    async def record(self, predictions: Sequence[Prediction], members: dict[str, dict[str, np.ndarray]]) -> None:
        """Keep the members' probabilities of published live predictions (live re-weighting)."""


@dataclass(frozen=True)
class _Predicted:
    live: list[Prediction]
    shadow: list[Prediction]
    members: dict[str, dict[str, np.ndarray]]
    """The live predictions' member probabilities by id, where an ensemble served member by member answered."""
    live_features: Callable[[], np.ndarray] | None
    """The live predictions' feature rows, in their order (computed for the batch on first use)."""


_NOTHING_PREDICTED = _Predicted([], [], {}, None)


@dataclass(frozen=True)
class _Decoded:
    """A batch's records after decoding and the checks: candles to store, dead letters to publish."""

    closed: list[Candle]
    forming: list[Candle]
    dead_letters: list[DeadLetter]
    origin: dict[str, RawMessage]
    """The record each stored candle came from (a rebuild reads the partition before its offset)."""


class CandleProcessor:
    """Processes one batch of candle records; see the module docstring.

    ``predictor`` is a :class:`ModelRouter` (A/B arms, shadow, breakers and fallback
    from the control state) or one plain predictor, served alone behind a breaker.
    ``on_routed(routed, inputs)`` is called on the event loop after each batch's models answered.
    """

    def __init__(
        self,
        settings: Settings,
        store: WindowStore,
        predictor: Predictor | ModelRouter,
        publisher: Publisher,
        executor: Executor,
        rebuilder: WindowRebuilder | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        outcomes: OutcomeSink | None = None,
        member_sink: MemberSink | None = None,
        fault_point: Callable[[str], None] | None = None,
        prediction_history: PublishedPredictions | None = None,
        symbols: SymbolRegistry | None = None,
        on_routed: Callable[[RoutedBatch, BatchInputs], None] | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._router = predictor if isinstance(predictor, ModelRouter) else ModelRouter.alone(predictor, settings)
        self._publisher = publisher
        self._executor = executor
        self._clock_ms = clock_ms
        self._rebuilder = rebuilder
        self._outcomes = outcomes
        self._member_sink = member_sink
        self._fault_point = fault_point or (lambda stage: None)
        self._history = prediction_history
        self._symbols = symbols
        self._on_routed = on_routed
        self._rebuild_tried: set[tuple[str, str]] = set()
        self._complete_at: dict[tuple[str, str], int] = {}  # newest open time whose window was complete
        self._outcomes_to_restore: set[tuple[str, str]] = set()  # windows rebuilt, pending outcomes not yet
        self._allowed_timeframes = frozenset({settings.market.timeframe})
        self.counts: Counter[str] = Counter()
        self._batch_counts: Counter[str] = Counter()  # this attempt's counts, added to ``counts`` once it finished
        self.stage_times = StageTimes()

    @property
    def _lookback(self) -> int:
        """The history the served versions need; it changes when the control state does."""
        return self._router.min_history

    async def process(self, messages: Sequence[RawMessage]) -> None:
        """One attempt at a batch; its counts reach ``counts`` only when it finished (a retried batch is
        counted once). Rebuilt windows are counted when rebuilt: a retry does not rebuild them again."""
        started = time.perf_counter()
        self._batch_counts = Counter()
        lookback = self._lookback  # the control state may change it between batches, never within one
        decoded = await self._decode(messages, self._clock_ms())
        timer = self.stage_times
        fault_point = self._fault_point
        with timer.stage("store"):
            fault_point("store")
            await self._store.write_forming(decoded.forming)
            writes = await self._store.write_closed(_last_of_each(decoded.closed), read_count=lookback + 1)
            writes = await self._rebuild_short_windows(writes, decoded.origin, lookback)
        with timer.stage("windows"):
            to_predict = self._windows_to_predict(writes, lookback)
        with timer.stage("predict"):
            fault_point("predict")
            predicted = await self._predict(to_predict, started) if to_predict else _NOTHING_PREDICTED
            predictions, shadow = predicted.live, predicted.shadow
        with timer.stage("publish"):
            fault_point("publish")
            await self._publisher.publish(predictions, decoded.dead_letters, shadow)
        fault_point("published")
        if self._member_sink is not None:  # before the outcomes that could settle them
            await self._member_sink.record(predictions, predicted.members)
        if self._outcomes is not None:  # before the predicted marks: a crash re-predicts, so re-registers
            with timer.stage("outcomes"):
                await self._outcomes.after_publish(predictions, shadow, [w.candle for w in writes],
                                                   predicted.live_features)
        fault_point("marks")
        # Rows no model could answer stay unmarked: a replay of the candle is predicted again.
        answered = {p.id for p in predictions}
        await self._store.mark_predicted([w.candle for w, _ in to_predict if w.candle.id in answered])
        timer.batches += 1
        self.counts.update(self._batch_counts)
        self.counts.update(messages=len(messages), closed=len(decoded.closed), forming=len(decoded.forming),
                           predicted=len(predictions), dead_letters=len(decoded.dead_letters))

    async def _decode(self, messages: Sequence[RawMessage], now_ms: int) -> _Decoded:
        """Parse and check every record: valid candles split into closed and forming, the rest dead letters
        (invalid, a symbol past the fleet's cap, or a close too far from the symbol's last close)."""
        decoded = _Decoded([], [], [], {})
        keep_bytes = self._settings.candles.dead_letter_keep_bytes

        def refuse(message: RawMessage, error: InvalidCandle) -> None:
            self._batch_counts[f"dlq.{error.kind}"] += 1
            decoded.dead_letters.append(_dead_letter(message, error, now_ms, keep_bytes))

        valid: list[tuple[Candle, RawMessage]] = []
        for message in messages:
            try:
                valid.append((parse_candle(message.value, self._settings.candles, now_ms, message.key,
                                           self._allowed_timeframes), message))
            except InvalidCandle as error:
                refuse(message, error)
        admitted = await self._symbols.admit({c.symbol for c, _ in valid}, now_ms) if self._symbols else None
        kept: list[tuple[Candle, RawMessage]] = []
        for candle, message in valid:
            if admitted is not None and candle.symbol not in admitted:
                refuse(message, InvalidCandle("symbol_cap", f"symbol {candle.symbol!r} refused: the fleet serves "
                                                            f"worker.max_symbols={self._settings.worker.max_symbols} already"))
            else:
                kept.append((candle, message))
        # each close against its symbol's last close: the window's newest candle, then the batch's accepted ones
        last_closes = await self._store.last_closes({(c.symbol, c.timeframe) for c, _ in kept}) if kept else {}
        jumps = price_jump_refusals([c for c, _ in kept], last_closes, self._settings.candles)
        for (candle, message), jump in zip(kept, jumps, strict=True):
            if jump is not None:
                refuse(message, jump)
                continue
            (decoded.closed if candle.closed else decoded.forming).append(candle)
            decoded.origin[candle.id] = message
        return decoded

    async def _rebuild_short_windows(self, writes: list[ClosedWrite], origin: dict[str, RawMessage],
                                     lookback: int) -> list[ClosedWrite]:
        """A symbol with too little history in Redis gets one rebuild attempt when this process sees it
        first, and another each time a window comes back short for a candle no older than one whose
        window was complete (Redis lost it);
        its candles of this batch are then written again to read the restored window. An attempt
        that fails (a fault) counts as not tried: the retried batch tries again."""
        if self._rebuilder is None:
            return writes
        rebuilt: set[tuple[str, str]] = set()
        for write in writes:
            key = (write.candle.symbol, write.candle.timeframe)
            complete_at = self._complete_at.get(key)
            if len(write.open_time_ms) > lookback:
                self._complete_at[key] = max(write.candle.open_time, complete_at or write.candle.open_time)
                continue
            # short for a candle no older than one that had its whole history: Redis lost the window
            lost = complete_at is not None and write.candle.open_time >= complete_at
            if key in rebuilt or (key in self._rebuild_tried and not lost):
                continue
            if lost:
                log.warning("the window of %s %s is short in Redis (%d candles) after it was complete: "
                            "Redis lost it; rebuilding", *key, len(write.open_time_ms))
            message = origin[write.candle.id]
            restored = await self._rebuilder.rebuild(write.candle, message.topic, message.partition, message.offset)
            self._rebuild_tried.add(key)
            self._complete_at.pop(key, None)
            rebuilt.add(key)
            if restored:
                self.counts["windows_rebuilt"] += 1
                self._outcomes_to_restore.add(key)
        again = [i for i, w in enumerate(writes) if (w.candle.symbol, w.candle.timeframe) in rebuilt]
        if again:
            rewritten = await self._store.write_closed([writes[i].candle for i in again], read_count=lookback + 1)
            for index, write in zip(again, rewritten, strict=True):
                writes[index] = write
        for write in writes:  # kept across attempts: a fault after the window came back retries the restore
            key = (write.candle.symbol, write.candle.timeframe)
            if key in self._outcomes_to_restore:
                await self._restore_outcomes(write)
                self._outcomes_to_restore.discard(key)
        return writes

    async def _restore_outcomes(self, write: ClosedWrite) -> None:
        """Redis lost this symbol's window, so its pending outcomes too: settle its predictions of the
        last horizon again from the predictions topics and the restored window (:mod:`bse_predict.monitoring.prediction_history`)."""
        if self._outcomes is None or self._history is None:
            return
        candle, step_ms = write.candle, TIMEFRAME_MS[write.candle.timeframe]
        from_ms = candle.open_time - (self._settings.market.horizon_candles + 1) * step_ms
        names = TopicNames.of(self._settings)
        live = await self._history.recent(names.predictions, candle.symbol, candle.timeframe, from_ms, candle.open_time)
        shadow = await self._history.recent(names.predictions_shadow, candle.symbol, candle.timeframe, from_ms,
                                            candle.open_time)
        since = [(int(t), row) for t, row in zip(write.open_time_ms.tolist(), write.ohlcv.tolist(), strict=True)
                 if from_ms < t < candle.open_time]
        published = await self._outcomes.restore(live, shadow, since)
        log.warning("pending outcomes of %s %s were lost with its window: %d predictions read back, %d outcomes "
                    "published again", candle.symbol, candle.timeframe, len(live) + len(shadow), published)

    def _windows_to_predict(self, writes: Sequence[ClosedWrite], lookback: int) -> list[tuple[ClosedWrite, np.ndarray]]:
        ready = []
        for write in writes:
            if write.already_predicted:
                self._batch_counts["already_predicted"] += 1
                continue
            window = window_ending_at(write.open_time_ms, write.ohlcv, write.candle.open_time, lookback,
                                      TIMEFRAME_MS[write.candle.timeframe])
            if window is None:
                self._batch_counts["insufficient_history"] += 1
                continue
            ready.append((write, window))
        return ready

    async def _predict(self, ready: Sequence[tuple[ClosedWrite, np.ndarray]], started: float) -> _Predicted:
        """The batch's predictions; rows no model answered have none. The batch's inputs are built once,
        in the inference thread, and shared by every model called and by drift monitoring."""
        inputs = BatchInputs(np.stack([window for _, window in ready]),
                             np.array([w.candle.open_time for w, _ in ready], dtype=np.int64))
        symbols = [w.candle.symbol for w, _ in ready]
        loop = asyncio.get_running_loop()
        routed = await loop.run_in_executor(self._executor, self._router.serve, symbols, inputs)
        self._batch_counts.update(routed.counts)
        if self._on_routed is not None:
            self._on_routed(routed, inputs)
        latency_ms = round((time.perf_counter() - started) * 1000.0, 3)
        live = self._messages([(w, a) for (w, _), a in zip(ready, routed.answers, strict=True) if a is not None], latency_ms)
        shadow = self._messages([(w, a) for (w, _), a in zip(ready, routed.shadow, strict=False) if a is not None],
                                latency_ms)
        members = {w.candle.id: a.members for (w, _), a in zip(ready, routed.answers, strict=True)
                   if a is not None and a.members is not None}
        live_rows = [row for row, answer in enumerate(routed.answers) if answer is not None]
        return _Predicted(live, shadow, members, lambda: inputs.rows(("features",), live_rows)["features"])

    def _messages(self, rows: Sequence[tuple[ClosedWrite, RowAnswer]], latency_ms: float) -> list[Prediction]:
        """Prediction messages, the signal step batched per target over every row that has it."""
        targets: dict[int, dict] = {i: {} for i in range(len(rows))}
        for target in dict.fromkeys(t for _, answer in rows for t in answer.probabilities):
            having = [i for i, (_, answer) in enumerate(rows) if target in answer.probabilities]
            stacked = np.stack([rows[i][1].probabilities[target] for i in having])
            for i, part in zip(having, target_predictions(stacked, self._settings.signals, target), strict=True):
                targets[i][target] = part
        horizon_hours = self._settings.market.horizon_hours
        models = {(a.model_name, a.version): ModelRef(name=a.model_name, version=a.version)
                  for _, a in rows}
        return [
            Prediction(
                id=write.candle.id,
                symbol=write.candle.symbol,
                timeframe=write.candle.timeframe,
                open_time=write.candle.open_time,
                close=write.candle.close,
                horizon_hours=horizon_hours,
                targets=targets[i],
                model=models[(answer.model_name, answer.version)],
                variant=answer.variant,
                degraded=answer.degraded,
                regime=answer.regime,
                latency_ms=latency_ms,
            )
            for i, (write, answer) in enumerate(rows)
        ]
