"""Every message of a fixed replay is byte for byte the recorded one (:mod:`tests.support.golden`)."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from configs.settings import Settings
from bse_predict.control.messages import build_message, encode_message
from tests.support.golden import GOLDEN_DIR, SHADOW_VERSION, golden_records, normalised
from tests.support.kafka_io import read_topic, read_until, send_raw
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.connections.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

SECRET = "golden-replay-control-secret-0123456789"
GOLDEN_FILE = GOLDEN_DIR / "messages.jsonl"
TOPICS = ("predictions", "predictions.shadow", "outcomes", "candles.dlq")


def _messages(settings: Settings, expected: dict[str, int]) -> list[tuple[str, bytes | None, bytes]]:
    """(topic, key, normalised value) of every record, sorted; each topic read until it holds at least
    its expected count, then to its end (a duplicate would show)."""
    names = TopicNames.of(settings)
    found = []
    for topic in TOPICS:
        name = getattr(names, topic.replace(".", "_"))
        if expected.get(topic):
            asyncio.run(read_until(settings.kafka_bootstrap, name, expected[topic], 180))
        records = asyncio.run(read_topic(settings.kafka_bootstrap, name, idle_ms=1500))
        found += [(topic, r.key, normalised(r.value, settings.topic_prefix)) for r in records]
    return sorted(found, key=lambda m: (m[0], m[1] or b"", m[2]))


def _encode(messages: list[tuple[str, bytes | None, bytes]]) -> str:
    return "".join(orjson.dumps({"topic": t, "key": k.decode() if k is not None else None, "value": v.decode()}).decode()
                   + "\n" for t, k, v in messages)


def test_a_fixed_replay_yields_the_recorded_messages_byte_for_byte(
    isolated: Settings, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(GOLDEN_DIR / "models", models_dir)
    settings = isolated.model_copy(update={"models_dir": models_dir})
    asyncio.run(ensure_topics(settings))
    recording = os.environ.get("BSE_GOLDEN_RECORD") == "1"
    golden = [] if recording else [orjson.loads(line) for line in GOLDEN_FILE.read_text().splitlines()]
    expected = {topic: sum(1 for m in golden if m["topic"] == topic) for topic in TOPICS}
    env = {**service_env(settings), "BSE_CONTROL_SECRET": SECRET}
    with WorkerProcess(env, tmp_path / "worker.log") as worker:
        shadow = build_message("shadow", {"version": SHADOW_VERSION}, SECRET, datetime.now(UTC), "golden-test")
        asyncio.run(send_raw(settings.kafka_bootstrap, settings.topic("control"), [(b"shadow", encode_message(shadow))]))
        events = asyncio.run(read_until(settings.kafka_bootstrap, settings.topic("control.events"), 1, 60))
        assert [orjson.loads(e.value)["status"] for e in events] == ["applied"], worker.log_tail()
        asyncio.run(send_raw(settings.kafka_bootstrap, TopicNames.of(settings).candles, golden_records()))
        if recording:
            expected = {"predictions": 276, "predictions.shadow": 276, "candles.dlq": 5}
        messages = _messages(settings, expected)
    if recording:
        GOLDEN_FILE.write_text(_encode(messages))
        pytest.fail(f"recorded {len(messages)} messages in {GOLDEN_FILE}; run again without BSE_GOLDEN_RECORD")
    got = [orjson.loads(line) for line in _encode(messages).splitlines()]
    counts = {topic: sum(1 for m in got if m["topic"] == topic) for topic in TOPICS}
    assert counts == expected
    for want, have in zip(golden, got, strict=True):
        assert have == want
