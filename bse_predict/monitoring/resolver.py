"""The worker's outcome resolver: register published predictions, settle them on later candles.

After the processor has published a batch's predictions (live and shadow), it
hands them and the batch's closed candles to :meth:`OutcomeResolver.after_publish`:

1. register every (prediction, target) as pending in the store (idempotent);
2. read the pending outcomes of the symbols that got a closed candle, feed them
   those candles in open-time order, every symbol at once (:func:`bse_predict.monitoring.outcomes.settle_books`);
3. publish the settled outcomes to ``outcomes`` and wait for the broker's ack;
4. only then remove them from the store, then tell the listeners (live
   metrics, the champion/challenger test).

A crash between 3 and 4 publishes the same outcome again after the replay
(same content: ``resolved_at`` is candle time), never loses one; a crash
between 4 and the listeners costs the listeners one observation, never a
double count. A symbol's candles all go to one partition, hence one worker, so
no two workers settle the same symbol at once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from configs.settings import Settings
from bse_predict.monitoring.outcomes import (PendingBook, PendingOutcome, Settlement, Stream, pending_from_prediction,
                                             settle_books, to_outcome)
from bse_predict.candles.schema import Candle, Outcome, Prediction
from bse_predict.serving.signals import target_label
from bse_predict.monitoring.outcome_store import OutcomeStore
from bse_predict.connections.reliable_producer import ReliableWriter

__all__ = ["PredictionListener", "BatchListener", "OutcomeListener", "OutcomePublisher", "KafkaOutcomePublisher", "OutcomeResolver"]


class PredictionListener(Protocol):
    def on_published(self, live: Sequence[Prediction], shadow: Sequence[Prediction]) -> None:
        """Called once per batch with the predictions just published (before they are registered)."""


class BatchListener(Protocol):
    async def on_batch(self, live: Sequence[Prediction], live_features: Callable[[], np.ndarray]) -> None:
        """Called once per batch that has live predictions, with them and their feature rows (drift)."""


class OutcomeListener(Protocol):
    async def on_settled(self, settlements: Sequence[Settlement]) -> None:
        """Called once per batch with the outcomes just published and settled."""


class OutcomePublisher(Protocol):
    async def publish_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Send them and return only when the broker acknowledged every one."""


class KafkaOutcomePublisher(ReliableWriter):
    """Outcomes keyed by symbol through a :class:`~bse_predict.connections.reliable_producer.ReliableProducer`."""

    def __init__(self, kafka: Mapping[str, Any], topic: str, request_timeout_ms: int = 30_000) -> None:
        super().__init__(kafka, "bse-predict-outcomes", request_timeout_ms)
        self._topic = topic

    async def publish_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """One record batch per partition (as :class:`bse_predict.stream.publisher.KafkaPublisher` does): a
        ``send`` per outcome cost more than the rest of the outcome step."""
        if outcomes:
            await self._producer.send_all([(self._topic, [(o.symbol.encode(), o.model_dump_json().encode())
                                                          for o in outcomes])])

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """One more record on another topic (control decisions, events) through the same producer."""
        await self._producer.send_one(topic, key, value)


class OutcomeResolver:
    """See the module docstring; ``counts`` holds registered / settled totals for the stats log."""

    def __init__(self, settings: Settings, store: OutcomeStore, publisher: OutcomePublisher,
                 listeners: Sequence[OutcomeListener] = (),
                 prediction_listeners: Sequence[PredictionListener] = (),
                 batch_listeners: Sequence[BatchListener] = ()) -> None:
        market = settings.market
        self._target_fracs = {target_label(pct): pct / 100.0 for pct in market.targets_pct}
        self._horizon_candles = market.horizon_candles
        self._step_ms = market.timeframe_ms
        self._store = store
        self._publisher = publisher
        self._listeners = list(listeners)
        self._prediction_listeners = list(prediction_listeners)
        self._batch_listeners = list(batch_listeners)
        self.counts: Counter[str] = Counter()

    def _pending_of(self, predictions: Sequence[Prediction], stream: Stream) -> list[PendingOutcome]:
        return [item for p in predictions
                for item in pending_from_prediction(p, self._target_fracs, self._horizon_candles, self._step_ms, stream)]

    async def after_publish(self, live: Sequence[Prediction], shadow: Sequence[Prediction],
                            closed: Sequence[Candle], live_features: Callable[[], np.ndarray] | None = None
                            ) -> list[Outcome]:
        """Register ``live`` and ``shadow`` predictions, settle what ``closed`` answers; the outcomes published.
        ``live_features()`` gives the live predictions' feature rows, for the batch listeners (drift)."""
        for observer in self._prediction_listeners:
            observer.on_published(live, shadow)
        items = self._pending_of(live, "live") + self._pending_of(shadow, "shadow")
        self.counts["outcomes_registered"] += await self._store.register(items)
        if live and live_features is not None:
            for listener in self._batch_listeners:
                await listener.on_batch(live, live_features)
        settlements = await self._settle(closed)
        if not settlements:
            return []
        outcomes = [to_outcome(s) for s in settlements]
        await self._publisher.publish_outcomes(outcomes)
        await self._store.settle([s.pending for s in settlements])
        self.counts["outcomes_published"] += len(outcomes)
        for listener in self._listeners:
            await listener.on_settled(settlements)
        return outcomes

    async def restore(self, live: Sequence[Prediction], shadow: Sequence[Prediction],
                      candles: Sequence[tuple[int, Sequence[float]]]) -> int:
        """Register predictions read back after Redis lost their pending outcomes and settle them on one
        symbol's ``candles`` since (open_time, ohlcv; in order): what those candles answered is published
        again (the same outcome as before, by id and target), the rest waits as pending. The listeners
        are not told: what they kept in Redis went with the rest. Returns how many were published."""
        items = self._pending_of(live, "live") + self._pending_of(shadow, "shadow")
        if not items:
            return 0
        self.counts["outcomes_restored"] += await self._store.register(items)
        settlements = PendingBook(items).settle_in_order(candles)
        if settlements:
            await self._publisher.publish_outcomes([to_outcome(s) for s in settlements])
            await self._store.settle([s.pending for s in settlements])
        return len(settlements)

    async def _settle(self, closed: Sequence[Candle]) -> list[Settlement]:
        by_symbol: dict[tuple[str, str], list[Candle]] = defaultdict(list)
        for candle in closed:
            by_symbol[(candle.symbol, candle.timeframe)].append(candle)
        if not by_symbol:
            return []
        pending = await self._store.pending(sorted(by_symbol))
        return settle_books([(pending[key], [(c.open_time, (c.open, c.high, c.low, c.close, c.volume))
                                             for c in sorted(candles, key=lambda c: c.open_time)])
                             for key, candles in by_symbol.items()])
