"""Wires the live-outcome side into a worker app: resolver, live scores, the challenger watch, drift, /metrics.

``LiveOutcomes(settings)`` builds, inside the candle agent, the
:class:`~bse_predict.monitoring.resolver.OutcomeResolver` with its listeners, and
:meth:`LiveOutcomes.refresh_quietly` (run by the app's timer) moves the Prometheus
gauges to the watched processors' counters, the group's consumer lag and the
live scores in Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import faust
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from configs.settings import Settings
from bse_predict.errors import ManifestError
from bse_predict.serving.manifest import list_versions
from bse_predict.monitoring.challenger import ChallengerWatch
from bse_predict.monitoring.drift_monitor import DriftMonitor
from bse_predict.monitoring.metrics import RedisLiveScores, WorkerMetrics
from bse_predict.monitoring.outcome_store import RedisOutcomeStore
from bse_predict.monitoring.resolver import KafkaOutcomePublisher, OutcomeListener, OutcomeResolver
from bse_predict.connections.topics import TopicNames

__all__ = ["LiveOutcomes", "version_order"]

log = logging.getLogger(__name__)


def version_order(settings: Settings) -> Callable[[str, str], bool]:
    """``is_newer(a, b)``: a's manifest was created after b's (names break ties and order unknown versions)."""
    ranks: dict[str, tuple[str, str]] = {}

    def rank(version: str) -> tuple[str, str]:
        if version not in ranks:
            try:
                ranks.update({m.version: (m.created_at.isoformat(), m.version) for m in list_versions(settings.models_dir)})
            except ManifestError as exc:
                log.warning("version order: %s", exc)
        return ranks.get(version, ("", version))

    return lambda a, b: rank(a) > rank(b)


class LiveOutcomes:
    """See the module docstring."""

    def __init__(self, settings: Settings, breaker_states: Callable[[], Mapping[str, str]] | None = None,
                 control_counts: Callable[[], Mapping[str, int]] | None = None) -> None:
        self._settings = settings
        self._names = TopicNames.of(settings)
        self._processors: list[Any] = []
        self._breaker_states = breaker_states
        self._control_counts = control_counts
        self._resolvers: list[OutcomeResolver] = []
        self._scores: list[RedisLiveScores] = []  # one per candle agent (each on its own client)
        self._serving = False
        self._refresh_failing = False
        self._served_revision: Callable[[], int] | None = None
        self.metrics = WorkerMetrics()

    def serving(self, revision: Callable[[], int]) -> None:
        """The candle agent serves: ``/metrics`` shows the control revision (``revision()``) from now on."""
        self._served_revision = revision
        self.metrics.control_revision.set(revision())

    def watch(self, processor: Any) -> None:
        """Count ``processor``'s counters (``processor.counts``) in ``/metrics``."""
        self._processors.append(processor)

    async def refresh_quietly(self, app: faust.App) -> None:
        """:meth:`refresh`; a failing Redis is logged once (and its recovery), the gauges keep their values."""
        try:
            await self.refresh(app)
        except (RedisError, OSError, asyncio.TimeoutError) as error:  # the next refresh tries again
            if not self._refresh_failing:
                log.warning("refreshing /metrics failed (%r); the gauges keep their last values", error)
            self._refresh_failing = True
        else:
            if self._refresh_failing:
                log.warning("refreshing /metrics works again")
            self._refresh_failing = False

    def resolver(self, client: aioredis.Redis, publisher: KafkaOutcomePublisher,
                 extra_listeners: Sequence[OutcomeListener] = ()) -> OutcomeResolver | None:
        """The outcome resolver of one candle agent, its listeners (and ``extra_listeners``) attached;
        None when outcomes are off."""
        settings = self._settings
        port = settings.live_metrics.metrics_port
        if port and not self._serving:
            self.metrics.serve(port)
            self._serving = True
        if not settings.outcomes.enabled:
            return None
        scores = RedisLiveScores(client, settings)
        self._scores.append(scores)
        listeners: list[OutcomeListener] = [scores, *extra_listeners]
        if settings.challenger.enabled:
            listeners.append(ChallengerWatch(client, settings, publisher, version_order(settings),
                                             self._names.control, self._names.control_events))
        store = RedisOutcomeStore(client, settings.outcomes.settled_retain_hours * 3_600_000,
                                  key_prefix=settings.topic_prefix,
                                  expire_after_ms=settings.window.silent_expire_hours * 3_600_000)
        drift = [DriftMonitor(client, settings, publisher, self._names.control_events, on_psi=self.metrics.set_drift)
                 ] if settings.drift.enabled else []
        resolver = OutcomeResolver(settings, store, publisher, listeners, prediction_listeners=[self.metrics],
                                   batch_listeners=drift)
        self._resolvers.append(resolver)
        return resolver

    async def flush(self) -> None:
        """Send the live-score sums still kept in process (at stop)."""
        for scores in self._scores:
            await scores.flush()

    async def refresh(self, app: faust.App) -> None:
        """Move the Prometheus gauges and counters to the current state."""
        if self._served_revision is not None:
            self.metrics.control_revision.set(self._served_revision())
        control = [self._control_counts()] if self._control_counts is not None else []
        self.metrics.set_counts([*(p.counts for p in self._processors), *(r.counts for r in self._resolvers), *control])
        assigned = app.consumer.assignment()
        committed = {tp: offset for tp, offset in (app.monitor.tp_committed_offsets or {}).items() if tp in assigned}
        self.metrics.set_lag(self._names.candles, committed, app.consumer.highwater)
        if self._breaker_states is not None:
            self.metrics.set_breakers(self._breaker_states())
        self.metrics.forget_quiet_symbols(self._settings.window.silent_expire_hours * 3600)
        if self._scores:
            await self.flush()
            self.metrics.set_scores(await self._scores[0].read())
