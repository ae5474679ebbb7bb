"""The worker's composition root: every part of a worker process, built from the settings in one place.

:class:`WorkerParts` holds what the process shares (the model router, the control
plane, the live-outcome side, the inference executor, the stall watch);
:meth:`WorkerParts.candle_agent` builds what one candle agent owns (its Redis
client, window store, publishers, outcome resolver, processor and batch guard)
as a :class:`CandleAgentParts`. The Faust app (:mod:`bse_predict.stream.app`) only
declares topics, agents and timers and calls these parts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from bse_predict.connections.clients import connect_redis, kafka_options
from bse_predict.connections.topics import TopicNames
from bse_predict.control.plane import ControlPlane
from bse_predict.ensembles.adaptive_weights import AdaptiveWeights, load_served_version
from bse_predict.monitoring.live_outcomes import LiveOutcomes
from bse_predict.monitoring.prediction_history import PredictionHistory
from bse_predict.monitoring.resolver import KafkaOutcomePublisher
from bse_predict.serving.model_set import Predictor
from bse_predict.serving.router import ModelRouter
from bse_predict.stream.batch_guard import BatchGuard, FaultInjector
from bse_predict.stream.processor import CandleProcessor
from bse_predict.stream.publisher import KafkaPublisher
from bse_predict.stream.rebuild import WindowRebuilder
from bse_predict.stream.stall_watch import StallWatch
from bse_predict.stream.symbol_registry import RedisSymbolRegistry
from bse_predict.stream.window_store import RedisWindowStore
from configs.settings import Settings

__all__ = ["WorkerParts", "CandleAgentParts"]

log = logging.getLogger(__name__)


@dataclass
class CandleAgentParts:
    """What one candle agent owns; :meth:`start` opens it (faults retried by the guard), :meth:`close` at stop."""

    processor: CandleProcessor
    guard: BatchGuard
    client: aioredis.Redis
    store: RedisWindowStore
    publisher: KafkaPublisher
    outcome_publisher: KafkaOutcomePublisher
    rebuilder: WindowRebuilder
    history: PredictionHistory
    parts: WorkerParts

    async def start(self) -> None:
        control = self.parts.control
        await control.start()
        await control.sync()  # a worker that starts later serves the fleet's state from its first candle
        await self.publisher.start()
        await self.outcome_publisher.start()
        adaptive = self.parts.adaptive
        if adaptive is not None:
            adaptive.attach(self.client)
            await adaptive.refresh()

    async def close(self) -> None:
        """Every closing step; a failing Redis or broker at stop is logged, the rest still close."""
        await _close_quietly(self.store.flush(), self.parts.live_outcomes.flush(), self.publisher.stop(), self.outcome_publisher.stop(),
                             self.rebuilder.close(), self.history.close(), self.client.aclose(),
                             self.parts.stall.close())


@dataclass
class WorkerParts:
    """What a worker process shares across its agents; see the module docstring."""

    settings: Settings
    router: ModelRouter
    control: ControlPlane
    live_outcomes: LiveOutcomes
    executor: ThreadPoolExecutor
    stall: StallWatch
    adaptive: AdaptiveWeights | None = None
    fault_point: FaultInjector | None = None
    agents: list[CandleAgentParts] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, predictor: Predictor, group_id: str, client_id: str,
              adaptive: AdaptiveWeights | None = None) -> WorkerParts:
        """The shared parts; ``predictor`` serves until the control state names others (versions load off
        the event loop); ``group_id`` and ``client_id`` are the Faust app's, for the stall watch."""
        router = ModelRouter(predictor, partial(load_served_version, settings, adaptive=adaptive),
                             settings.control.breaker)
        control = ControlPlane(settings, router, ThreadPoolExecutor(max_workers=1, thread_name_prefix="control"))
        live_outcomes = LiveOutcomes(
            settings,
            breaker_states=lambda: {m.version: router.breaker(m.version).status for m in router.table.models()},
            control_counts=lambda: {**{f"control_fault.{k}": v for k, v in control.faults.items()},
                                    "control_restored": control.restores})
        faults = settings.worker.faults
        return cls(
            settings=settings, router=router, control=control, live_outcomes=live_outcomes,
            executor=ThreadPoolExecutor(max_workers=settings.worker.inference_threads, thread_name_prefix="inference"),
            stall=StallWatch(kafka_options(settings), group_id, client_id, TopicNames.of(settings).candles,
                             faults.stall_s),
            adaptive=adaptive,
            fault_point=FaultInjector(faults.inject_failure_probability) if faults.inject_failure_probability else None,
        )

    def candle_agent(self) -> CandleAgentParts:
        """The parts of one candle agent, with their own clients (built inside the agent, on its loop)."""
        settings, names = self.settings, TopicNames.of(self.settings)
        faults = settings.worker.faults
        silent_expire_ms = settings.window.silent_expire_hours * 3_600_000
        client = connect_redis(settings, faults)
        store = RedisWindowStore(client, settings.window.retain_candles, key_prefix=settings.topic_prefix,
                                 expire_after_ms=silent_expire_ms)
        publisher = KafkaPublisher(kafka_options(settings), names.predictions, names.candles_dlq,
                                   names.predictions_shadow, faults.kafka_request_timeout_ms)
        outcome_publisher = KafkaOutcomePublisher(kafka_options(settings), names.outcomes,
                                                  faults.kafka_request_timeout_ms)
        resolver = self.live_outcomes.resolver(client, outcome_publisher,
                                               extra_listeners=[self.adaptive] if self.adaptive else [])
        history = PredictionHistory(settings, settings.window.rebuild_scan_messages, publisher.partitions_for)
        rebuilder = WindowRebuilder(settings, store, read_count=self.router.min_history + 1)
        processor = CandleProcessor(
            settings, store, self.router, publisher, self.executor, rebuilder, outcomes=resolver,
            member_sink=self.adaptive, fault_point=self.fault_point, prediction_history=history,
            symbols=RedisSymbolRegistry(client, settings.worker.max_symbols, silent_expire_ms,
                                        key_prefix=settings.topic_prefix),
            on_routed=self.control.note_routed)
        self.live_outcomes.watch(processor)

        async def recover(kind: str) -> None:  # after a broker or network fault: fresh producers for the next try
            if kind in ("kafka", "network"):
                await publisher.restart()
                await outcome_publisher.restart()

        agent = CandleAgentParts(processor, BatchGuard(faults, processor.counts, recover=recover), client, store,
                                 publisher, outcome_publisher, rebuilder, history, self)
        self.agents.append(agent)
        return agent

    @property
    def busy(self) -> bool:
        """Whether any agent has a batch in hand (the stall watch waits for those)."""
        return any(agent.guard.in_hand for agent in self.agents)


async def _close_quietly(*closing: Awaitable[None]) -> None:
    for step in closing:
        try:
            await step
        except (RedisError, KafkaError, OSError, asyncio.TimeoutError) as error:
            log.warning("closing at stop: %r", error)
