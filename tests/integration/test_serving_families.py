"""The worker on the real stack serves a family other than the forest, with no code of its own:
the regime hybrid reads two inputs (features and the 168-hour sequence with its HMM filter),
and what the worker publishes equals the trainer's native model on the trainer's rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest

from configs.settings import Settings, load_settings
from bse_predict.training.train import train_version
from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import build_dataset
from bse_predict.families import BasePredictor, get_model
from bse_predict.serving.manifest import load_manifest
from bse_predict.candles.schema import Prediction
from tests.support.kafka_io import read_until, send_raw
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.stream.replay import candle_records
from bse_predict.connections.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

FAMILY = "random_forest_regimes"
HOURS = 260
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def hybrid_version(tmp_path_factory: pytest.TempPathFactory, futures_series: dict[str, CandleSeries]) -> Path:
    settings = load_settings(
        models_dir=str(tmp_path_factory.mktemp("hybrid-models")), training={"max_rows_per_symbol": 2000},
        models={"served": FAMILY, "families": {
            **{name: {"enabled": False} for name in load_settings().models.families},
            FAMILY: {"enabled": True, "params": get_model(FAMILY).fast_params}}})
    return train_version([futures_series[s] for s in SYMBOLS], settings, "v-hybrid", show_progress=False)


def test_the_worker_serves_a_two_input_family_like_the_trainer(
    isolated: Settings, hybrid_version: Path, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    settings = isolated.model_copy(update={"models_dir": hybrid_version.parent})
    asyncio.run(ensure_topics(settings))
    manifest = load_manifest(hybrid_version)
    assert manifest.min_history == 192 and {e.inputs for e in manifest.models} == {("features", "sequence")}
    slices = [futures_series[s].tail(HOURS) for s in SYMBOLS]
    expected_count = len(SYMBOLS) * (HOURS - manifest.min_history + 1)
    with WorkerProcess(service_env(settings), tmp_path / "worker.log") as worker:
        names = TopicNames.of(settings)
        asyncio.run(send_raw(settings.kafka_bootstrap, names.candles,
                             [(r.symbol.encode(), r.payload) for r in candle_records(slices)]))
        records = asyncio.run(read_until(settings.kafka_bootstrap, names.predictions, expected_count, 120,
                                         identity=lambda r: orjson.loads(r.value)["id"]))
        assert len({orjson.loads(r.value)["id"] for r in records}) == expected_count, worker.log_tail()
    predictions = {p.id: p for p in (Prediction.model_validate_json(r.value) for r in records)}

    worst = 0.0
    for one in slices:
        dataset = build_dataset(one, (1, 2, 5), 72)
        rows = np.flatnonzero(dataset.open_time_ms >= one.open_time_ms[manifest.min_history - 1])
        mask = np.zeros(len(dataset.open_time_ms), dtype=bool)
        mask[rows] = True
        for target, entry in manifest.entries_for(FAMILY).items():
            native = BasePredictor.load(hybrid_version / entry.native_file)
            offline = native.predict_proba(native.rows_from_inputs(
                {"features": dataset.features[mask], "sequence": dataset.sequences(mask)}))
            for row, open_time in enumerate(dataset.open_time_ms[mask]):
                part = predictions[f"{one.symbol}|1h|{int(open_time)}"].targets[target]
                online = np.array([part.p_up, part.p_down, part.p_none])
                worst = max(worst, float(np.max(np.abs(online - offline[row]))))
    assert all(p.model.name == FAMILY and p.model.version == "v-hybrid" for p in predictions.values())
    assert worst <= 1e-5, f"worker and trainer differ by {worst}"
