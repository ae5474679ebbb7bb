"""Live outcomes on the real stack: the worker settles its predictions exactly as the offline labels.

A replay of real futures candles (three symbols) flows through the real worker
subprocess; the worker is SIGKILLed mid-replay, a second one finishes it, and
every outcome on the ``outcomes`` topic must equal ``models.labels`` on the
same candles, none missing.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import orjson
import pytest

from configs.settings import Settings
from models.candle_files import CandleSeries
from models.grid import fill_gaps
from models.labels import CLASS_NAMES, NONE, UNKNOWN, label_matrix, time_to_touch
from models.schema import Outcome, Prediction
from models.signals import target_label
from tests.support.kafka_io import read_topic, read_until
from tests.support.worker_process import WorkerProcess
from workers.replay import candle_records, replay
from workers.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

STEP_MS = 3_600_000
HOURS = 330
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def _env(settings: Settings) -> dict[str, str]:
    return {
        "BSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "BSE_REDIS_URL": settings.redis_url,
        "BSE_TOPIC_PREFIX": settings.topic_prefix,
        "BSE_MODELS_DIR": str(settings.models_dir),
    }


@pytest.fixture
def stream_settings(isolated: Settings, trained_version: Settings) -> Settings:
    settings = isolated.model_copy(update={"models_dir": trained_version.models_dir})
    asyncio.run(ensure_topics(settings))
    return settings


def _expected_outcome(series: CandleSeries, open_time: int, pct: float, horizon: int) -> tuple[str, int] | None:
    """(outcome, resolved_at) from the offline label rule on the replayed candles; None when unknown."""
    grid = fill_gaps(series.open_time_ms, series.ohlcv, STEP_MS)
    row = int(np.searchsorted(grid.open_time_ms, open_time))
    label = int(label_matrix(grid.ohlcv, grid.is_real, pct / 100, horizon)[row])
    if label == UNKNOWN:
        return None
    if label == NONE:
        return "none", open_time + (horizon + 1) * STEP_MS
    future = np.full((1, horizon, 5), np.nan)
    valid = np.zeros((1, horizon), dtype=bool)
    ahead = grid.ohlcv[row + 1: row + 1 + horizon]
    future[0, : len(ahead)], valid[0, : len(ahead)] = ahead, True
    k = int(time_to_touch(grid.ohlcv[row: row + 1, 3], future, valid, pct / 100)[0])
    return CLASS_NAMES[label], open_time + (k + 1) * STEP_MS


def test_outcomes_equal_offline_labels_and_a_sigkill_loses_no_pending_outcome(
    stream_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    slices = {s: futures_series[s].tail(HOURS) for s in SYMBOLS}
    records = list(candle_records(list(slices.values())))
    names = TopicNames.of(stream_settings)
    horizon = stream_settings.market.horizon_candles
    env = _env(stream_settings)

    first = WorkerProcess(env, tmp_path / "worker-1.log").start()
    replaying = threading.Thread(target=asyncio.run, args=(replay(stream_settings, records, rate_per_s=110),))
    replaying.start()  # about 9 s of closed candles, still flowing when the worker dies
    try:
        early = asyncio.run(read_until(stream_settings.kafka_bootstrap, names.outcomes, 40, 90))
        assert len(early) >= 40, first.log_tail()
    finally:
        first.kill()
    assert replaying.is_alive(), "the replay ended before the kill: the test would prove nothing"

    predictions = {}
    with WorkerProcess(env, tmp_path / "worker-2.log") as second:
        replaying.join()
        expected_ids = {f"{s}|1h|{int(t)}" for s, series in slices.items()
                        for t in series.open_time_ms[stream_settings_min_history(stream_settings) - 1:]}
        for record in asyncio.run(read_until(stream_settings.kafka_bootstrap, names.predictions, len(expected_ids), 90,
                                             identity=lambda r: orjson.loads(r.value)["id"])):
            prediction = Prediction.model_validate_json(record.value)
            predictions[prediction.id] = prediction
        assert set(predictions) == expected_ids, second.log_tail()
        expected: dict[tuple[str, str], tuple[str, int]] = {}
        for prediction in predictions.values():
            for pct in stream_settings.market.targets_pct:
                answer = _expected_outcome(slices[prediction.symbol], prediction.open_time, pct, horizon)
                if answer is not None:
                    expected[(prediction.id, target_label(pct))] = answer
        records_out = asyncio.run(read_until(stream_settings.kafka_bootstrap, names.outcomes, len(expected), 90,
                                             identity=lambda r: (orjson.loads(r.value)["id"], orjson.loads(r.value)["target"])))
        assert len({(orjson.loads(r.value)["id"], orjson.loads(r.value)["target"]) for r in records_out}) >= len(expected), \
            second.log_tail()
    outcomes = [Outcome.model_validate_json(r.value) for r in asyncio.run(read_topic(stream_settings.kafka_bootstrap, names.outcomes))]

    by_key: dict[tuple[str, str], Outcome] = {}
    for outcome in outcomes:
        key = (outcome.id, outcome.target)
        assert by_key.setdefault(key, outcome) == outcome, f"two different answers for {key}"
    assert set(by_key) == set(expected), (
        f"missing {sorted(set(expected) - set(by_key))[:5]}, unexpected {sorted(set(by_key) - set(expected))[:5]}")
    counts = {"up": 0, "down": 0, "none": 0}
    for key, outcome in by_key.items():
        assert (outcome.outcome, outcome.resolved_at) == expected[key], key
        part = predictions[outcome.id].targets[outcome.target]
        assert (outcome.p_up, outcome.p_down, outcome.p_none) == (part.p_up, part.p_down, part.p_none)
        assert outcome.model == predictions[outcome.id].model and outcome.stream == "live"
        counts[outcome.outcome] += 1
    assert min(counts.values()) > 0, counts  # every class occurred: the comparison covered all branches


def stream_settings_min_history(settings: Settings) -> int:
    from models.manifest import load_manifest

    return load_manifest(settings.models_dir / "v-test").min_history
