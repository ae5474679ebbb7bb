"""A degraded ensemble on the real stack: the worker on Kafka and Redis serves a small ensemble
(RandomForest + HMM regimes) one of whose members misbehaves, and publishes ``degraded: true``
with what the members left answer (the HMM and the climatology member, their weights renormalised).

- one graph per target (``--ensemble-mode graph``), the RandomForest member answering NaN inside
  the graph: the graph is rebuilt from the version's own member files and recorded combination;
- member by member (the default mode), the RandomForest member's file taking
  over a second a call: it misses the 150 ms deadline, is stopped and dropped, and the worker
  keeps answering at the HMM's pace (a later call finds it still busy and drops it again).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import onnx
import orjson
import pytest

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.ensembles.graph import ensemble_graph
from bse_predict.ensembles.member_runner import load_model_set
from bse_predict.serving.manifest import MANIFEST_NAME, load_manifest, sha256_of
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.candles.schema import Prediction
from tests.conftest import ENSEMBLE_VERSION
from tests.support.bad_graphs import calibrated_slow_graph, nan_graph
from tests.support.kafka_io import read_until, send_raw
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.backtest.predictions import replay_predictions
from bse_predict.stream.replay import candle_records
from bse_predict.connections.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

HOURS = 200
RF, HMM = "ensemble_member_random_forest", "ensemble_member_hmm_regime"


def _rewrite_hashes(version_dir: Path) -> None:
    manifest = load_manifest(version_dir)
    fields = json.loads(manifest.model_dump_json())
    fields["files_sha256"] = {f: sha256_of(version_dir / f) for f in manifest.files_sha256}
    (version_dir / MANIFEST_NAME).write_text(json.dumps(fields))


def _broken_version(ensemble_models: Path, models_dir: Path, graph: bytes, in_the_graph: bool) -> None:
    """The ensemble version with the RandomForest member's files replaced by ``graph``; with
    ``in_the_graph`` the served ensemble graphs are rebuilt around it too."""
    version_dir = models_dir / ENSEMBLE_VERSION
    shutil.copytree(ensemble_models / ENSEMBLE_VERSION, version_dir)
    manifest = load_manifest(version_dir)
    for entry in manifest.models:
        if entry.name == RF:
            (version_dir / entry.file).write_bytes(graph)
    if in_the_graph:
        for target, entry in manifest.entries_for(manifest.served_model).items():
            assert entry.combiner is not None
            members = manifest.entries_for(RF)[target], manifest.entries_for(HMM)[target]
            protos = [onnx.load(version_dir / m.file) for m in members]
            props = onnx.load(version_dir / entry.file).metadata_props
            regime_states = next(p.value for p in props if p.key == "regime_states").split(",")
            rebuilt = ensemble_graph(protos, entry.combiner.spec(), regime_member=1, regime_states=regime_states)
            (version_dir / entry.file).write_bytes(rebuilt.SerializeToString())
    _rewrite_hashes(version_dir)


def _serve(settings: Settings, series: list[CandleSeries], expected: int, tmp_path: Path,
           args: tuple[str, ...] = ()) -> dict[str, Prediction]:
    asyncio.run(ensure_topics(settings))
    with WorkerProcess(service_env(settings), tmp_path / "worker.log", args) as worker:
        asyncio.run(send_raw(settings.kafka_bootstrap, TopicNames.of(settings).candles,
                             [(r.symbol.encode(), r.payload) for r in candle_records(series)]))
        records = asyncio.run(read_until(settings.kafka_bootstrap, TopicNames.of(settings).predictions,
                                         expected, 180, identity=lambda r: orjson.loads(r.value)["id"]))
        live = {p.id: p for p in (Prediction.model_validate_json(r.value) for r in records)}
        assert len(live) == expected, worker.log_tail()
        return live


def _assert_degraded_as_served_offline(settings: Settings, live: dict[str, Prediction], series: list[CandleSeries],
                                       mode: str) -> None:
    """Every live prediction is degraded and equals the same broken version served in this process by the
    worker's own code (the HMM and the climatology member left, their weights renormalised)."""
    config = settings.worker.ensemble.model_copy(update={"mode": mode, "member_timeout_ms": 150})
    offline = {p.id: p for p in replay_predictions(
        settings, load_model_set(settings.models_dir / ENSEMBLE_VERSION, config), series)}
    assert set(live) == set(offline)
    hmm = ServedModelSet.load(settings.models_dir / ENSEMBLE_VERSION, model_name=HMM)
    alone = {p.id: p for p in replay_predictions(settings, hmm, series)}
    manifest = load_manifest(settings.models_dir / ENSEMBLE_VERSION)
    combiners = {t: e.combiner for t, e in manifest.entries_for(manifest.served_model).items()}
    for candle_id, prediction in live.items():
        assert prediction.degraded is True and prediction.model.name == "ensemble"
        assert offline[candle_id].degraded is True
        for target, part in prediction.targets.items():
            other = offline[candle_id].targets[target]
            assert (part.p_up, part.p_down, part.p_none) == pytest.approx((other.p_up, other.p_down, other.p_none),
                                                                          abs=1e-5)
            # the HMM's answer moved toward the climatology member's shares: p_none lies between the two (up to
            # the graph's float32 rounding, where the climatology member's fitted weight is about 0)
            assert combiners[target] is not None and combiners[target].climatology is not None
            low, high = sorted((alone[candle_id].targets[target].p_none, combiners[target].climatology[2]))
            assert low - 1e-6 <= part.p_none <= high + 1e-6


@pytest.mark.parametrize("mode", ["graph", "members"])
def test_the_worker_publishes_degraded_predictions_from_the_members_left(
    isolated: Settings, ensemble_models: Path, futures_series: dict[str, CandleSeries], tmp_path: Path, mode: str
) -> None:
    settings = isolated.model_copy(update={"models_dir": tmp_path / "models"})
    if mode == "graph":
        _broken_version(ensemble_models, settings.models_dir, nan_graph(), in_the_graph=True)
        args: tuple[str, ...] = ("--ensemble-mode", "graph")
    else:
        _broken_version(ensemble_models, settings.models_dir, calibrated_slow_graph(1.0), in_the_graph=False)
        config = tmp_path / "members.yaml"
        config.write_text("worker:\n  ensemble:\n    mode: members\n    member_timeout_ms: 150\n")
        args = ("--config", str(config))
    series = [futures_series[s].tail(HOURS) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]
    min_history = ServedModelSet.load(settings.models_dir / ENSEMBLE_VERSION).min_history
    live = _serve(settings, series, 3 * (HOURS - min_history + 1), tmp_path, args)
    _assert_degraded_as_served_offline(settings, live, series, mode)
