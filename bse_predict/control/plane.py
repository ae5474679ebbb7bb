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

Keys: messages are verified with :func:`~bse_predict.control.verification.control_keys` (the signing
key and those of ``BSE_CONTROL_KEYS``, picked by the message's ``key_id``); ``control.state`` is
signed with the signing key and read with any of them. Every applied or refused
message is reported on ``control.events`` with its id, which
:func:`~bse_predict.control.sender.send_control_and_wait` (the ``control`` command) waits for.

Faults: transient Redis and Kafka errors are retried in place
(:mod:`bse_predict.connections.transient`): a message is handled, a tick applied, a poll done
once the servers answer again, never dropped.

The parts
---------
:class:`ControlPlane` coordinates; each step has its own module:

- :mod:`~bse_predict.control.verification`: the keys, the message check, the refusal event (core);
- :mod:`~bse_predict.control.version_check`: loading the named versions, warm-up, recorded parity (core);
- :mod:`~bse_predict.control.state_machine`: what a message, a breaker or the time does to the state (core);
- :mod:`~bse_predict.control.state_store`: the state in Redis and its transaction (adapter);
- :mod:`~bse_predict.control.state_log`: the signed copies on ``control.state`` (adapter);
- :mod:`~bse_predict.control.reporting`: ``control.events`` and the producer (adapter).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import TypeVar

from configs.settings import Settings
from bse_predict.control.messages import ControlRefused
from bse_predict.control.reporting import ControlReporter
from bse_predict.control.state_log import ControlStateLog
from bse_predict.control.state_machine import (CommandReceived, ControlEvent, ControlState, Event, ModelFailed, Tick,
                                               breaker_event, step)
from bse_predict.control.state_store import RedisControlStore, Transacted
from bse_predict.control.verification import control_keys, refusal_event, verify
from bse_predict.control.version_check import VersionCheck
from bse_predict.errors import ManifestError
from bse_predict.features.inputs import BatchInputs
from bse_predict.serving.router import MODEL_ERRORS, ModelRouter, RoutedBatch
from bse_predict.connections.transient import Backoff, retry_transient

__all__ = ["ControlPlane"]

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        self._store: RedisControlStore | None = None
        self._sync_lock = asyncio.Lock()  # the poll and a just-handled message never swap tables out of order
        self._unloadable_revision: int | None = None  # logged once, retried on every poll
        self._reconciled = False  # Redis and control.state compared once since this process started
        self._check_log = True  # a missing state sends the poll to the log: until it found none, and after a state was seen
        self._backoff = Backoff(settings.control.retry_initial_s, settings.control.retry_max_s)
        self._keys = control_keys(settings)
        self._secret = self._keys.secrets[self._keys.signing_id] if self._keys is not None else None
        self._log = ControlStateLog(settings, self._secret, tuple(self._keys.secrets.values()) if self._keys else ())
        self._reporter = ControlReporter(settings, self._retrying)
        self._versions = VersionCheck(settings, router)
        self._tripped: list[tuple[str, str]] = []  # breakers opened since the last tick; event loop only
        self._breaker_events: list[ControlEvent] = []  # breaker changes since the last tick; event loop only
        self._worker = f"{socket.gethostname()}-{os.getpid()}"

    def note_routed(self, routed: RoutedBatch, inputs: BatchInputs) -> None:
        """After each batch (on the event loop): the breakers it opened become ``ModelFailed`` events at
        the next tick, every change of a breaker is reported on ``control.events`` then, and the batch's
        newest windows are what a version about to be served is warmed up on."""
        self._tripped.extend(routed.tripped)
        if routed.breaker_changes:
            now = datetime.now(UTC)
            self._breaker_events += [breaker_event(version, status, reason, now, self._worker)
                                     for version, status, reason in routed.breaker_changes]
        self._versions.note_windows(inputs.windows[-64:], inputs.open_time_ms[-64:])

    async def start(self) -> None:
        """Open the connections now, retrying while Redis or Kafka is down; a no-op when they are open."""
        async def connect() -> None:
            await self._redis_store().ping()
            await self._reporter.open()

        await self._retrying("starting the control plane", connect)

    async def stop(self) -> None:
        """Close the connections; the next call that needs one opens it again."""
        store, self._store = self._store, None
        await self._reporter.close()
        if store is not None:
            await store.close()
        await self._log.close()

    def _redis_store(self) -> RedisControlStore:
        if self._store is None:
            self._store = RedisControlStore.connect(self._settings)
        return self._store

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
            message = verify(raw, self._keys, config, now)
        except ControlRefused as refusal:
            event = refusal_event(refusal, now)
            await self._reporter.report([event])
            return [event]
        loop = asyncio.get_running_loop()
        problems, notes = await loop.run_in_executor(self._executor, self._versions.check, message)
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
        await self._reporter.report(events)
        await self.sync()
        return events

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
            await self._log.publish(stored, self._reporter.send, datetime.now(UTC))

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
        reported, self._breaker_events = self._breaker_events, []
        for event in events:
            def change(state: ControlState, event: Event = event) -> tuple[ControlState, list[ControlEvent]]:
                return step(state, event, now, remember_s)

            done = await self._retrying("ticking the control state",
                                        lambda change=change: self._redis_store().transact(change, self._reconcile))
            if done.written:
                await self._publish(done.state, now)
            reported += done.events
        await self._reporter.report(reported)

    async def _publish(self, state: ControlState, now: datetime) -> None:
        """``state`` to ``control.state``, unless this worker published it (or a newer one) already."""
        await self._retrying("publishing the control state", lambda: self._log.publish(state, self._reporter.send, now))
