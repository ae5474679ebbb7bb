"""The worker on the real stack: candles in through Kafka, windows in Redis, predictions out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.features.definitions import LOOKBACK_CANDLES
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.candles.schema import Prediction
from tests.support.kafka_io import read_topic, read_until, send_raw
from tests.support.reference import expected_predictions
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.stream.replay import CandleRecord, candle_records, replay
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.connections.clients import connect_redis_sync

pytestmark = pytest.mark.integration

STEP_MS = 3_600_000
HOURS = 330
FIRST = LOOKBACK_CANDLES - 1  # index of the first candle with a full window



@pytest.fixture
def stream_settings(isolated: Settings, trained_version: Settings) -> Settings:
    settings = isolated.model_copy(update={"models_dir": trained_version.models_dir})
    asyncio.run(ensure_topics(settings))
    return settings


def _slices(series: dict[str, CandleSeries]) -> list[CandleSeries]:
    return [series[s].tail(HOURS) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]


def _messy(records: list[CandleRecord], seed: int) -> list[CandleRecord]:
    """Duplicates re-sent later, and a few closed candles delivered late (after newer ones)."""
    rng = random.Random(seed)
    closed_positions = [i for i, r in enumerate(records) if r.closed]
    messy = list(records)
    late = sorted(rng.sample(closed_positions[200:-50], 6), reverse=True)
    for position in late:
        record = messy.pop(position)
        messy.insert(position + rng.randint(4, 20), record)
    for position in rng.sample(range(len(messy)), 40):
        if messy[position].closed:
            messy.insert(min(len(messy), position + rng.randint(1, 300)), messy[position])
    return messy


def _arrivals(records: list[CandleRecord]) -> list[tuple[str, str, int, np.ndarray]]:
    arrivals = []
    for record in records:
        if record.closed:
            m = orjson.loads(record.payload)
            arrivals.append((m["symbol"], m["timeframe"], m["open_time"],
                             np.array([m["open"], m["high"], m["low"], m["close"], m["volume"]])))
    return arrivals


def _predictions(settings: Settings, expected_count: int, timeout_s: float = 90) -> list[Prediction]:
    """Predictions read until ``expected_count`` distinct ids arrived (duplicates included)."""
    topic = TopicNames.of(settings).predictions
    records = asyncio.run(read_until(settings.kafka_bootstrap, topic, expected_count, timeout_s,
                                     identity=lambda r: orjson.loads(r.value)["id"]))
    return [Prediction.model_validate_json(r.value) for r in records]


def _assert_matches_reference(predictions: list[Prediction], expected: dict[str, dict[str, np.ndarray]],
                              model_set: ServedModelSet) -> None:
    by_id = {p.id: p for p in predictions}
    assert set(by_id) == set(expected), (
        f"missing {sorted(set(expected) - set(by_id))[:5]}, unexpected {sorted(set(by_id) - set(expected))[:5]}")
    worst = 0.0
    for candle_id, prediction in by_id.items():
        assert prediction.model.version == model_set.version
        assert prediction.variant == "control" and prediction.degraded is False
        assert prediction.horizon_hours == 72 and set(prediction.targets) == {"1%", "2%", "5%"}
        for target, part in prediction.targets.items():
            p = np.array([part.p_up, part.p_down, part.p_none])
            assert abs(p.sum() - 1.0) < 1e-9
            worst = max(worst, float(np.max(np.abs(p - expected[candle_id][target]))))
    assert worst < 1e-6, f"worker and trainer pipeline differ by {worst}"


def test_messy_replay_gives_one_prediction_per_closed_candle_equal_to_the_trainer(
    stream_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    records = _messy(list(candle_records(_slices(futures_series), updates=2)), seed=11)
    model_set = ServedModelSet.load(stream_settings.models_dir / "v-test")
    expected = expected_predictions(model_set, _arrivals(records), STEP_MS)
    assert len(expected) == 3 * (HOURS - FIRST)
    with WorkerProcess(service_env(stream_settings), tmp_path / "worker.log") as worker:
        asyncio.run(send_raw(stream_settings.kafka_bootstrap, TopicNames.of(stream_settings).candles,
                             [(r.symbol.encode(), r.payload) for r in records]))
        predictions = _predictions(stream_settings, len(expected))
        time.sleep(2)  # let any duplicate arrive before counting
        predictions = [Prediction.model_validate_json(r.value) for r in asyncio.run(
            read_topic(stream_settings.kafka_bootstrap, TopicNames.of(stream_settings).predictions))]
        assert len(predictions) >= len(expected), worker.log_tail()
    assert "objects frozen out of the collector's way" in worker.log_path.read_text(), worker.log_tail()
    _assert_matches_reference(predictions, expected, model_set)
    raw = json.loads(predictions[0].model_dump_json())
    assert set(raw) >= {"id", "symbol", "timeframe", "open_time", "close", "horizon_hours", "targets", "model",
                        "variant", "degraded", "latency_ms"}


MALFORMED: list[tuple[str, bytes | None, bytes]] = [
    ("not_json", b"SOLUSDT", b"{not json"),
    ("not_utf8", b"SOLUSDT", b"\xff\xfe\x00garbage"),
    ("not_object", b"SOLUSDT", b"[1, 2, 3]"),
    ("too_large", b"SOLUSDT", b'{"symbol": "SOLUSDT", "pad": "' + b"x" * 5000 + b'"}'),
    ("missing_field", b"SOLUSDT", b'{"symbol": "SOLUSDT", "timeframe": "1h", "open_time": 1735689600000}'),
    ("bad_price", b"SOLUSDT", None),
    ("bad_price", b"SOLUSDT", None),
    ("inconsistent_prices", b"SOLUSDT", None),
    ("inconsistent_prices", b"SOLUSDT", None),
    ("bad_volume", b"SOLUSDT", None),
    ("bad_timeframe", b"SOLUSDT", None),
    ("misaligned_open_time", b"SOLUSDT", None),
    ("open_time_in_future", b"SOLUSDT", None),
    ("open_time_too_old", b"SOLUSDT", None),
    ("bad_symbol", b"sol/usdt", None),
    ("key_mismatch", b"BTCUSDT", None),
    ("bad_closed_flag", b"SOLUSDT", None),
    ("bad_price", b"SOLUSDT", None),
    # 150 KB of control characters: escaped whole in JSON, its dead letter would pass the broker's 1 MB limit
    ("too_large", b"SOLUSDT", bytes(range(1, 32)) * 5000),
]


def _broken(kind: str, index: int, base: dict[str, object]) -> bytes:
    """Bytes for the ``index``-th malformed record of ``MALFORMED`` whose bytes are built from a valid candle."""
    m = dict(base)
    variants = {
        5: {"close": "93576.0"},  # a price as a string
        6: {"open": -1.0, "low": -2.0},
        7: {"low": m["high"] * 1.01},  # low above high
        8: {"high": m["low"] * 0.99},  # high below the open and close
        9: {"volume": -5.0},
        10: {"timeframe": "7h"},
        11: {"open_time": m["open_time"] + 1234},
        12: {"open_time": 4_102_444_800_000},  # 2100
        13: {"open_time": 946_684_800_000},  # 2000
        14: {"symbol": "sol/usdt"},
        15: {},
        16: {"closed": "yes"},
        17: {"open": 0.0, "low": 0.0},
    }
    m.update(variants[index])
    return orjson.dumps(m)


def test_malformed_candles_go_to_the_dlq_with_reason_while_valid_ones_flow(
    stream_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    sol = futures_series["SOLUSDT"].tail(200)
    good = list(candle_records([sol]))
    base = orjson.loads(good[-1].payload)
    bad = [(key, raw if raw is not None else _broken(kind, i, base)) for i, (kind, key, raw) in enumerate(MALFORMED)]
    mixed: list[tuple[bytes | None, bytes]] = [(r.symbol.encode(), r.payload) for r in good[:180]]
    mixed += bad
    mixed += [(r.symbol.encode(), r.payload) for r in good[180:]]
    with WorkerProcess(service_env(stream_settings), tmp_path / "worker.log") as worker:
        asyncio.run(send_raw(stream_settings.kafka_bootstrap, TopicNames.of(stream_settings).candles, mixed))
        names = TopicNames.of(stream_settings)
        dead = asyncio.run(read_until(stream_settings.kafka_bootstrap, names.candles_dlq, len(bad), 60))
        predictions = _predictions(stream_settings, 200 - FIRST)
        assert len(dead) == len(bad), worker.log_tail()
    letters = [orjson.loads(r.value) for r in dead]  # keyed records land on several partitions
    assert Counter(letter["kind"] for letter in letters) == Counter(kind for kind, _, _ in MALFORMED)
    assert len({letter["kind"] for letter in letters}) >= 15
    by_sha256 = {hashlib.sha256(raw).hexdigest(): (kind, raw) for (kind, _, _), (_, raw) in zip(MALFORMED, bad, strict=True)}
    keep = stream_settings.candles.dead_letter_keep_bytes
    for record, letter in zip(dead, letters, strict=True):
        kind, raw = by_sha256[letter["original_sha256"]]
        assert letter["kind"] == kind and letter["original_bytes"] == len(raw)
        assert base64.b64decode(letter["original_b64"]) == raw[:keep]
        assert letter["truncated"] == (len(raw) > keep)
        assert letter["reason"] and letter["source_topic"] == names.candles
        assert len(record.value) < 64 * keep  # bounded, whatever the original's size
    assert {p.open_time for p in predictions} == {int(t) for t in sol.open_time_ms[FIRST:]}


def test_a_worker_killed_mid_replay_loses_no_prediction(
    stream_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    records = list(candle_records(_slices(futures_series), updates=1))
    expected_ids = {f"{s}|1h|{int(t)}" for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
                    for t in futures_series[s].tail(HOURS).open_time_ms[FIRST:]}
    env = service_env(stream_settings)
    first = WorkerProcess(env, tmp_path / "worker-1.log").start()
    replaying = threading.Thread(target=asyncio.run, args=(replay(stream_settings, records, rate_per_s=120),))
    replaying.start()  # about 8 s of closed candles, still flowing when the worker dies
    try:
        seen = _predictions(stream_settings, 30, timeout_s=60)
        assert len(seen) >= 30, first.log_tail()
    finally:
        first.kill()
    assert replaying.is_alive(), "the replay ended before the kill: the test would prove nothing"
    with WorkerProcess(env, tmp_path / "worker-2.log") as second:
        replaying.join()
        predictions = _predictions(stream_settings, len(expected_ids), timeout_s=90)
        assert {p.id for p in predictions} >= expected_ids, second.log_tail()
    assert {p.id for p in predictions} == expected_ids


def test_a_window_lost_in_redis_is_rebuilt_from_kafka_history(
    stream_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    btc = futures_series["BTCUSDT"].tail(260)
    records = list(candle_records([btc]))
    topic = TopicNames.of(stream_settings).candles
    env = service_env(stream_settings)
    with WorkerProcess(env, tmp_path / "worker-1.log"):
        asyncio.run(send_raw(stream_settings.kafka_bootstrap, topic, [(r.symbol.encode(), r.payload) for r in records[:230]]))
        _predictions(stream_settings, 230 - FIRST)
    client = connect_redis_sync(stream_settings)
    lost = list(client.scan_iter(match=f"{stream_settings.topic_prefix}bse:*"))
    assert lost, "the worker kept no window in Redis"
    client.delete(*lost)
    with WorkerProcess(env, tmp_path / "worker-2.log") as worker:
        asyncio.run(send_raw(stream_settings.kafka_bootstrap, topic, [(r.symbol.encode(), r.payload) for r in records[230:]]))
        predictions = _predictions(stream_settings, 260 - FIRST)
        worker.wait_for_metric("the window rebuilt", lambda w: w.metric("bse_stream_events_total",
                                                                        kind="windows_rebuilt") == 1)
    assert {p.open_time for p in predictions} == {int(t) for t in btc.open_time_ms[FIRST:]}
    model_set = ServedModelSet.load(stream_settings.models_dir / "v-test")
    expected = expected_predictions(model_set, _arrivals(records), STEP_MS)
    _assert_matches_reference(predictions, expected, model_set)
