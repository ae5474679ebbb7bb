"""The control plane when Redis fails or forgets: real Kafka, a real Redis (the shared one under the
test's key prefix, or a private redis-server that the test kills and starts again), and the
:class:`ControlPlane` of a worker driven directly.

The served models are small constant predictors: these tests are about where the control state
lives, not about what the models answer (tests/integration/test_control.py runs real versions in
real workers).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import redis
from pydantic import SecretStr

from configs.settings import Settings
from bse_predict.control.state_machine import ControlState
from bse_predict.control.messages import build_message, encode_message
from bse_predict.errors import ManifestError
from tests.support.kafka_io import read_topic, read_until, send_raw
from bse_predict.control.plane import ControlPlane
from bse_predict.control.state_store import RedisControlStore
from bse_predict.control.state_log import decode_state_record, encode_state_record
from bse_predict.serving.router import ModelRouter
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.connections.clients import connect_redis, connect_redis_sync

pytestmark = pytest.mark.integration

SECRET = "recovery-secret-at-least-32-characters"
VERSIONS = ("v-a", "v-b", "v-c", "v-d")


@dataclass(frozen=True)
class ConstantPredictor:
    """A served version that answers the same probabilities for every row."""

    version: str
    model_name: str = "constant"
    targets: tuple[str, ...] = ("1%",)
    input_kinds: tuple[str, ...] = ("features",)
    min_history: int = 1

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(next(iter(inputs.values())))
        return {"1%": np.tile([0.4, 0.4, 0.2], (rows, 1))}


def _load(version: str) -> ConstantPredictor:
    if version not in VERSIONS:
        raise ManifestError(f"unknown version {version!r}")
    return ConstantPredictor(version)


def _plane(settings: Settings) -> ControlPlane:
    """The control plane of one worker serving ``v-a`` before any command."""
    router = ModelRouter(ConstantPredictor("v-a"), _load, settings.control.breaker)
    return ControlPlane(settings, router, ThreadPoolExecutor(max_workers=1))


def _message(command: str, args: dict, message_id: str | None = None) -> bytes:
    return encode_message(build_message(command, args, SECRET, datetime.now(UTC), "recovery-test", message_id))


@pytest.fixture
def plane_settings(isolated: Settings) -> Settings:
    settings = isolated.model_copy(update={
        "control_secret": SecretStr(SECRET),
        "control": isolated.control.model_copy(update={"retry_initial_s": 0.05, "retry_max_s": 0.5,
                                                       "io_timeout_s": 2.0}),
    })
    asyncio.run(ensure_topics(settings))
    return settings


def _delete_control_keys(settings: Settings) -> None:
    """What a FLUSHALL does to this test's control state, and nothing else."""
    client = connect_redis_sync(settings)
    assert client.delete(f"{settings.topic_prefix}control:state", f"{settings.topic_prefix}control:revision") == 2


def _stored(settings: Settings) -> ControlState | None:
    raw = connect_redis_sync(settings).get(f"{settings.topic_prefix}control:state")
    return None if raw is None else ControlState.model_validate_json(raw)


