"""Recorded parity samples: the trainer writes them, and a version whose graph was swapped is caught by them.

The versions are the small real RandomForest of ``trained_version`` and copies
of it: one whose 1% graph is replaced by its own (valid, same-shaped) 2% graph
with the manifest's sha256 rewritten, so every file and hash check passes and
only the recorded outputs can tell; and one stripped of its samples, as a
manifest from before they existed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from configs.settings import Settings, load_settings
from bse_predict.training.train import train_version
from bse_predict.candles.files import CandleSeries
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.serving.manifest import MANIFEST_NAME, Manifest, ParityReport, load_manifest, sha256_of, verify_files
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.serving.parity_check import (
    SAMPLE_DIR,
    SAMPLE_ROWS,
    check_recorded_parity,
    load_parity_sample,
    record_parity_sample,
    sample_indices,
)

SOURCE = "v-test"


def _rewrite(version_dir: Path, manifest: Manifest, **changes: object) -> None:
    """Write ``manifest`` (with ``changes``) back with the sha256 of the files as they are now."""
    fields = json.loads(manifest.model_dump_json())
    fields.update(changes)
    fields["files_sha256"] = {name: sha256_of(version_dir / name) for name in fields["files_sha256"]}
    (version_dir / MANIFEST_NAME).write_text(json.dumps(fields))


def _copy(trained_version: Settings, tmp_path: Path, name: str) -> tuple[Path, Manifest]:
    version_dir = tmp_path / name / SOURCE  # a version serves only from the folder of its own name
    shutil.copytree(trained_version.models_dir / SOURCE, version_dir)
    return version_dir, load_manifest(version_dir)


def test_training_records_a_sample_per_model_covered_by_the_hashes(trained_version: Settings) -> None:
    version_dir = trained_version.models_dir / SOURCE
    manifest = load_manifest(version_dir)
    assert set(manifest.parity) == {"random_forest/1%", "random_forest/2%", "random_forest/5%"}
    for key, report in manifest.parity.items():
        assert report.sample_file == f"{SAMPLE_DIR}/random_forest_{key.split('/')[1].rstrip('%')}pct.npz"
        assert report.sample_file in manifest.files_sha256
        sample = load_parity_sample(version_dir / report.sample_file)
        assert set(sample.inputs) == {"features"}
        assert sample.inputs["features"].dtype == np.float32
        assert sample.inputs["features"].shape == (SAMPLE_ROWS, len(FEATURE_NAMES))
        assert sample.probabilities.shape == (SAMPLE_ROWS, 3)
        np.testing.assert_allclose(sample.probabilities.sum(axis=1), 1.0, atol=1e-9)
        assert len(np.unique(sample.inputs["features"], axis=0)) == SAMPLE_ROWS  # distinct rows, not one repeated
    verify_files(version_dir, manifest)


def test_an_intact_version_answers_its_recorded_outputs(trained_version: Settings) -> None:
    version_dir = trained_version.models_dir / SOURCE
    model = ServedModelSet.load(version_dir)
    verdict = check_recorded_parity(model, model.manifest, version_dir)
    assert verdict.problem is None and verdict.note is None
    assert set(verdict.max_abs_diff) == {"1%", "2%", "5%"}
    assert all(diff <= 1e-5 for diff in verdict.max_abs_diff.values()), verdict.max_abs_diff


def test_a_swapped_graph_with_rewritten_hashes_is_refused_by_parity_alone(
    trained_version: Settings, tmp_path: Path
) -> None:
    version_dir, manifest = _copy(trained_version, tmp_path, "v-swapped")
    files = {e.target: e.file for e in manifest.models if e.name == manifest.served_model}
    shutil.copyfile(version_dir / files["2%"], version_dir / files["1%"])  # a valid graph of the same shape
    _rewrite(version_dir, manifest)

    model = ServedModelSet.load(version_dir)  # manifest, files, sha256, inputs and classes all check out
    verdict = check_recorded_parity(model, model.manifest, version_dir)

    assert verdict.problem is not None and verdict.problem.startswith("parity: 1% max |Δp| "), verdict.problem
    assert verdict.problem.endswith(" > 1e-05") and "2%" not in verdict.problem and "5%" not in verdict.problem
    assert verdict.max_abs_diff["1%"] > 1e-3 and verdict.max_abs_diff["2%"] <= 1e-5


def test_a_sample_that_disagrees_with_the_graph_is_refused(trained_version: Settings, tmp_path: Path) -> None:
    """The other way round: the graph is intact, the recorded outputs are another model's."""
    version_dir, manifest = _copy(trained_version, tmp_path, "v-other-outputs")
    samples = {key.split("/")[1]: report.sample_file for key, report in manifest.parity.items()}
    assert all(samples.values())
    shutil.copyfile(version_dir / samples["1%"], version_dir / samples["5%"])
    _rewrite(version_dir, manifest)
    model = ServedModelSet.load(version_dir)
    problem = check_recorded_parity(model, model.manifest, version_dir).problem
    assert problem is not None and problem.startswith("parity: 5% max |Δp| "), problem


