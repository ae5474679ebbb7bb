"""The candle stream, one batch at a time: decode -> window -> features -> predict -> publish.

Pure steps live in ``models/``; this module sequences them around the IO
(the window store and the publisher) and keeps the event loop free by
running features and inference in a one-thread executor. Expected bad input
(:class:`InvalidCandle`) becomes a dead letter; anything else is a bug and is
allowed to crash the worker, which then restarts from its committed offset.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from configs.settings import TIMEFRAME_MS, Settings
from models.errors import InvalidCandle
from models.predictor import Predictor
from models.schema import Candle, DeadLetter, ModelRef, Prediction, parse_candle
from models.signals import target_predictions
from models.window import window_ending_at
from workers.rebuild import WindowRebuilder
from workers.stage_times import StageTimes
from workers.outcomes import OutcomeResolver
from workers.model_router import ModelRouter, RowAnswer
from workers.window_store import ClosedWrite, WindowStore

__all__ = ["RawMessage", "Publisher", "CandleProcessor"]

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


def _dead_letter(message: RawMessage, error: InvalidCandle, now_ms: int) -> DeadLetter:
    try:
        text: str | None = message.value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return DeadLetter(
        reason=error.reason,
        kind=error.kind,
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key.decode("utf-8", "replace") if message.key is not None else None,
        original_b64=base64.b64encode(message.value).decode("ascii"),
        original_text=text,
        received_at_ms=now_ms,
    )


def _last_of_each(candles: Sequence[Candle]) -> list[Candle]:
    """One closed candle per id, the latest arrival winning, in arrival order."""
    latest = {c.id: c for c in candles}
    return list(latest.values())


class MemberSink(Protocol):
    async def record(self, predictions: Sequence[Prediction], members: dict[str, dict[str, np.ndarray]]) -> None:
        """Keep the members' probabilities of published live predictions (live re-weighting)."""


