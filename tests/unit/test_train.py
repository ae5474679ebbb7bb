"""Training writes a complete, verifiable version; serving refuses anything that does not check out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from configs.settings import Settings, load_settings
from bse_predict.training.dataset import build_dataset
from bse_predict.training.train import TrainingError, train_version
from bse_predict.candles.files import CandleSeries
from bse_predict.errors import ManifestError
from bse_predict.features.definitions import FEATURE_NAMES, FEATURE_SPEC_HASH, LOOKBACK_CANDLES
from bse_predict.serving.manifest import load_manifest, sha256_of
from bse_predict.serving.native_runner import NativeModelSet
from bse_predict.serving.onnx_runner import ServedModelSet
from tests.conftest import TRAINING_OVERRIDES


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory, futures_series: dict[str, CandleSeries]) -> Path:
    settings = load_settings(models_dir=str(tmp_path_factory.mktemp("models")), **TRAINING_OVERRIDES)
    return train_version(list(futures_series.values()), settings, "v1", show_progress=False)


def test_manifest_describes_the_version(version_dir: Path) -> None:
    manifest = load_manifest(version_dir)
    assert manifest.version == "v1" and manifest.horizon_hours == 72
    assert manifest.feature_names == FEATURE_NAMES and manifest.feature_spec_hash == FEATURE_SPEC_HASH
    assert manifest.min_history == LOOKBACK_CANDLES
    assert {m.target for m in manifest.models} == {"1%", "2%", "5%"}
    assert set(manifest.data_span) == {"BTCUSDT@BTCUSDT-1h.csv.gz", "ETHUSDT@ETHUSDT-1h.csv.gz",
                                       "SOLUSDT@SOLUSDT-1h.csv.gz"}
    assert all(span.rows == 2500 for span in manifest.data_span.values())
    assert {"scikit-learn", "skl2onnx", "onnxruntime", "numpy"} <= set(manifest.library_versions)
    assert manifest.training_seconds > 0
    for name, digest in manifest.files_sha256.items():
        assert sha256_of(version_dir / name) == digest
    assert {m.file for m in manifest.models} | {m.native_file for m in manifest.models} <= set(manifest.files_sha256)


def test_metrics_stand_beside_their_baselines(version_dir: Path) -> None:
    metrics_by_model = load_manifest(version_dir).metrics
    assert set(metrics_by_model) == {"random_forest/1%", "random_forest/2%", "random_forest/5%"}
    for target, metrics in metrics_by_model.items():
        assert {"log_loss", "log_loss_climatology", "brier", "brier_skill", "accuracy", "accuracy_base_rate"} <= set(metrics)
        assert 0.3 < metrics.get("auc_up_vs_down", 0.5) < 0.7, f"{target}: an AUC this far from 0.5 means a leak"
    for entry in load_manifest(version_dir).models:  # each judged against climatology on the same holdout rows
        metrics = metrics_by_model[f"{entry.name}/{entry.target}"]
        assert entry.servable is not None and entry.servable.rows == metrics["rows"] and entry.servable.blocks > 1
        assert entry.servable.log_loss_climatology == pytest.approx(metrics["log_loss_climatology"])


def test_onnx_equals_the_native_model(version_dir: Path, futures_series: dict[str, CandleSeries]) -> None:
    manifest = load_manifest(version_dir)
    assert all(p.max_abs_diff <= 1e-5 and p.rows > 100 for p in manifest.parity.values())
    rows = build_dataset(futures_series["ETHUSDT"].tail(3000), (1, 2, 5), 72).features[-500:]
    onnx_p = ServedModelSet.load(version_dir).predict({"features": rows})
    native_p = NativeModelSet.load(version_dir).predict({"features": rows})
    for target in onnx_p:
        np.testing.assert_allclose(onnx_p[target], native_p[target], atol=1e-5)
        np.testing.assert_allclose(onnx_p[target].sum(axis=1), 1.0, atol=1e-5)


def test_versions_are_immutable(version_dir: Path, futures_series: dict[str, CandleSeries]) -> None:
    settings = load_settings(models_dir=str(version_dir.parent), **TRAINING_OVERRIDES)
    with pytest.raises(TrainingError, match="already exists"):
        train_version(list(futures_series.values()), settings, "v1", show_progress=False)


def test_a_tampered_file_is_refused(version_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "v1"
    shutil.copytree(version_dir, copy)
    onnx_file = next(copy.glob("*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        ServedModelSet.load(copy)


def test_a_version_trained_on_other_features_is_refused(version_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "v1"
    shutil.copytree(version_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["feature_spec_hash"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="other feature definitions"):
        ServedModelSet.load(copy)


def test_training_without_history_fails_clearly(tmp_path: Path, futures_series: dict[str, CandleSeries]) -> None:
    settings: Settings = load_settings(models_dir=str(tmp_path), **TRAINING_OVERRIDES)
    with pytest.raises(TrainingError, match="no candle series"):
        train_version([], settings, "empty", show_progress=False)
    assert not (tmp_path / "empty").exists()


def test_pooled_series_add_only_training_rows_before_the_served_holdout(
        tmp_path: Path, futures_series: dict[str, CandleSeries]) -> None:
    """A pooled copy of the served series (as spot BTC is of futures BTC) may only add the rows the served
    series trains on: none from the holdout's hours, so training rows double and the holdout is unchanged."""
    settings = load_settings(models_dir=str(tmp_path), **TRAINING_OVERRIDES)
    btc = futures_series["BTCUSDT"]
    copy = CandleSeries(btc.symbol, btc.timeframe, btc.open_time_ms, btc.ohlcv, Path("spot") / btc.source.name)
    alone = load_manifest(train_version([btc], settings, "alone", show_progress=False))
    pooled = load_manifest(train_version([btc], settings, "pooled", show_progress=False, pooled=[copy]))
    assert set(pooled.data_span) == {"BTCUSDT@BTCUSDT-1h.csv.gz", "pooled:BTCUSDT@BTCUSDT-1h.csv.gz"}
    other = load_manifest(train_version([btc], settings, "other", show_progress=False,
                                        pooled=[futures_series["SOLUSDT"]]))
    assert other.feature_bins == alone.feature_bins  # drift is judged against the served symbols' history
    for key, metrics in alone.metrics.items():
        assert pooled.metrics[key]["train_rows"] == 2 * metrics["train_rows"]
        assert pooled.metrics[key]["rows"] == metrics["rows"] > 0
