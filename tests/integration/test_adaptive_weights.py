"""Live adaptive re-weighting on the real stack: a worker serving a small ensemble member by member
with ``worker.ensemble.adaptive`` re-weights it from the outcomes it settles, and the weights it
keeps in Redis are the hedge updates of every published live outcome, recomputed here from the
members' own probabilities for the same candles."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.ensembles.combiners import hedge_update, with_climatology
from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.serving.manifest import MANIFEST_NAME, load_manifest
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.candles.schema import Outcome
from tests.conftest import ENSEMBLE_VERSION
from tests.support.kafka_io import read_topic, read_until, send_raw
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.backtest.predictions import replay_predictions
from bse_predict.stream.replay import candle_records
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.connections.clients import connect_redis_sync

pytestmark = pytest.mark.integration

HOURS = 320
SERVED = "ensemble_weighted"


def _weighted_version(ensemble_models: Path, models_dir: Path) -> Path:
    """The small ensemble version serving its ``weighted`` strategy (the one live weights re-fit), with no
    weight floor: the floor makes the updates' result depend on their order (a member's weight held at the
    floor forgets the steps it would have taken), and the worker applies them batch by batch in an order this
    test cannot see; without it every order gives the same weights."""
    version_dir = models_dir / ENSEMBLE_VERSION
    shutil.copytree(ensemble_models / ENSEMBLE_VERSION, version_dir)
    fields = json.loads((version_dir / MANIFEST_NAME).read_text())
    fields["served_model"] = SERVED
    for entry in fields["models"]:
        if entry.get("combiner"):
            entry["combiner"]["weight_floor"] = 0.0
    (version_dir / MANIFEST_NAME).write_text(json.dumps(fields))
    return version_dir


def test_the_worker_re_weights_the_ensemble_from_every_live_outcome(
    isolated: Settings, ensemble_models: Path, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    settings = isolated.model_copy(update={"models_dir": tmp_path / "models"})
    version_dir = _weighted_version(ensemble_models, settings.models_dir)
    asyncio.run(ensure_topics(settings))
    config = tmp_path / "adaptive.yaml"
    config.write_text("worker:\n  ensemble:\n    mode: members\n    adaptive: true\n")
    series = [futures_series[s].tail(HOURS) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]
    names = TopicNames.of(settings)
    min_history = ServedModelSet.load(version_dir).min_history
    expected = 3 * (HOURS - min_history + 1)
    with WorkerProcess(service_env(settings), tmp_path / "worker.log", ("--config", str(config))) as worker:
        asyncio.run(send_raw(settings.kafka_bootstrap, names.candles,
                             [(r.symbol.encode(), r.payload) for r in candle_records(series)]))
        predictions = asyncio.run(read_until(settings.kafka_bootstrap, names.predictions, expected, 180,
                                             identity=lambda r: orjson.loads(r.value)["id"]))
        assert len({orjson.loads(r.value)["id"] for r in predictions}) == expected, worker.log_tail()
        outcomes = [Outcome.model_validate_json(r.value)
                    for r in asyncio.run(read_topic(settings.kafka_bootstrap, names.outcomes, idle_ms=4000))]
        log_tail = worker.log_tail()
    assert len(outcomes) > 300, log_tail  # most of the 3 x 150 predictions settle within the 320 hours

    manifest = load_manifest(version_dir)
    combiners = {t: e.combiner for t, e in manifest.entries_for(SERVED).items()}
    members = {name: {p.id: p for p in replay_predictions(settings, ServedModelSet.load(version_dir, model_name=name),
                                                           series)}
               for name in next(iter(combiners.values())).members}  # type: ignore[union-attr]
    unique = {(o.id, o.target): o for o in outcomes}
    kept = connect_redis_sync(settings).hgetall(f"{settings.topic_prefix}adaptive:{ENSEMBLE_VERSION}:weights")
    assert sorted(k.decode() for k in kept) == ["1%", "2%", "5%"], log_tail
    for target, combiner in combiners.items():
        assert combiner is not None
        weights = np.asarray(combiner.weights)
        settled = sorted((o for o in unique.values() if o.target == target), key=lambda o: (o.open_time, o.symbol))
        for outcome in settled:
            probs = np.array([[getattr(members[m][outcome.id].targets[target], f"p_{c}") for c in CLASS_NAMES]
                              for m in combiner.members])
            probs = with_climatology(probs[:, None], combiner.climatology)[:, 0]  # its shares: the last member
            weights = hedge_update(weights, probs, CLASS_NAMES.index(outcome.outcome), combiner.adaptive_rate,
                                   combiner.weight_floor)
        live = np.asarray(orjson.loads(kept[target.encode()]))
        assert not np.allclose(live, combiner.weights, atol=1e-4), "the outcomes moved nothing"
        np.testing.assert_allclose(live, weights, atol=1e-5)