class CandleProcessor:
    """Processes one batch of candle records; see the module docstring.

    ``predictor`` is a :class:`ModelRouter` (A/B arms, shadow, breakers and fallback
    from the control state) or one plain predictor, served alone behind a breaker.
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
        outcomes: OutcomeResolver | None = None,
        member_sink: MemberSink | None = None,
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
        self._rebuild_tried: set[tuple[str, str]] = set()
        self._allowed_timeframes = frozenset({settings.market.timeframe})
        self.counts: Counter[str] = Counter()
        self.stage_times = StageTimes()

    @property
    def _lookback(self) -> int:
        """The history the served versions need; it changes when the control state does."""
        return self._router.min_history

    async def process(self, messages: Sequence[RawMessage]) -> None:
        started = time.perf_counter()
        now_ms = self._clock_ms()
        closed: list[Candle] = []
        forming: list[Candle] = []
        dead_letters: list[DeadLetter] = []
        origin: dict[str, RawMessage] = {}
        for message in messages:
            try:
                candle = parse_candle(message.value, self._settings.candles, now_ms, message.key, self._allowed_timeframes)
            except InvalidCandle as error:
                self.counts[f"dlq.{error.kind}"] += 1
                dead_letters.append(_dead_letter(message, error, now_ms))
                continue
            (closed if candle.closed else forming).append(candle)
            origin[candle.id] = message
        timer = self.stage_times
        with timer.stage("store"):
            await self._store.write_forming(forming)
            writes = await self._store.write_closed(_last_of_each(closed), read_count=self._lookback + 1)
            writes = await self._rebuild_short_windows(writes, origin)
        with timer.stage("windows"):
            to_predict = self._windows_to_predict(writes)
        with timer.stage("predict"):
            predictions, shadow, members = await self._predict(to_predict, started) if to_predict else ([], [], {})
        with timer.stage("publish"):
            await self._publisher.publish(predictions, dead_letters, shadow)
        if self._member_sink is not None:  # before the outcomes that could settle them
            await self._member_sink.record(predictions, members)
        if self._outcomes is not None:  # before the predicted marks: a crash re-predicts, so re-registers
            with timer.stage("outcomes"):
                await self._outcomes.after_publish(predictions, shadow, [w.candle for w in writes])
        # Rows no model could answer stay unmarked: a replay of the candle is predicted again.
        answered = {p.id for p in predictions}
        await self._store.mark_predicted([w.candle for w, _ in to_predict if w.candle.id in answered])
        timer.batches += 1
        self.counts.update(messages=len(messages), closed=len(closed), forming=len(forming),
                           predicted=len(predictions), dead_letters=len(dead_letters))

    async def _rebuild_short_windows(self, writes: list[ClosedWrite], origin: dict[str, RawMessage]) -> list[ClosedWrite]:
        """A symbol seen for the first time by this process with too little history in Redis gets
        one rebuild attempt; its candles of this batch are then written again to read the restored window."""
        if self._rebuilder is None:
            return writes
        rebuilt: set[tuple[str, str]] = set()
        for write in writes:
            key = (write.candle.symbol, write.candle.timeframe)
            if key in self._rebuild_tried or len(write.open_time_ms) > self._lookback:
                continue
            self._rebuild_tried.add(key)
            message = origin[write.candle.id]
            if await self._rebuilder.rebuild(write.candle, message.topic, message.partition, message.offset):
                self.counts["windows_rebuilt"] += 1
                rebuilt.add(key)
        again = [i for i, w in enumerate(writes) if (w.candle.symbol, w.candle.timeframe) in rebuilt]
        if again:
            rewritten = await self._store.write_closed([writes[i].candle for i in again], read_count=self._lookback + 1)
            for index, write in zip(again, rewritten, strict=True):
                writes[index] = write
        return writes

    def _windows_to_predict(self, writes: Sequence[ClosedWrite]) -> list[tuple[ClosedWrite, np.ndarray]]:
        ready = []
        for write in writes:
            if write.already_predicted:
                self.counts["already_predicted"] += 1
                continue
            window = window_ending_at(write.open_time_ms, write.ohlcv, write.candle.open_time, self._lookback,
                                      TIMEFRAME_MS[write.candle.timeframe])
            if window is None:
                self.counts["insufficient_history"] += 1
                continue
            ready.append((write, window))
        return ready

    async def _predict(self, ready: Sequence[tuple[ClosedWrite, np.ndarray]], started: float
                       ) -> tuple[list[Prediction], list[Prediction], dict[str, dict[str, np.ndarray]]]:
        """(live predictions, shadow predictions, the live ones' member probabilities by prediction id
        where an ensemble served member by member answered); rows no model answered have neither."""
        windows = np.stack([window for _, window in ready])
        open_times = np.array([w.candle.open_time for w, _ in ready], dtype=np.int64)
        symbols = [w.candle.symbol for w, _ in ready]
        loop = asyncio.get_running_loop()
        routed = await loop.run_in_executor(self._executor, self._router.serve, symbols, windows, open_times)
        self.counts.update(routed.counts)
        latency_ms = round((time.perf_counter() - started) * 1000.0, 3)
        live = self._messages([(w, a) for (w, _), a in zip(ready, routed.answers, strict=True) if a is not None], latency_ms)
        shadow = self._messages([(w, a) for (w, _), a in zip(ready, routed.shadow, strict=False) if a is not None],
                                latency_ms)
        members = {w.candle.id: a.members for (w, _), a in zip(ready, routed.answers, strict=True)
                   if a is not None and a.members is not None}
        return live, shadow, members

    def _messages(self, rows: Sequence[tuple[ClosedWrite, RowAnswer]], latency_ms: float) -> list[Prediction]:
        """Prediction messages, the signal step batched per target over every row that has it."""
        targets: dict[int, dict] = {i: {} for i in range(len(rows))}
        for target in dict.fromkeys(t for _, answer in rows for t in answer.probabilities):
            having = [i for i, (_, answer) in enumerate(rows) if target in answer.probabilities]
            stacked = np.stack([rows[i][1].probabilities[target] for i in having])
            for i, part in zip(having, target_predictions(stacked, self._settings.signals, target), strict=True):
                targets[i][target] = part
        horizon_hours = self._settings.market.horizon_hours
        return [
            Prediction.model_construct(
                id=write.candle.id,
                symbol=write.candle.symbol,
                timeframe=write.candle.timeframe,
                open_time=write.candle.open_time,
                close=write.candle.close,
                horizon_hours=horizon_hours,
                targets=targets[i],
                model=ModelRef.model_construct(name=answer.model_name, version=answer.version),
                variant=answer.variant,
                degraded=answer.degraded,
                regime=answer.regime,
                latency_ms=latency_ms,
            )
            for i, (write, answer) in enumerate(rows)
        ]
