"""The worker's side of the control plane: receive, check, apply, share and report control messages.

Where the state lives, and why
------------------------------
The ``control`` topic is the signed log of what operators asked; the applied
state lives in Redis (``{prefix}control:state``, a JSON :class:`ControlState`,
and ``{prefix}control:revision``, a counter). Workers share one consumer
group, so each control message is handled by one worker: it verifies the
signature and freshness, checks the versions named (load, manifest, files,
sha256; for promote and ramp a warm-up on current windows and the recorded
parity), and steps the pure state machine inside a Redis WATCH/MULTI
transaction, so two workers can never interleave two changes. Every worker
polls the small revision key (``control.poll_interval_s``, 0.2 s) and swaps
in the new routing table when it moves: all workers serve the same state
within a second, without a restart, and a worker that starts later reads the
state before it serves its first candle.

Why not the topic alone (compacted, read from the beginning): the freshness
window makes an old signed message unacceptable by design, so replaying the
log cannot rebuild the state; compaction by the contract's key (the command)
would also drop the order between different commands. Redis already holds
the windows the worker cannot run without, and a transaction on it gives the
single order the state machine needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime

import numpy as np
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from redis.exceptions import WatchError

from configs.settings import Settings
from models.breaker import bad_rows
from models.control import CommandReceived, ControlEvent, ControlState, Event, ModelFailed, Tick, step
from models.control_message import ControlMessage, ControlRefused, encode_message, verify_message
from models.errors import ManifestError
from models.manifest import MANIFEST_NAME, load_manifest, verify_files
from models.parity_check import check_recorded_parity
from models.predictor import Predictor, predict_windows
from workers.adaptive import AdaptiveWeights, load_served
from workers.model_router import MODEL_ERRORS, ModelRouter
from workers.topics import ensure_topics

__all__ = ["RedisControlStore", "ControlPlane", "load_served_version", "send_control"]

log = logging.getLogger(__name__)


def load_served_version(settings: Settings, version: str, adaptive: AdaptiveWeights | None = None) -> Predictor:
    """Load, verify (manifest, files, sha256, feature definitions) and warm up one version's model set
    (an ensemble member by member in that mode, registered for live re-weighting with ``adaptive``)."""
    if not (settings.models_dir / version / MANIFEST_NAME).is_file():
        raise ManifestError(f"unknown version {version!r}: no {MANIFEST_NAME} in {settings.models_dir}")
    model_set = load_served(settings, version, adaptive)
    model_set.warm_up((1, 16))  # type: ignore[attr-defined]
    return model_set


async def send_control(settings: Settings, fields: dict[str, object]) -> None:
    """Send one signed control message (see :func:`models.control_message.build_message`), key = its command."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", client_id="bse-predict-control")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("control"), encode_message(fields), key=str(fields["command"]).encode())
    finally:
        await producer.stop()


class RedisControlStore:
    """The applied control state and its revision counter in Redis."""

    def __init__(self, client: aioredis.Redis, key_prefix: str = "") -> None:
        self._client = client
        self._state_key = f"{key_prefix}control:state"
        self._revision_key = f"{key_prefix}control:revision"

    async def revision(self) -> int:
        raw = await self._client.get(self._revision_key)
        return int(raw) if raw is not None else 0

    async def read(self) -> ControlState:
        raw = await self._client.get(self._state_key)
        return ControlState.model_validate_json(raw) if raw is not None else ControlState()

    async def transact(
        self, change: Callable[[ControlState], tuple[ControlState, list[ControlEvent]]]
    ) -> tuple[ControlState, list[ControlEvent]]:
        """Apply ``change`` to the stored state atomically (optimistic: retried when another worker wrote first)."""
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._state_key)
                    raw = await pipe.get(self._state_key)
                    before = ControlState.model_validate_json(raw) if raw is not None else ControlState()
                    after, events = change(before)
                    if after == before:
                        await pipe.unwatch()
                        return after, events
                    pipe.multi()
                    pipe.set(self._state_key, after.model_dump_json())
                    pipe.set(self._revision_key, after.revision)
                    await pipe.execute()
                    return after, events
                except WatchError:
                    continue