async def _eventually(condition, what: str, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- restoring a lost state


def test_a_wiped_state_is_restored_once_by_concurrent_workers_and_a_replay_stays_refused(
        plane_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    settings = plane_settings
    fallback = _message("fallback", {"version": "v-b"})
    shadow = _message("shadow", {"version": "v-c"})

    async def run() -> None:
        planes = [_plane(settings) for _ in range(3)]
        try:
            for plane in planes:
                await plane.start()
                await plane.sync()
            assert [e.status for e in await planes[0].handle(fallback)] == ["applied"]
            assert [e.status for e in await planes[0].handle(shadow)] == ["applied"]
            for plane in planes:
                await plane.sync()
            before = _stored(settings)
            assert before is not None and (before.revision, before.sequence) == (2, 2)
            assert {p._router.table.revision for p in planes} == {2}

            _delete_control_keys(settings)
            await asyncio.gather(*(plane.sync() for plane in planes))  # all three find it missing at once
            assert sum(plane.restores for plane in planes) == 1
            assert _stored(settings) == before
            for plane in planes:  # nobody fell back to its start-up version
                table = plane._router.table
                assert (table.revision, table.live.version, table.fallback.version, table.shadow.version) == (
                    2, "v-a", "v-b", "v-c")

            replayed = await planes[1].handle(fallback)
            assert replayed[0].status == "refused" and replayed[0].reason.startswith("replayed")
            late = _plane(settings)  # a worker that starts after the wipe serves the same state
            try:
                await late.sync()
                assert (late._router.table.revision, late._router.table.fallback.version) == (2, "v-b")
            finally:
                await late.stop()
        finally:
            for plane in planes:
                await plane.stop()

    with caplog.at_level("WARNING", logger="bse_predict.control.plane"):
        asyncio.run(run())
    restored = [r.getMessage() for r in caplog.records if "control state restored" in r.getMessage()]
    assert len(restored) == 1 and "sequence 2, revision 2, 2 seen ids (Redis had none)" in restored[0]


def test_a_message_over_a_wiped_state_is_applied_on_the_restored_one(plane_settings: Settings) -> None:
    """No poll noticed the wipe: the worker handling the next message restores before it writes."""
    settings = plane_settings
    first = _message("fallback", {"version": "v-b"})

    async def run() -> None:
        handler, other = _plane(settings), _plane(settings)
        try:
            await handler.handle(first)
            _delete_control_keys(settings)
            events = await handler.handle(_message("shadow", {"version": "v-c"}))
            assert events[0].status == "applied" and events[0].state is not None
            assert (events[0].state["fallback"], events[0].state["shadow"], events[0].state["revision"]) == (
                "v-b", "v-c", 2)
            assert handler.restores == 1
            await other.sync()
            assert other._router.table.fallback.version == "v-b" and other._router.table.shadow.version == "v-c"
            assert (await other.handle(first))[0].reason.startswith("replayed")
        finally:
            await handler.stop()
            await other.stop()

    asyncio.run(run())
    stored = _stored(settings)
    assert stored is not None and stored.sequence == 2  # restored at 1, then the shadow; the replay changed nothing


def test_the_newest_state_wins_by_sequence_not_by_position_and_forged_records_are_skipped(
        plane_settings: Settings) -> None:
    settings = plane_settings
    topic = TopicNames.of(settings).control_state
    now = datetime.now(UTC)
    newer = ControlState(revision=4, sequence=9, live="v-b", previous=("v-a",), fallback="v-c")
    older = ControlState(revision=3, sequence=7, live="v-d", previous=("v-a",))
    forged = ControlState(revision=8, sequence=99, live="v-d")
    records = [(b"w1", encode_state_record(newer, SECRET, "w1", now)),
               (b"w2", encode_state_record(older, SECRET, "w2", now)),  # sent later, still older
               (b"w3", encode_state_record(forged, "not-the-secret", "w3", now)),
               (b"w4", b"[" * 100_000)]
    asyncio.run(send_raw(settings.kafka_bootstrap, topic, records))

    async def run() -> ControlPlane:
        plane = _plane(settings)
        try:
            await plane.sync()
        finally:
            await plane.stop()
        return plane

    plane = asyncio.run(run())
    assert _stored(settings) == newer and plane.restores == 1
    table = plane._router.table
    assert (table.revision, table.live.version, table.fallback.version) == (4, "v-b", "v-c")


def test_a_state_stored_before_the_log_existed_is_published_by_the_next_worker_to_start(
        plane_settings: Settings) -> None:
    settings = plane_settings
    legacy = ControlState(revision=2, live="v-b", previous=("v-a",))  # sequence 0: written before sequences existed

    async def run() -> None:
        client = connect_redis(settings)
        try:
            await RedisControlStore(client, settings.topic_prefix).restore(legacy)
        finally:
            await client.aclose()
        first = _plane(settings)
        try:
            await first.sync()
        finally:
            await first.stop()

    asyncio.run(run())
    published = asyncio.run(read_topic(settings.kafka_bootstrap, TopicNames.of(settings).control_state, idle_ms=1000))
    assert [decode_state_record(r.value, SECRET) for r in published] == [legacy]


# ---------------------------------------------------------------- lifecycle


def test_a_stopped_plane_reopens_and_still_reports(plane_settings: Settings) -> None:
    """The candle agent used to stop the plane in its ``finally``; later commands were applied, never reported."""
    settings = plane_settings

    async def run() -> list[str]:
        plane = _plane(settings)
        ids = []
        try:
            await plane.start()
            await plane.start()
            for version in ("v-b", "v-c"):
                raw = _message("fallback", {"version": version})
                ids.append(json.loads(raw)["id"])
                assert (await plane.handle(raw))[0].status == "applied"
                await plane.stop()
                await plane.stop()
        finally:
            await plane.stop()
        return ids

    ids = asyncio.run(run())
    events = asyncio.run(read_until(settings.kafka_bootstrap, settings.topic("control.events"), 2, 30))
    assert [json.loads(r.value)["id"] for r in events] == ids


# ---------------------------------------------------------------- a Redis that goes away


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test alone, without persistence: a restart comes back empty."""

    def __init__(self, port: int, work_dir: Path) -> None:
        self.port = port
        self._dir = work_dir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self._dir / "redis.log").open("ab")
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self._dir)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError(f"private redis-server on {self.port} did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(_free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_follow_tick_and_handle_go_on_across_a_redis_outage_and_a_message_is_not_lost(
        plane_settings: Settings, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    """Redis dies and comes back empty (no persistence): the poll, the tick and a message handled during
    the outage wait for it, the state comes back from control.state, and the message is applied."""
    settings = plane_settings.model_copy(update={"redis_url": SecretStr(private_redis.url)})
    first = _message("fallback", {"version": "v-b"})
    second = _message("shadow", {"version": "v-c"})

    async def run() -> None:
        plane = _plane(settings)
        following = asyncio.create_task(plane.follow())
        try:
            assert (await plane.handle(first))[0].status == "applied"
            await _eventually(lambda: plane._router.table.revision == 1, "revision 1 served")
            private_redis.kill()
            await _eventually(lambda: plane.faults["redis"] >= 3, "the poll failing against the dead Redis")
            handling = asyncio.create_task(plane.handle(second))
            ticking = asyncio.create_task(plane.tick())
            await _eventually(lambda: plane.faults["redis"] >= 10, "the message and the tick waiting too")
            assert not (following.done() or handling.done() or ticking.done())
            private_redis.start()
            events = await asyncio.wait_for(handling, 60)
            await asyncio.wait_for(ticking, 60)
            assert events[0].status == "applied" and events[0].state is not None
            assert (events[0].state["fallback"], events[0].state["shadow"]) == ("v-b", "v-c")
            await _eventually(lambda: plane._router.table.revision == 2, "revision 2 served")
            assert plane._router.table.fallback.version == "v-b" and plane._router.table.shadow.version == "v-c"
            assert plane.restores == 1 and not following.done()
            assert (await plane.handle(first))[0].reason.startswith("replayed")
        finally:
            following.cancel()
            await plane.stop()

    with caplog.at_level("INFO"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.name == "bse_predict.control.plane"]
    faults = [line for line in lines if "redis fault" in line]
    recoveries = [line for line in lines if "recovered after" in line]
    # One line per fault and one per recovery for each of the three callers that waited, not one per try.
    waited = {"following the control state", "ticking the control state",
              f"applying control message {json.loads(second)['id']}"}
    assert sorted(line.split(": ")[0] for line in faults) == sorted(waited)
    assert sorted(line.split(": ")[0] for line in recoveries) == sorted(waited)
