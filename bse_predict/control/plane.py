"""The worker's side of the control plane: receive, check, apply, share, report and keep control states.

Where the state lives, and why
------------------------------
The ``control`` topic is the signed log of what operators asked. The applied
state is served from Redis (``{prefix}control:state``, a JSON
:class:`ControlState`, and ``{prefix}control:revision``, a counter) and kept in
Kafka: every stored change is also published, signed, to ``control.state``
(:mod:`bse_predict.control.state_log`), from which a worker restores it when Redis has
lost it. Workers share one consumer group, so each control message is handled
by one worker: it verifies the message (size, JSON, signature, freshness),
checks the versions named (load, manifest, files, sha256; for promote and ramp
a warm-up on current windows and the recorded parity), and steps the pure state
machine inside a Redis WATCH/MULTI transaction, so two workers can never
interleave two changes. Every worker polls the small revision key
(``control.poll_interval_s``, 0.2 s) and swaps in the new routing table when it
moves: all workers serve the same state within a second, without a restart, and
a worker that starts later reads the state before it serves its first candle.

Recovery: a worker compares Redis with ``control.state`` when it starts, and
again whenever it finds the state missing after having seen one, and before a
change would be written over a missing state. A state missing in Redis (or
older, by sequence, than the log's newest) is replaced by the log's
highest-sequence state in one transaction that writes only if it is still
missing or older, so workers restoring at once agree; one newer than the log's
newest is published. The restored state keeps its revision (every worker goes
on serving what it served) and its seen ids (a replayed message is refused).

Why not the ``control`` topic alone (compacted, read from the beginning): the
freshness window makes an old signed message unacceptable by design, so
replaying the log cannot rebuild the state; compaction by the contract's key
(the command) would also drop the order between different commands.

Keys: messages are verified with :func:`control_keys` (the signing key and those
of ``BSE_CONTROL_KEYS``, picked by the message's ``key_id``); ``control.state`` is
signed with the signing key and read with any of them. Every applied or refused
message is reported on ``control.events`` with its id, which
:func:`send_control_and_wait` (the ``control`` command) waits for.

Faults: transient Redis and Kafka errors are retried in place
(:mod:`bse_predict.connections.transient`): a message is handled, a tick applied, a poll done
once the servers answer again, never dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

import numpy as np
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import WatchError

from configs.settings import Settings, parse_control_keys
from bse_predict.serving.breaker import bad_rows
from bse_predict.control.state_machine import CommandReceived, ControlEvent, ControlState, Event, ModelFailed, Tick, step
from bse_predict.control.messages import ControlKeys, ControlMessage, ControlRefused, encode_message, verify_message
from bse_predict.errors import ManifestError
from bse_predict.serving.manifest import load_manifest, verify_files
from bse_predict.serving.parity_check import check_recorded_parity
from bse_predict.serving.model_set import Predictor, predict_windows
from bse_predict.control.state_log import ControlStateLog
from bse_predict.connections.clients import connect_redis, kafka_options
from bse_predict.features.inputs import BatchInputs
from bse_predict.serving.router import MODEL_ERRORS, ModelRouter, RoutedBatch
from bse_predict.connections.topics import ensure_topics
from bse_predict.connections.transient import Backoff, retry_transient

__all__ = ["RedisControlStore", "Transacted", "ControlPlane", "send_control",
           "send_control_and_wait", "control_keys", "OUTCOME_STATUSES"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_REASON = 500  # characters of a refusal's reason on control.events


async def send_control(settings: Settings, fields: dict[str, object]) -> None:
    """Send one signed control message (see :func:`bse_predict.control.messages.build_message`), key = its command."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", client_id="bse-predict-control")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("control"), encode_message(fields), key=str(fields["command"]).encode())
    finally:
        await producer.stop()


OUTCOME_STATUSES = ("applied", "refused")  # the control.events statuses that answer a message (by its id)
_ASSIGN_TIMEOUT_S = 15.0  # the reader of control.events gets its partitions in well under a second


def control_keys(settings: Settings) -> ControlKeys | None:
    """The keys this process verifies control messages with: BSE_CONTROL_SECRET (id BSE_CONTROL_KEY_ID)
    and those of BSE_CONTROL_KEYS; None without a BSE_CONTROL_SECRET (every message is refused)."""
    secret = settings.control_secret.get_secret_value() if settings.control_secret is not None else ""
    if not secret:
        return None
    extra = parse_control_keys(settings.control_keys.get_secret_value()) if settings.control_keys is not None else {}
    return ControlKeys.of(settings.control_key_id, secret, extra)


