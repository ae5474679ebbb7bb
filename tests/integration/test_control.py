"""The control plane on the real stack: signed messages, shared state, A/B, shadow, rollback, breakers.

Versions are built from the small trained one: copies under new names (their
manifests rewritten with the new version and real hashes), a copy with a
corrupted file, versions whose ONNX graphs answer NaN or take about a
second per call, built here with the onnx helpers, and one whose graphs were
swapped between targets (hashes rewritten: only its recorded parity samples
can tell).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.control.messages import build_message, encode_message
from bse_predict.features.definitions import LOOKBACK_CANDLES
from bse_predict.serving.manifest import MANIFEST_NAME, load_manifest, sha256_of
from bse_predict.serving.parity_check import SAMPLE_DIR
from bse_predict.serving.routing import Arm, arm_for, normalised
from bse_predict.candles.schema import Prediction
from tests.support.bad_graphs import calibrated_slow_graph, nan_graph
from tests.support.kafka_io import read_topic, send_raw
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.stream.replay import CandleRecord, candle_records
from bse_predict.connections.topics import TopicNames
from bse_predict.connections.clients import connect_redis, connect_redis_sync

pytestmark = pytest.mark.integration

SECRET = "integration-secret-at-least-32-characters"  # shorter: the worker refuses to start
SOURCE = "v-test"
# Real BTC/ETH/SOL candles, each also sent under a second name chosen so that a 50/50 split has symbols on
# both arms (the three real names all hash below 0.5).
SYMBOLS = {"BTCUSDT": "BTCUSDT", "ETHUSDT": "ETHUSDT", "SOLUSDT": "SOLUSDT",
           "BTC2USDT": "BTCUSDT", "ETH2USDT": "ETHUSDT", "SOL2USDT": "SOLUSDT"}
FIRST = LOOKBACK_CANDLES - 1  # index of the first candle with a full window


# ---------------------------------------------------------------- versions


def _copy_version(models_dir: Path, name: str, onnx_by_target: dict[str, bytes] | None = None,
                  corrupt: bool = False, without_samples: bool = False) -> None:
    """``SOURCE`` under a new name; optionally other ONNX graphs; manifest rewritten with real hashes
    (``corrupt``: a file changed after hashing; ``without_samples``: no parity samples, as an older
    manifest)."""
    target_dir = models_dir / name
    shutil.copytree(models_dir / SOURCE, target_dir)
    manifest = load_manifest(target_dir)
    for entry in manifest.models:
        if onnx_by_target is not None and entry.name == manifest.served_model:
            (target_dir / entry.file).write_bytes(onnx_by_target[entry.target])
    fields = json.loads(manifest.model_dump_json())
    if without_samples:
        shutil.rmtree(target_dir / SAMPLE_DIR)
        fields["parity"] = {k: {**r, "sample_file": None} for k, r in fields["parity"].items()}
    hashes = {file: sha256_of(target_dir / file) for file in manifest.files_sha256 if (target_dir / file).exists()}
    created = manifest.created_at - timedelta(days=1)  # SOURCE stays the newest version
    fields.update(version=name, files_sha256=hashes, created_at=created.isoformat())
    (target_dir / MANIFEST_NAME).write_text(json.dumps(fields))
    if corrupt:
        served = next(e for e in manifest.models if e.name == manifest.served_model)
        data = bytearray((target_dir / served.file).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (target_dir / served.file).write_bytes(bytes(data))


def _env(settings: Settings) -> dict[str, str]:
    return {**service_env(settings), "BSE_CONTROL_SECRET": SECRET}


# ---------------------------------------------------------------- stream helpers


def _records(series: dict[str, CandleSeries], start: int, stop: int) -> list[CandleRecord]:
    """Closed candles ``[start, stop)`` of the newest 400 hours, for every name in SYMBOLS."""
    renamed = [CandleSeries(name, s.timeframe, s.open_time_ms[-400:][start:stop], s.ohlcv[-400:][start:stop], s.source)
               for name, s in ((name, series[source]) for name, source in SYMBOLS.items())]
    return list(candle_records(renamed))


def _send_candles(settings: Settings, records: list[CandleRecord]) -> None:
    asyncio.run(send_raw(settings.kafka_bootstrap, TopicNames.of(settings).candles,
                         [(r.symbol.encode(), r.payload) for r in records]))


def _send_control(settings: Settings, command: str, args: dict, issued_at: datetime | None = None,
                  secret: str = SECRET, message_id: str | None = None) -> str:
    fields = build_message(command, args, secret, issued_at or datetime.now(UTC), "integration-test", message_id)
    asyncio.run(send_raw(settings.kafka_bootstrap, settings.topic("control"), [(command.encode(), encode_message(fields))]))
    return fields["id"]


def _all_events(settings: Settings) -> list[dict]:
    records = asyncio.run(read_topic(settings.kafka_bootstrap, settings.topic("control.events"), idle_ms=700))
    return [json.loads(r.value) for r in records]


def _events(settings: Settings, count: int, timeout_s: float = 60) -> list[dict]:
    """The control.events records but the breaker changes (:func:`_breaker_changes`), once ``count`` exist
    (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = [e for e in _all_events(settings) if e.get("status") != "breaker"]
        if len(events) >= count or time.monotonic() > deadline:
            return events


def _breaker_changes(settings: Settings, version: str, timeout_s: float = 30) -> list[str]:
    """The statuses the worker reported on control.events for the breaker of ``version``, once it reported one."""
    deadline = time.monotonic() + timeout_s
    while True:
        changes = [e["breaker"] for e in _all_events(settings) if e.get("status") == "breaker" and e["version"] == version]
        if changes or time.monotonic() > deadline:
            return changes


def _event_for(settings: Settings, message_id: str, count: int, timeout_s: float = 60) -> dict:
    """The control.events record about ``message_id`` (waits until ``count`` events exist)."""
    found = [e for e in _events(settings, count, timeout_s) if e.get("id") == message_id]
    assert found, f"no control event for {message_id}: {_events(settings, 0, 1)}"
    return found[-1]


def _predictions(settings: Settings, topic: str, ids: set[str], timeout_s: float = 60) -> dict[str, Prediction]:
    """The last prediction per id of ``ids`` on ``topic`` (waits until all arrived or the time is up)."""
    deadline = time.monotonic() + timeout_s
    by_id: dict[str, Prediction] = {}
    while time.monotonic() < deadline:
        records = asyncio.run(read_topic(settings.kafka_bootstrap, topic, idle_ms=700))
        by_id = {p.id: p for p in (Prediction.model_validate_json(r.value) for r in records) if p.id in ids}
        if set(by_id) == ids:
            return by_id
    return by_id


def _ids(records: list[CandleRecord]) -> set[str]:
    return {f"{r.symbol}|1h|{r.open_time_ms}" for r in records if r.closed}


def _wait_for_breaker_open(worker: WorkerProcess, version: str, timeout_s: float = 30) -> None:
    """Until the worker's ``bse_breaker_open`` gauge says the breaker of ``version`` is open."""
    worker.wait_for_metric(f"breaker of {version} open", lambda w: w.metric("bse_breaker_open", version=version) == 1.0,
                           timeout_s)


def _restores(workers: list[WorkerProcess]) -> float:
    """How often the workers, together, restored the control state into Redis (their ``/metrics``)."""
    return sum(w.metric("bse_stream_events_total", kind="control_restored") or 0.0 for w in workers)


# ---------------------------------------------------------------- tests


def test_control_changes_reach_every_worker_and_forged_stale_replayed_ones_change_nothing(
    control_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    settings = control_settings
    _copy_version(settings.models_dir, "v-b")
    _copy_version(settings.models_dir, "v-c")
    names = TopicNames.of(settings)
    env = _env(settings)
    first = WorkerProcess(env, tmp_path / "w1.log").start()
    second = WorkerProcess(env, tmp_path / "w2.log").start()
    third = None
    try:
        # Before any control message: the newest version, variant control.
        warm = _records(futures_series, 0, FIRST + 3)
        _send_candles(settings, warm)
        step_ids = _ids(_records(futures_series, FIRST, FIRST + 3))
        before = _predictions(settings, names.predictions, step_ids)
        assert set(before) == step_ids and {(p.model.version, p.variant) for p in before.values()} == {(SOURCE, "control")}

        # Forged, stale, from another secret: refused, nothing changes.
        forged = build_message("promote", {"version": "v-b"}, SECRET, datetime.now(UTC), "intruder")
        forged["args"] = {"version": "v-c"}  # changed after signing
        asyncio.run(send_raw(settings.kafka_bootstrap, names.control, [(b"promote", encode_message(forged))]))
        stale_id = _send_control(settings, "promote", {"version": "v-b"}, datetime.now(UTC) - timedelta(minutes=6))
        wrong_id = _send_control(settings, "promote", {"version": "v-b"}, secret="not-the-secret")
        unknown_id = _send_control(settings, "promote", {"version": "v-nowhere"})
        assert "bad_signature" in _event_for(settings, forged["id"], 4)["reason"]
        assert _event_for(settings, stale_id, 4)["reason"].startswith("stale")
        assert "bad_signature" in _event_for(settings, wrong_id, 4)["reason"]
        unknown = _event_for(settings, unknown_id, 4)
        assert unknown["status"] == "refused" and "unknown version" in unknown["reason"]

        # promote v-b mid-replay: both workers follow (their /metrics serve revision 1).
        promote_id = _send_control(settings, "promote", {"version": "v-b"}, message_id="promote-b")
        applied = _event_for(settings, promote_id, 5)
        assert applied["status"] == "applied" and applied["state"]["live"] == "v-b"
        for worker in (first, second):
            worker.wait_for_revision(1)
        replayed = _send_control(settings, "promote", {"version": "v-b"}, message_id="promote-b")
        assert replayed == promote_id
        events = _events(settings, 6)
        # Applied once; the replay refused (reported again if a rebalance redelivers it: at least once)
        statuses = [e["status"] for e in events if e.get("id") == promote_id]
        assert statuses[0] == "applied" and statuses.count("applied") == 1 and set(statuses[1:]) == {"refused"}
        assert "replayed" in events[-1]["reason"]
        chunk = _records(futures_series, FIRST + 3, FIRST + 6)
        _send_candles(settings, chunk)
        promoted = _predictions(settings, names.predictions, _ids(chunk))
        assert {(p.model.version, p.variant) for p in promoted.values()} == {("v-b", "control")}

        # An A/B split and a shadow: variants by the sticky symbol hash, shadow only on predictions.shadow.
        ab_id = _send_control(settings, "ab", {"variants": {SOURCE: 0.5, "v-b": 0.5}})
        shadow_id = _send_control(settings, "shadow", {"version": "v-c"})
        assert _event_for(settings, ab_id, 8)["status"] == "applied"
        assert _event_for(settings, shadow_id, 8)["status"] == "applied"
        for worker in (first, second):
            worker.wait_for_revision(3)
        arms = normalised([Arm(SOURCE, SOURCE, 0.5), Arm("v-b", "v-b", 0.5)])
        chunk = _records(futures_series, FIRST + 6, FIRST + 9)
        _send_candles(settings, chunk)
        split = _predictions(settings, names.predictions, _ids(chunk))
        assert set(split) == _ids(chunk)
        for prediction in split.values():
            expected = arm_for(prediction.symbol, arms)
            assert (prediction.variant, prediction.model.version) == (expected.variant, expected.version)
        assert {p.variant for p in split.values()} == {SOURCE, "v-b"}, "the chosen symbols cover both arms"
        shadow = _predictions(settings, names.predictions_shadow, _ids(chunk))
        assert set(shadow) == _ids(chunk)
        assert {(p.model.version, p.variant) for p in shadow.values()} == {("v-c", "shadow")}
        everything = asyncio.run(read_topic(settings.kafka_bootstrap, names.predictions, idle_ms=500))
        assert all(orjson.loads(r.value)["model"]["version"] != "v-c" for r in everything)

        # A worker started afterwards serves the same state from its first candle.
        third = WorkerProcess(env, tmp_path / "w3.log").start()
        assert third.control_revision() == 3

        # rollback: the previous live version at once, everywhere.
        rollback_id = _send_control(settings, "rollback", {})
        back = _event_for(settings, rollback_id, 9)
        assert back["status"] == "applied" and back["state"]["live"] == SOURCE and back["state"]["arms"] == {}
        for worker in (first, second, third):
            worker.wait_for_revision(4)
        chunk = _records(futures_series, FIRST + 9, FIRST + 12)
        _send_candles(settings, chunk)
        rolled = _predictions(settings, names.predictions, _ids(chunk))
        assert set(rolled) == _ids(chunk)
        assert {(p.model.version, p.variant) for p in rolled.values()} == {(SOURCE, "control")}
    finally:
        for worker in (first, second, third):
            if worker is not None:
                worker.stop()


def test_broken_versions_are_refused_at_promote_and_tripped_breakers_fall_back_degraded(
    control_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    settings = control_settings
    _copy_version(settings.models_dir, "v-corrupt", corrupt=True)
    _copy_version(settings.models_dir, "v-nan", {t: nan_graph() for t in ("1%", "2%", "5%")})
    _copy_version(settings.models_dir, "v-slow", {t: calibrated_slow_graph() for t in ("1%", "2%", "5%")})
    _copy_version(settings.models_dir, "v-slow2", {t: calibrated_slow_graph() for t in ("1%", "2%", "5%")},
                  without_samples=True)
    source_graphs = {e.target: (settings.models_dir / SOURCE / e.file).read_bytes()
                     for e in load_manifest(settings.models_dir / SOURCE).models}
    _copy_version(settings.models_dir, "v-swapped", {"1%": source_graphs["2%"], "2%": source_graphs["1%"],
                                                     "5%": source_graphs["5%"]})
    config = tmp_path / "breaker.yaml"
    config.write_text("control:\n  breaker:\n    window_calls: 10\n    failures_to_open: 2\n"
                      "    latency_budget_ms: 300\n    open_s: 600\n")
    names = TopicNames.of(settings)
    with WorkerProcess(_env(settings), tmp_path / "w.log", args=("--config", str(config))) as worker:
        _send_candles(settings, _records(futures_series, 0, FIRST + 1))
        assert _predictions(settings, names.predictions, _ids(_records(futures_series, FIRST, FIRST + 1)))

        corrupt = _event_for(settings, _send_control(settings, "promote", {"version": "v-corrupt"}), 1)
        assert corrupt["status"] == "refused" and "sha256" in corrupt["reason"]
        nan = _event_for(settings, _send_control(settings, "promote", {"version": "v-nan"}), 2)
        assert nan["status"] == "refused" and "NaN" in nan["reason"]

        # NaN outputs: the fallback answers every row, degraded, in the symbol's arm; the breaker opens.
        _send_control(settings, "fallback", {"version": SOURCE})
        assert _event_for(settings, _send_control(settings, "ab", {"variants": {"v-nan": 1.0}}), 4)["status"] == "applied"
        worker.wait_for_revision(2)
        nan_ids: set[str] = set()
        for hour in range(FIRST + 1, FIRST + 4):  # separate batches: each is one call of the model
            chunk = _records(futures_series, hour, hour + 1)
            _send_candles(settings, chunk)
            nan_ids |= _ids(chunk)
            time.sleep(0.5)
        answered = _predictions(settings, names.predictions, nan_ids)
        assert set(answered) == nan_ids
        assert {(p.model.version, p.variant, p.degraded) for p in answered.values()} == {(SOURCE, "v-nan", True)}
        _wait_for_breaker_open(worker, "v-nan")
        assert _breaker_changes(settings, "v-nan") == ["open"]  # reported on control.events for any reader

        # Slow outputs: valid answers until the breaker opens on latency, then the fallback, degraded.
        _send_control(settings, "ab", {"variants": {"v-slow": 1.0}})
        worker.wait_for_revision(3, timeout_s=60)
        slow_ids: list[set[str]] = []
        for hour in range(FIRST + 4, FIRST + 8):
            chunk = _records(futures_series, hour, hour + 1)
            _send_candles(settings, chunk)
            slow_ids.append(_ids(chunk))
            _predictions(settings, names.predictions, slow_ids[-1], timeout_s=60)
        _wait_for_breaker_open(worker, "v-slow")
        by_id = _predictions(settings, names.predictions, set().union(*slow_ids))
        served = [{(by_id[i].model.version, by_id[i].degraded) for i in ids} for ids in slow_ids]
        assert served[0] == {("v-slow", False)}, served
        assert served[-1] == {(SOURCE, True)}, served
        assert all(p.variant == "v-slow" for p in by_id.values())

        # A ramping version whose breaker opens is a failed gate: the ramp stops, the live version stays.
        # (v-slow2 has no parity samples, as an older version: its answers cannot be compared, and the event says so)
        ramp_id = _send_control(settings, "ramp", {"version": "v-slow2", "shares": [0.5, 1.0]})
        ramped = _event_for(settings, ramp_id, 6, timeout_s=60)
        assert ramped["status"] == "applied" and "no recorded samples" in ramped["reason"], ramped
        worker.wait_for_revision(4, timeout_s=60)
        for hour in range(FIRST + 8, FIRST + 11):
            chunk = _records(futures_series, hour, hour + 1)
            _send_candles(settings, chunk)
            _predictions(settings, names.predictions, _ids(chunk), timeout_s=60)
        stopped = [e for e in _events(settings, 7, timeout_s=30) if e["status"] == "ramp_stopped"]
        assert len(stopped) == 1 and "model failed" in stopped[0]["reason"], stopped
        stopped = stopped[0]
        assert stopped["state"]["live"] == SOURCE and stopped["state"]["arms"] == {} and stopped["state"]["ramp"] is None

        # Graphs swapped between targets, hashes rewritten: every file check passes, the recorded outputs do not.
        swapped = _event_for(settings, _send_control(settings, "promote", {"version": "v-swapped"}), 8)
        assert swapped["status"] == "refused" and "parity: 1% max |Δp| " in swapped["reason"], swapped
        assert "2% max |Δp| " in swapped["reason"] and "5%" not in swapped["reason"], swapped


def test_the_cli_signs_and_a_worker_ramps_a_version_in_on_schedule(
    control_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    settings = control_settings
    _copy_version(settings.models_dir, "v-b")
    env = _env(settings)
    names = TopicNames.of(settings)
    cli = [sys.executable, "-m", "bse_predict.cli", "control"]
    unsigned = subprocess.run([*cli, "rollback"], env={**os.environ, **env, "BSE_CONTROL_SECRET": ""},
                              capture_output=True, text=True, timeout=60)
    assert unsigned.returncode == 2 and unsigned.stderr.count("\n") == 1 and "BSE_CONTROL_SECRET" in unsigned.stderr
    bad = subprocess.run([*cli, "ab", "v-b=lots"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "VERSION=WEIGHT" in bad.stderr
    with WorkerProcess(env, tmp_path / "w.log") as worker:
        _send_candles(settings, _records(futures_series, 0, FIRST + 1))
        sent = subprocess.run([*cli, "ramp", "v-b", "--shares", "0,0.5,1", "--every-s", "1.5"],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert SECRET not in sent.stdout + sent.stderr
        events = _events(settings, 3, timeout_s=60)
        assert [e["status"] for e in events] == ["applied", "ramp_advanced", "ramp_done"], events
        assert events[0]["issued_by"] == "ops" and events[0]["state"]["shadow"] == "v-b"
        assert events[1]["state"]["arms"]["v-b"]["weight"] == pytest.approx(0.5)
        assert events[2]["state"]["live"] == "v-b" and events[2]["state"]["previous"] == [SOURCE]
        worker.wait_for_revision(3)
        chunk = _records(futures_series, FIRST + 1, FIRST + 2)
        _send_candles(settings, chunk)
        done = _predictions(settings, names.predictions, _ids(chunk))
        assert set(done) == _ids(chunk)
        assert {(p.model.version, p.variant, p.degraded) for p in done.values()} == {("v-b", "control", False)}


def test_concurrent_changes_through_redis_are_never_lost(isolated: Settings) -> None:
    """Many workers' transactions on the one state: every message is applied exactly once."""

    from bse_predict.control.state_machine import CommandReceived, ControlState, step
    from bse_predict.control.messages import verify_message
    from bse_predict.control.state_store import RedisControlStore

    now = datetime.now(UTC)
    messages = [verify_message(encode_message(build_message("fallback", {"version": f"v{i}"}, SECRET, now)), SECRET, now)
                for i in range(40)]

    async def run() -> tuple[ControlState, int]:
        clients = [connect_redis(isolated) for _ in range(4)]
        stores = [RedisControlStore(c, key_prefix=isolated.topic_prefix) for c in clients]
        try:
            await asyncio.gather(*(
                stores[i % 4].transact(lambda state, m=m: step(state, CommandReceived(m, default_live="v-live"), now))
                for i, m in enumerate(messages)))
            return await stores[0].read(), await stores[0].revision()
        finally:
            for client in clients:
                await client.aclose()

    state, revision = asyncio.run(run())
    assert sorted(i for i, _ in state.seen) == sorted(m.id for m in messages)
    assert revision == state.revision == 40  # every fallback changed what is served once


def test_unreadable_control_records_are_refused_and_reported_and_the_next_valid_one_is_applied(
    control_settings: Settings, tmp_path: Path
) -> None:
    """Bytes that are not a control message (json.loads alone raises RecursionError on the first two)
    are refused on control.events with their reason; the agent goes on with the next message."""
    settings = control_settings
    _copy_version(settings.models_dir, "v-b")
    worker = WorkerProcess(_env(settings), tmp_path / "w.log").start()
    try:
        unreadable = [b"[" * 200_000, b"[" * 8_000, b'{"id": "x", \xff\xfe}', b'{"id": "a", "id": "b"}',
                      b'{"args": {"v": NaN}}']
        asyncio.run(send_raw(settings.kafka_bootstrap, settings.topic("control"),
                             [(b"promote", raw) for raw in unreadable]))
        valid_id = _send_control(settings, "fallback", {"version": "v-b"})
        events = _events(settings, len(unreadable) + 1)
        reasons = [e["reason"] for e in events[:len(unreadable)]]
        assert all(e["status"] == "refused" and e["id"] is None for e in events[:len(unreadable)])
        assert reasons[0].startswith("too_large: 200000 bytes")
        assert reasons[1].startswith("malformed: nested deeper than")
        assert reasons[2].startswith("malformed: not UTF-8")
        assert reasons[3].startswith("malformed: duplicate key 'id'")
        assert reasons[4].startswith("malformed: NaN is not JSON")
        applied = events[len(unreadable)]
        assert (applied["id"], applied["status"], applied["state"]["fallback"]) == (valid_id, "applied", "v-b")
        worker.wait_for_revision(1)
        assert "Traceback" not in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()


def test_after_redis_forgets_the_control_state_every_worker_serves_the_same_versions_and_a_replay_is_refused(
    control_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    """The prefix's control keys deleted (what FLUSHALL does to them): the workers restore the state from
    control.state, one of them writes it, and nobody falls back to its start-up version."""

    settings = control_settings
    _copy_version(settings.models_dir, "v-b")
    names = TopicNames.of(settings)
    env = _env(settings)
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log").start() for i in (1, 2)]
    try:
        _send_candles(settings, _records(futures_series, 0, FIRST + 1))
        fields = build_message("promote", {"version": "v-b"}, SECRET, datetime.now(UTC), "integration-test")
        raw = encode_message(fields)
        asyncio.run(send_raw(settings.kafka_bootstrap, names.control, [(b"promote", raw)]))
        assert _event_for(settings, fields["id"], 1)["status"] == "applied"
        for worker in workers:
            worker.wait_for_revision(1)
        client = connect_redis_sync(settings)
        state_key, revision_key = f"{settings.topic_prefix}control:state", f"{settings.topic_prefix}control:revision"
        before = client.get(state_key)
        assert client.delete(state_key, revision_key) == 2

        deadline = time.monotonic() + 30
        while client.get(state_key) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(state_key) == before and client.get(revision_key) == b"1"
        workers[0].wait_for_metric("the restore counted", lambda _: _restores(workers) >= 1)
        assert _restores(workers) == 1, "one worker writes the restored state; the other finds it there"

        chunk = _records(futures_series, FIRST + 1, FIRST + 3)
        _send_candles(settings, chunk)
        served = _predictions(settings, names.predictions, _ids(chunk))
        assert set(served) == _ids(chunk)
        assert {(p.model.version, p.variant) for p in served.values()} == {("v-b", "control")}
        assert _restores(workers) == 1
        for worker in workers:
            assert "control revision 0 applied" not in worker.log_path.read_text(errors="replace")

        asyncio.run(send_raw(settings.kafka_bootstrap, names.control, [(b"promote", raw)]))  # the same bytes again
        events = _events(settings, 2)
        assert events[-1]["id"] == fields["id"] and events[-1]["reason"].startswith("replayed")
    finally:
        for worker in workers:
            worker.stop()
