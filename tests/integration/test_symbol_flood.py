"""A flood of unknown symbols cannot grow Redis without bound: past the cap they are dead letters."""

from __future__ import annotations

import asyncio
import random
import string
from collections import Counter
from pathlib import Path

import orjson
import pytest

from configs.settings import Settings
from tests.support.kafka_io import read_until, send_raw
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.stream.replay import candle_payload
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.connections.clients import connect_redis_sync

pytestmark = pytest.mark.integration

FLOOD = 10_000
CAP = 25


def test_ten_thousand_random_symbols_stop_at_the_cap(isolated: Settings, trained_version: Settings,
                                                     tmp_path: Path) -> None:
    settings = isolated.model_copy(update={"models_dir": trained_version.models_dir})
    asyncio.run(ensure_topics(settings))
    rng = random.Random(5)
    names = {"".join(rng.choices(string.ascii_uppercase, k=10)) + "USDT" for _ in range(FLOOD)}
    records = [(name.encode(), candle_payload(name, "1h", 1_767_225_600_000, (1.0, 1.1, 0.9, 1.05, 10.0), True))
               for name in sorted(names)]
    config = tmp_path / "config.yaml"
    config.write_text(f"worker:\n  max_symbols: {CAP}\n", encoding="utf-8")
    topics = TopicNames.of(settings)
    with WorkerProcess(service_env(settings), tmp_path / "worker.log", ("--config", str(config))) as worker:
        asyncio.run(send_raw(settings.kafka_bootstrap, topics.candles, records))
        dead = asyncio.run(read_until(settings.kafka_bootstrap, topics.candles_dlq, len(names) - CAP, 180))
        assert len({(r.partition, r.offset) for r in dead}) == len(names) - CAP, worker.log_tail()
    letters = [orjson.loads(r.value) for r in dead]
    assert Counter(letter["kind"] for letter in letters) == Counter({"symbol_cap": len(names) - CAP})
    assert "max_symbols=25" in letters[0]["reason"]
    client = connect_redis_sync(settings)
    keys = [k.decode() for k in client.scan_iter(match=f"{settings.topic_prefix}bse:*", count=1000)]
    admitted = client.zcard(f"{settings.topic_prefix}bse:symbols")
    assert admitted == CAP
    assert len(keys) <= 1 + CAP * 4  # the registry, and per admitted symbol its window keys