async def send_control_and_wait(settings: Settings, fields: dict[str, object], wait_s: float,
                                on_sent: Callable[[], None] | None = None) -> ControlEvent | None:
    """Send one signed control message and wait up to ``wait_s`` for a worker's answer about it on
    ``control.events`` (the first ``applied`` or ``refused`` record carrying its id); None when none came.
    ``on_sent`` is called once the broker has acknowledged the message.

    The reader is placed at the topic's end offsets before the message is sent, so the answer cannot
    be missed, however fast it comes."""
    await ensure_topics(settings)
    topic = settings.topic("control.events")
    # Subscribed without a group: every partition of the topic is this reader's, none committed.
    consumer = AIOKafkaConsumer(topic, **kafka_options(settings), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="latest", client_id="bse-predict-control")
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ASSIGN_TIMEOUT_S
        while not consumer.assignment():
            if loop.time() > deadline:
                raise KafkaTimeoutError(f"no partitions of {topic} assigned in {_ASSIGN_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)  # fixed now, before the message exists
        await send_control(settings, fields)
        if on_sent is not None:
            on_sent()
        deadline = loop.time() + wait_s
        while (left_s := deadline - loop.time()) > 0:
            batches = await consumer.getmany(timeout_ms=max(1, int(min(left_s, 0.5) * 1000)))
            for records in batches.values():
                for record in records:
                    event = _answer(record.value, str(fields["id"]))
                    if event is not None:
                        return event
        return None
    finally:
        await consumer.stop()


def _answer(raw: bytes | None, message_id: str) -> ControlEvent | None:
    """The ``control.events`` record ``raw`` as the answer about ``message_id``; None when it is not one
    (another message's, a ramp step, a challenger decision, a record this version cannot read)."""
    try:
        fields = json.loads(raw or b"")
    except ValueError:
        return None
    if not isinstance(fields, dict) or fields.get("id") != message_id or fields.get("status") not in OUTCOME_STATUSES:
        return None
    try:  # fields a newer worker added are left out
        return ControlEvent.model_validate({k: v for k, v in fields.items() if k in ControlEvent.model_fields})
    except ValueError:
        return None


class Transacted(NamedTuple):
    state: ControlState  # the stored state after the change
    events: list[ControlEvent]
    written: bool  # False: the change left the state as it was, nothing was stored


class RedisControlStore:
    """The applied control state and its revision counter in Redis."""

    def __init__(self, client: aioredis.Redis, key_prefix: str = "") -> None:
        self._client = client
        self._state_key = f"{key_prefix}control:state"
        self._revision_key = f"{key_prefix}control:revision"

    async def ping(self) -> None:
        await self._client.ping()

    async def revision(self) -> int | None:
        """The stored revision; None when Redis holds no state."""
        raw = await self._client.get(self._revision_key)
        return int(raw) if raw is not None else None

    async def read(self) -> ControlState | None:
        raw = await self._client.get(self._state_key)
        return ControlState.model_validate_json(raw) if raw is not None else None

    async def transact(self, change: Callable[[ControlState], tuple[ControlState, list[ControlEvent]]],
                       on_missing: Callable[[], Awaitable[None]] | None = None) -> Transacted:
        """Apply ``change`` to the stored state atomically (optimistic: retried when another worker wrote
        first); a stored change gets the next ``sequence``. When no state is stored and ``change`` would
        write one, ``on_missing`` runs first (once: a restore from the log) and the transaction starts over."""
        asked = False
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._state_key)
                    raw = await pipe.get(self._state_key)
                    before = ControlState.model_validate_json(raw) if raw is not None else ControlState()
                    after, events = change(before)
                    if after == before:
                        await pipe.unwatch()
                        return Transacted(after, events, written=False)
                    if raw is None and on_missing is not None and not asked:
                        await pipe.unwatch()
                        asked = True
                        await on_missing()
                        continue
                    after = after.model_copy(update={"sequence": before.sequence + 1})
                    pipe.multi()
                    pipe.set(self._state_key, after.model_dump_json())
                    pipe.set(self._revision_key, after.revision)
                    await pipe.execute()
                    return Transacted(after, events, written=True)
                except WatchError:
                    continue

    async def restore(self, state: ControlState) -> tuple[bool, ControlState | None]:
        """Store ``state`` if the stored one is missing or has a lower sequence, atomically: of workers
        restoring at once, one writes and the others find it done. (Whether it wrote, the state it found.)"""
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._state_key)
                    raw = await pipe.get(self._state_key)
                    stored = ControlState.model_validate_json(raw) if raw is not None else None
                    if stored is not None and stored.sequence >= state.sequence:
                        await pipe.unwatch()
                        return False, stored
                    pipe.multi()
                    pipe.set(self._state_key, state.model_dump_json())
                    pipe.set(self._revision_key, state.revision)
                    await pipe.execute()
                    return True, stored
                except WatchError:
                    continue