def test_a_version_without_samples_keeps_the_weaker_check_and_says_so(
    trained_version: Settings, tmp_path: Path
) -> None:
    version_dir, manifest = _copy(trained_version, tmp_path, "v-older")
    shutil.rmtree(version_dir / SAMPLE_DIR)
    fields = json.loads(manifest.model_dump_json())
    for report in fields["parity"].values():
        del report["sample_file"]  # as an older manifest wrote it: no such field at all
    fields["files_sha256"] = {n: d for n, d in fields["files_sha256"].items() if not n.startswith(SAMPLE_DIR)}
    (version_dir / MANIFEST_NAME).write_text(json.dumps(fields))

    model = ServedModelSet.load(version_dir)
    assert all(r.sample_file is None for r in model.manifest.parity.values())
    verdict = check_recorded_parity(model, model.manifest, version_dir)
    assert verdict.problem is None and verdict.max_abs_diff == {}
    assert verdict.note is not None and "no recorded samples" in verdict.note and "['1%', '2%', '5%']" in verdict.note


def test_recorded_figures_are_still_checked(trained_version: Settings, tmp_path: Path) -> None:
    version_dir, manifest = _copy(trained_version, tmp_path, "v-figures")
    parity = {key: report.model_dump() for key, report in manifest.parity.items()}
    parity["random_forest/2%"]["max_abs_diff"] = 0.5
    del parity["random_forest/5%"]
    _rewrite(version_dir, manifest, parity=parity)
    model = ServedModelSet.load(version_dir)
    problem = check_recorded_parity(model, model.manifest, version_dir).problem
    assert problem is not None and "no recorded ONNX/native parity" in problem and "5%" in problem
    parity["random_forest/5%"] = manifest.parity["random_forest/5%"].model_dump()
    _rewrite(version_dir, manifest, parity=parity)
    model = ServedModelSet.load(version_dir)
    problem = check_recorded_parity(model, model.manifest, version_dir).problem
    assert problem is not None and "above tolerance" in problem and "['2%']" in problem


def test_record_and_load_round_trip_a_spread_of_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    feed = {"features": rng.normal(size=(100, 5)).astype(np.float32),
            "sequence": rng.normal(size=(100, 168, 4)).astype(np.float32)}
    probabilities = rng.dirichlet(np.ones(3), size=100)
    report = record_parity_sample(ParityReport(rows=100, max_abs_diff=0.0, tolerance=1e-5), tmp_path, "m_1pct",
                                  feed, probabilities, rows=10)
    assert report.sample_file == "parity/m_1pct.npz"
    sample = load_parity_sample(tmp_path / report.sample_file)
    chosen = sample_indices(100, 10)
    assert chosen[0] == 0 and chosen[-1] == 99 and len(chosen) == 10
    for kind, value in feed.items():
        np.testing.assert_array_equal(sample.inputs[kind], value[chosen])
    np.testing.assert_array_equal(sample.probabilities, probabilities[chosen])
    assert list(sample_indices(5, 32)) == [0, 1, 2, 3, 4] and len(sample_indices(0)) == 0
    with pytest.raises(ValueError, match="may not be named"):
        record_parity_sample(report, tmp_path, "bad", {"probabilities": feed["features"]}, probabilities)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable parity sample"):
        load_parity_sample(tmp_path / "broken.npz")


@pytest.mark.parametrize("family", ["hmm_regime", "random_forest_regimes"])
def test_families_reading_sequences_record_and_pass_their_samples(
    family: str, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    """``sequence`` float32[n, 168, 4] (the HMM) and both inputs at once (the regime hybrid)."""
    from bse_predict.families import get_model

    settings = load_settings(models_dir=str(tmp_path), training={"max_rows_per_symbol": 1500},
                             models={"served": family, "families": {
                                 **{name: {"enabled": False} for name in load_settings().models.families},
                                 family: {"enabled": True, "params": get_model(family).fast_params}}})
    version_dir = train_version([futures_series["ETHUSDT"]], settings, "v", show_progress=False)
    model = ServedModelSet.load(version_dir)
    for target in model.targets:
        sample = load_parity_sample(version_dir / str(model.manifest.parity[f"{family}/{target}"].sample_file))
        assert set(sample.inputs) == set(get_model(family).input_kinds)
        if "sequence" in sample.inputs:
            assert sample.inputs["sequence"].shape == (SAMPLE_ROWS, 168, 4)
    verdict = check_recorded_parity(model, model.manifest, version_dir)
    assert verdict.problem is None and verdict.note is None, verdict
    assert set(verdict.max_abs_diff) == {"1%", "2%", "5%"}
