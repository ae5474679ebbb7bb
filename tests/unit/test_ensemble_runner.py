"""An ensemble served member by member equals its one graph and its native model; a member that
misses the deadline, is still busy, raises or answers NaN is dropped and the rows are degraded.
The slow and NaN members are real ONNX graphs run by onnxruntime, put in place of a member's
file (the manifest's hashes rewritten)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest

from configs.settings import EnsembleServingConfig, Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.ensembles.member_runner import ServedEnsemble, load_model_set
from bse_predict.features.inputs import build_inputs
from bse_predict.serving.manifest import MANIFEST_NAME, load_manifest, sha256_of
from bse_predict.serving.onnx_runner import ServedModelSet
from tests.conftest import ENSEMBLE_VERSION
from tests.support.bad_graphs import calibrated_slow_graph, nan_graph

pytestmark = pytest.mark.slow  # a version trained on ../shared/data, and a member that sleeps a second

MEMBERS = EnsembleServingConfig(mode="members", member_timeout_ms=300, threads=2)
RF, HMM = "ensemble_member_random_forest", "ensemble_member_hmm_regime"


def _inputs(version_dir: Path, series: dict[str, CandleSeries], rows_per_symbol: int = 40) -> dict[str, np.ndarray]:
    served = ServedModelSet.load(version_dir)
    windows, times = [], []
    for one in series.values():
        for end in range(len(one.ohlcv) - rows_per_symbol, len(one.ohlcv)):
            windows.append(one.ohlcv[end - served.min_history + 1:end + 1])
            times.append(int(one.open_time_ms[end]))
    return build_inputs(served.input_kinds, np.stack(windows), np.array(times, dtype=np.int64))


def _with_member_file(models_dir: Path, tmp_path: Path, member: str, graph: bytes) -> Path:
    """A copy of the ensemble version whose ``member`` entries run ``graph`` (hashes rewritten)."""
    target = tmp_path / "models" / ENSEMBLE_VERSION
    shutil.copytree(models_dir / ENSEMBLE_VERSION, target)
    manifest = load_manifest(target)
    for entry in manifest.models:
        if entry.name == member:
            (target / entry.file).write_bytes(graph)
    fields = json.loads(manifest.model_dump_json())
    fields["files_sha256"] = {f: sha256_of(target / f) for f in manifest.files_sha256}
    (target / MANIFEST_NAME).write_text(json.dumps(fields))
    return target


def test_members_side_by_side_equal_the_graph_and_the_native_model(
    ensemble_models: Path, futures_series: dict[str, CandleSeries]
) -> None:
    version_dir = ensemble_models / ENSEMBLE_VERSION
    inputs = _inputs(version_dir, futures_series)
    members = load_model_set(version_dir, MEMBERS, live_weights=lambda version: {})  # fitted weights
    assert isinstance(members, ServedEnsemble) and members.min_history == ServedModelSet.load(version_dir).min_history
    graph = load_model_set(version_dir, EnsembleServingConfig(mode="graph"))
    assert isinstance(graph, ServedModelSet)
    by_members, by_graph = members.predict_outputs(inputs), graph.predict_outputs(inputs)
    assert by_members.regime_states == by_graph.regime_states
    np.testing.assert_allclose(by_members.regime_probabilities, by_graph.regime_probabilities, atol=1e-6)
    assert not by_members.degraded.any() and not by_graph.degraded.any()
    manifest = load_manifest(version_dir)
    for target, entry in manifest.entries_for("ensemble").items():
        native = joblib.load(version_dir / entry.native_file)
        expected = native.predict_proba(native.rows_from_inputs(inputs))
        assert np.abs(by_members.probabilities[target] - expected).max() <= 1e-5
        assert np.abs(by_members.probabilities[target] - by_graph.probabilities[target]).max() <= 1e-5
        assert by_members.member_probabilities is not None
        assert by_members.member_probabilities[target].shape == (2, len(expected), 3)
    # a strategy whose weights do not read the regime still reports it, in either mode
    weighted = load_model_set(version_dir, MEMBERS, model_name="ensemble_weighted").predict_outputs(inputs)
    weighted_graph = load_model_set(version_dir, EnsembleServingConfig(mode="graph"),
                                    model_name="ensemble_weighted").predict_outputs(inputs)
    assert weighted.regime_states == weighted_graph.regime_states == by_graph.regime_states
    np.testing.assert_allclose(weighted.regime_probabilities, weighted_graph.regime_probabilities, atol=1e-6)


def _without_the_forest(version_dir: Path, inputs: dict[str, np.ndarray], model_name: str = "ensemble",
                        ) -> dict[str, np.ndarray]:
    """By hand: the forest member dropped, the HMM member's and the climatology member's weights (the
    HMM's regime picks the row's vector) renormalised over the two."""
    hmm = ServedModelSet.load(version_dir, model_name=HMM).predict_outputs(inputs)
    out = {}
    for target, entry in load_manifest(version_dir).entries_for(model_name).items():
        spec = entry.combiner.spec()  # type: ignore[union-attr]
        assert spec.climatology is not None
        rows = len(hmm.probabilities[target])
        w = (spec.by_regime[np.argmax(hmm.target_regimes[target], axis=1)] if spec.by_regime is not None
             else np.tile(spec.weights, (rows, 1)))[:, 1:]
        out[target] = (w[:, :1] * hmm.probabilities[target] + w[:, 1:] * spec.climatology) / w.sum(axis=1,
                                                                                                keepdims=True)
    return out


def test_a_member_past_the_deadline_is_dropped_and_the_rows_are_degraded(
    ensemble_models: Path, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    version_dir = _with_member_file(ensemble_models, tmp_path, RF, calibrated_slow_graph(1.0))
    inputs = _inputs(version_dir, futures_series, rows_per_symbol=4)
    served = ServedEnsemble.load(version_dir, MEMBERS)
    without_forest = _without_the_forest(version_dir, inputs)

    first = served.predict_outputs(inputs)
    # The call came back with the slow member counted out (timed out), not with its answer: it did not wait.
    assert served.failures[f"{RF}:timeout"] == 1 and first.degraded.all(), "the call waited for the slow member"
    second = served.predict_outputs(inputs)  # the slow member may still be finishing: busy, not queued

    for outputs in (first, second):
        assert outputs.degraded.all() and outputs.member_probabilities is None  # no live weights: not kept
        for target, probabilities in outputs.probabilities.items():
            np.testing.assert_allclose(probabilities, without_forest[target], atol=1e-6)  # the rest renormalised
    assert served.failures[f"{RF}:timeout"] >= 1
    assert served.failures[f"{RF}:timeout"] + served.failures[f"{RF}:busy"] == 2
    served.close()


def test_live_weights_replace_the_fitted_ones_and_a_nan_member_is_dropped(
    ensemble_models: Path, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    version_dir = ensemble_models / ENSEMBLE_VERSION
    inputs = _inputs(version_dir, futures_series, rows_per_symbol=6)
    rf_alone = ServedModelSet.load(version_dir, model_name=RF).predict(inputs)
    hmm_alone = ServedModelSet.load(version_dir, model_name=HMM).predict(inputs)
    asked: list[str] = []

    def live(version: str) -> dict[str, np.ndarray]:
        asked.append(version)
        return {t: np.array([0.6, 0.1, 0.3]) for t in ("1%", "2%", "5%")}  # the climatology member last

    weighted = ServedEnsemble.load(version_dir, MEMBERS, model_name="ensemble_weighted", live_weights=live)
    answer = weighted.predict_outputs(inputs)
    assert asked == [ENSEMBLE_VERSION]  # one snapshot for the whole batch
    for target, probabilities in answer.probabilities.items():
        climatology = np.asarray(weighted.combiners[target].climatology)
        np.testing.assert_allclose(probabilities, 0.6 * rf_alone[target] + 0.1 * hmm_alone[target]
                                   + 0.3 * climatology, atol=1e-6)

    broken_dir = _with_member_file(ensemble_models, tmp_path, RF, nan_graph())
    broken = ServedEnsemble.load(broken_dir, MEMBERS, live_weights=lambda version: {}).predict_outputs(inputs)
    assert broken.degraded.all()
    assert broken.member_probabilities is not None
    without_forest = _without_the_forest(broken_dir, inputs)
    for target, probabilities in broken.probabilities.items():
        np.testing.assert_allclose(probabilities, without_forest[target], atol=1e-6)
        assert np.isnan(broken.member_probabilities[target][0]).all()


@pytest.mark.parametrize("mode", ["graph", "members"])
def test_a_plain_model_is_served_as_its_graph_in_either_mode(trained_version: Settings, mode: str) -> None:
    version_dir = trained_version.models_dir / "v-test"
    assert isinstance(load_model_set(version_dir, EnsembleServingConfig(mode=mode)), ServedModelSet)