class ControlPlane:
    """One per worker process: handles control messages, keeps the router on the shared state.

    Its connections (Redis; a producer for ``control.events`` and ``control.state``; a reader of
    ``control.state``) open on first use, and again after :meth:`stop`: an agent that stops it never
    leaves another agent without them. Transient Redis and Kafka faults are retried in place
    (:mod:`bse_predict.connections.transient`): ``faults`` counts the failed tries by service (``redis``, ``kafka``),
    ``restores`` the states this worker restored into Redis from ``control.state``.
    """

    def __init__(self, settings: Settings, router: ModelRouter, loader_executor: Executor) -> None:
        self._settings = settings
        self._router = router
        self._executor = loader_executor
        self.faults: Counter[str] = Counter()
        self.restores = 0
        self._client: aioredis.Redis | None = None
        self._store: RedisControlStore | None = None
        self._producer: AIOKafkaProducer | None = None
        self._connect_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()  # the poll and a just-handled message never swap tables out of order
        self._unloadable_revision: int | None = None  # logged once, retried on every poll
        self._reconciled = False  # Redis and control.state compared once since this process started
        self._check_log = True  # a missing state sends the poll to the log: until it found none, and after a state was seen
        self._events_topic = settings.topic("control.events")
        self._backoff = Backoff(settings.control.retry_initial_s, settings.control.retry_max_s)
        self._keys = control_keys(settings)
        self._secret = self._keys.secrets[self._keys.signing_id] if self._keys is not None else None
        self._log = ControlStateLog(settings, self._secret, tuple(self._keys.secrets.values()) if self._keys else ())
        self._tripped: list[tuple[str, str]] = []  # breakers opened since the last tick; event loop only
        self._recent_windows: tuple[np.ndarray, np.ndarray] | None = None  # replaced whole; read by the loader thread

    def note_routed(self, routed: RoutedBatch, inputs: BatchInputs) -> None:
        """After each batch (on the event loop): the breakers it opened become ``ModelFailed`` events at
        the next tick, and its newest windows are what a version about to be served is warmed up on."""
        self._tripped.extend(routed.tripped)
        self._recent_windows = (inputs.windows[-64:], inputs.open_time_ms[-64:])

    async def start(self) -> None:
        """Open the connections now, retrying while Redis or Kafka is down; a no-op when they are open."""
        async def connect() -> None:
            await self._redis_store().ping()
            await self._open_producer()

        await self._retrying("starting the control plane", connect)

    async def stop(self) -> None:
        """Close the connections; the next call that needs one opens it again."""
        async with self._connect_lock:
            producer, self._producer = self._producer, None
            client, self._client, self._store = self._client, None, None
            if producer is not None:
                await producer.stop()
            if client is not None:
                await client.aclose()
            await self._log.close()

    def _redis_store(self) -> RedisControlStore:
        if self._store is None:
            timeout_s = self._settings.control.io_timeout_s
            # No retries inside the client: :func:`retry_transient` retries, logs and counts them.
            self._client = connect_redis(self._settings, socket_timeout=timeout_s,
                                         socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
            self._store = RedisControlStore(self._client, key_prefix=self._settings.topic_prefix)
        return self._store

    async def _open_producer(self) -> AIOKafkaProducer:
        async with self._connect_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**kafka_options(self._settings), linger_ms=0, acks="all",
                                            client_id="bse-predict-control")
                try:
                    await producer.start()
                except KafkaError:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _send(self, topic: str, value: bytes, key: bytes) -> None:
        producer = await self._open_producer()
        await producer.send_and_wait(topic, value, key=key)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await retry_transient(call, what, self._backoff, self.faults, log)

    # -- receiving ---------------------------------------------------------------------------

    async def handle(self, raw: bytes | None) -> list[ControlEvent]:
        """One record of the ``control`` topic: verified, checked, applied or refused, and reported.

        Raises nothing for any ``raw``: what is not a valid control message is refused with its reason.
        Transient Redis and Kafka faults are retried in place until they pass, so a valid message is
        never lost to one; when Redis committed a try but its answer was lost, the next try finds the
        message's id stored and reports what that try did (not a replay)."""
        now = datetime.now(UTC)
        config = self._settings.control
        try:
            message = verify_message(raw, self._keys, now, config.max_age_s, config.max_future_s,
                                     config.max_message_bytes)
        except ControlRefused as refusal:
            event = ControlEvent(status="refused", reason=f"{refusal.kind}: {refusal.reason}"[:_MAX_REASON], at=now,
                                 id=refusal.message_id, command=refusal.command)
            await self._report([event])
            return [event]
        loop = asyncio.get_running_loop()
        problems, notes = await loop.run_in_executor(self._executor, self._check_versions, message)
        received = CommandReceived(message, problems, self._router.default_live)
        remember_s = config.max_age_s + config.max_future_s
        tries = 0
        computed: list[ControlEvent] | None = None

        def change(state: ControlState) -> tuple[ControlState, list[ControlEvent]]:
            nonlocal computed
            if tries > 1 and computed is not None and any(seen_id == message.id for seen_id, _ in state.seen):
                return state, computed  # an earlier try was stored before Redis failed to answer
            after, computed = step(state, received, now, remember_s)
            return after, computed

        async def attempt() -> Transacted:
            nonlocal tries
            tries += 1
            return await self._redis_store().transact(change, self._reconcile)

        done = await self._retrying(f"applying control message {message.id}", attempt)
        events = done.events
        if notes:  # what the checks could not cover goes on the record of an applied command
            said = "; ".join(f"{version}: {note}" for version, note in notes.items())
            events = [e.model_copy(update={"reason": f"{e.reason} ({said})"}) if e.status == "applied" else e
                      for e in events]
        await self._publish(done.state, now)
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
                    verify_files(version_dir, load_manifest(version_dir, self._settings.model_signing_secret))
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
        recorded native outputs (:mod:`bse_predict.serving.parity_check`): (why it fails or None, what was not checked)."""
        recent = self._recent_windows
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
        """Swap in the stored state when its revision moved (the poll every worker runs). The first call
        compares Redis with ``control.state`` (:meth:`_reconcile`), as does a call that finds no state in
        Redis after this worker has seen one. Transient faults are retried in place."""
        await self._retrying("following the control state", self._sync_once)

    async def _sync_once(self) -> None:
        store = self._redis_store()
        async with self._sync_lock:
            if not self._reconciled:
                await self._reconcile()
                self._reconciled = True
            revision = await store.revision()
            if revision is None and self._check_log:
                await self._reconcile()
                revision = await store.revision()
            self._check_log = revision is not None
            if revision is None or revision == self._router.table.revision:
                return
            state = await store.read()
            if state is None:  # removed since the revision was read: the next poll restores it
                return
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

    async def _reconcile(self) -> None:
        """Bring Redis and ``control.state`` level: a state missing in Redis, or older (by sequence) than the
        log's newest, is replaced by the log's newest; one newer than the log's newest (its writer stopped
        before publishing it, or it was stored before the log existed) is published."""
        store = self._redis_store()
        newest = await self._log.newest()
        stored = await store.read()
        if newest is not None and (stored is None or stored.sequence < newest.sequence):
            written, replaced = await store.restore(newest)
            if written:
                self.restores += 1
                had = "none" if replaced is None else f"sequence {replaced.sequence}"
                log.warning("control state restored from %s: sequence %d, revision %d, %d seen ids (Redis had %s)",
                            self._log.topic, newest.sequence, newest.revision, len(newest.seen), had)
        elif stored is not None and (newest is None or newest.sequence < stored.sequence):
            await self._log.publish(stored, self._send, datetime.now(UTC))

    async def follow(self) -> None:
        """Poll the revision for as long as the worker runs (a task of the candle agent: Faust timers
        only start once the group has assigned partitions, seconds after a worker joins). Transient
        faults are retried in place; it ends only by raising another error."""
        while True:
            await self.sync()
            await asyncio.sleep(self._settings.control.poll_interval_s)

    async def tick(self) -> None:
        """Breakers that opened, then the passing time (scheduled ramps, forgotten ids); each stored change
        published to ``control.state``, then reported. Transient faults are retried in place."""
        now = datetime.now(UTC)
        config = self._settings.control
        remember_s = config.max_age_s + config.max_future_s
        tripped, self._tripped = self._tripped, []
        events: list[Event] = [ModelFailed(v, reason) for v, reason in tripped]
        events.append(Tick())
        reported: list[ControlEvent] = []
        for event in events:
            def change(state: ControlState, event: Event = event) -> tuple[ControlState, list[ControlEvent]]:
                return step(state, event, now, remember_s)

            done = await self._retrying("ticking the control state",
                                        lambda change=change: self._redis_store().transact(change, self._reconcile))
            if done.written:
                await self._publish(done.state, now)
            reported += done.events
        await self._report(reported)

    async def _publish(self, state: ControlState, now: datetime) -> None:
        """``state`` to ``control.state``, unless this worker published it (or a newer one) already."""
        await self._retrying("publishing the control state", lambda: self._log.publish(state, self._send, now))

    async def _report(self, events: list[ControlEvent]) -> None:
        for event in events:
            (log.info if event.status != "refused" else log.warning)("control %s: %s %s", event.status,
                                                                      event.command, event.reason)
            key = (event.command or "unknown").encode()
            value = event.model_dump_json().encode()
            await self._retrying("reporting on control.events",
                                 lambda value=value, key=key: self._send(self._events_topic, value, key))