class ControlPlane:
    """One per worker process: handles control messages, keeps the router on the shared state."""

    def __init__(self, settings: Settings, router: ModelRouter, loader_executor: Executor) -> None:
        self._settings = settings
        self._router = router
        self._executor = loader_executor
        self._client: aioredis.Redis | None = None
        self._store: RedisControlStore | None = None
        self._producer: AIOKafkaProducer | None = None
        self._start_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()  # the poll and a just-handled message never swap tables out of order
        self._unloadable_revision: int | None = None  # logged once, retried on every poll
        self._events_topic = settings.topic("control.events")
        secret = settings.control_secret
        self._secret = (secret.get_secret_value() or None) if secret is not None else None

    async def start(self) -> None:
        """Connect once (whichever of the agents and timers gets here first)."""
        async with self._start_lock:
            if self._store is not None:
                return
            self._client = aioredis.Redis.from_url(self._settings.redis_url)
            producer = AIOKafkaProducer(bootstrap_servers=self._settings.kafka_bootstrap, linger_ms=0, acks="all",
                                        client_id="bse-predict-control")
            await producer.start()
            self._producer = producer
            self._store = RedisControlStore(self._client, key_prefix=self._settings.topic_prefix)

    @property
    def started(self) -> bool:
        return self._store is not None

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._client is not None:
            await self._client.aclose()

    # -- receiving ---------------------------------------------------------------------------

    async def handle(self, raw: bytes) -> list[ControlEvent]:
        """One message of the ``control`` topic: verified, checked, applied or refused, and reported."""
        assert self._store is not None
        now = datetime.now(UTC)
        config = self._settings.control
        try:
            message = verify_message(raw, self._secret, now, config.max_age_s, config.max_future_s)
        except ControlRefused as refusal:
            event = ControlEvent(status="refused", reason=f"{refusal.kind}: {refusal.reason}", at=now,
                                 id=refusal.message_id, command=refusal.command)
            await self._report([event])
            return [event]
        loop = asyncio.get_running_loop()
        problems, notes = await loop.run_in_executor(self._executor, self._check_versions, message)
        _, events = await self._store.transact(
            lambda state: step(state, CommandReceived(message, problems, self._router.default_live), now,
                               config.max_age_s + config.max_future_s))
        if notes:  # what the checks could not cover goes on the record of an applied command
            said = "; ".join(f"{version}: {note}" for version, note in notes.items())
            events = [e.model_copy(update={"reason": f"{e.reason} ({said})"}) if e.status == "applied" else e
                      for e in events]
        await self._report(events)
        await self.sync()
        return events

    def _check_versions(self, message: ControlMessage) -> tuple[dict[str, str], dict[str, str]]:
        """(version -> why it cannot serve, version -> what was not checked) for the versions the
        message names (blocking: loads models)."""
        if message.command == "ab":
            named = list(message.args["variants"])
        else:
            named = [message.args["version"]] if message.args.get("version") else []
        problems: dict[str, str] = {}
        notes: dict[str, str] = {}
        for version in named:
            try:
                model = self._router.load(version)
            except (ManifestError, *MODEL_ERRORS) as error:
                problems[version] = str(error)[:300]
                continue
            if message.command in ("promote", "ramp"):
                try:  # again, even when loaded before: the files may have changed since
                    version_dir = self._settings.models_dir / version
                    verify_files(version_dir, load_manifest(version_dir))
                except ManifestError as error:
                    problems[version] = str(error)[:300]
                    continue
                trouble, note = self._warm_up_problem(model)
                if trouble is not None:
                    problems[version] = trouble
                elif note is not None:
                    notes[version] = note
        return problems, notes

    def _warm_up_problem(self, model: Predictor) -> tuple[str | None, str | None]:
        """Run the version on the current windows, then on its recorded parity samples against the
        recorded native outputs (:mod:`models.parity_check`): (why it fails or None, what was not checked)."""
        recent = self._router.recent_windows
        if recent is None:  # this worker has seen no candle yet: flat windows still exercise every graph
            windows, open_times = np.ones((4, model.min_history, 5)), np.zeros(4, dtype=np.int64)
        else:
            windows, open_times = recent
        try:
            out = predict_windows(model, windows[:, -model.min_history:], open_times)
        except MODEL_ERRORS as error:
            return f"warm-up failed: {type(error).__name__}: {error}"[:300], None
        bad = bad_rows(out, len(open_times))
        if bad.any():
            return f"warm-up on {len(open_times)} current windows: {int(bad.sum())} rows NaN or out of range", None
        manifest = getattr(model, "manifest", None)
        if manifest is None:  # not a version from the registry (no recorded parity to hold it to)
            return None, None
        try:
            verdict = check_recorded_parity(model, manifest, self._settings.models_dir / model.version)
        except MODEL_ERRORS as error:
            return f"parity: run on the recorded samples failed: {type(error).__name__}: {error}"[:300], None
        return (verdict.problem[:300] if verdict.problem else None), verdict.note

    # -- sharing -----------------------------------------------------------------------------

    async def sync(self) -> None:
        """Swap in the stored state when its revision moved (the poll every worker runs)."""
        assert self._store is not None
        async with self._sync_lock:
            if await self._store.revision() == self._router.table.revision:
                return
            state = await self._store.read()
            loop = asyncio.get_running_loop()
            try:
                table = await loop.run_in_executor(self._executor, self._router.table_for, state)
            except (ManifestError, *MODEL_ERRORS) as error:
                # Another worker accepted a version this one cannot load (a file changed since?): keep serving.
                if self._unloadable_revision != state.revision:
                    log.error("control revision %d not applied here, still serving revision %d: %s",
                              state.revision, self._router.table.revision, error)
                    self._unloadable_revision = state.revision
                return
            self._router.table = table
            log.info("control revision %d applied: %s", state.revision, json.dumps(state.summary()))

    async def follow(self) -> None:
        """Poll the revision for as long as the worker runs (a task of the candle agent: Faust timers
        only start once the group has assigned partitions, seconds after a worker joins)."""
        while True:
            await self.sync()
            await asyncio.sleep(self._settings.control.poll_interval_s)

    async def tick(self) -> None:
        """Breakers that opened, then the passing time (scheduled ramps, forgotten ids)."""
        assert self._store is not None
        now = datetime.now(UTC)
        config = self._settings.control
        tripped, self._router.tripped = self._router.tripped, []  # appended to by the inference thread
        events: list[Event] = [ModelFailed(v, reason) for v, reason in tripped]
        events.append(Tick())
        reported: list[ControlEvent] = []
        for event in events:
            _, out = await self._store.transact(
                lambda state, event=event: step(state, event, now, config.max_age_s + config.max_future_s))
            reported += out
        await self._report(reported)

    async def _report(self, events: list[ControlEvent]) -> None:
        assert self._producer is not None
        for event in events:
            (log.info if event.status != "refused" else log.warning)("control %s: %s %s", event.status,
                                                                      event.command, event.reason)
            key = (event.command or "unknown").encode()
            await self._producer.send_and_wait(self._events_topic, event.model_dump_json().encode(), key=key)
