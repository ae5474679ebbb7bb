"""``models migrate``: legacy pickles built here become a served registry version with equal predictions."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from typer.testing import CliRunner

from bse_predict.cli import app
from configs.settings import Settings, load_settings
from bse_predict.training.migrate import THREE_CLASSES, LegacyError, migrate_legacy, read_legacy
from bse_predict.candles.files import CandleSeries
from bse_predict.features.definitions import FEATURE_NAMES, feature_matrix
from bse_predict.candles.grid import fill_gaps
from bse_predict.labels.first_touch import DOWN, UP, label_matrix
from bse_predict.serving.manifest import load_manifest
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.serving.model_set import predict_windows

HOUR_MS = 3_600_000
COLUMNS = ("bb_position_24", "close_to_ema_48", "bb_width_12", "close_to_sma_168", "bb_width_168", "close_to_ema_6")


@pytest.fixture(scope="module")
def rows(futures_series: dict[str, CandleSeries]) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    btc = futures_series["BTCUSDT"].tail(2500)
    grid = fill_gaps(btc.open_time_ms, btc.ohlcv, HOUR_MS)
    features = feature_matrix(grid.open_time_ms, grid.ohlcv)
    labels = {pct: label_matrix(grid.ohlcv, grid.is_real, pct / 100, 72) for pct in (1.0, 2.0)}
    return features, labels


def _columns() -> tuple[str, ...]:
    return COLUMNS  # not the order of FEATURE_NAMES: the graph must gather them


def _legacy_pickle(folder: Path, symbol: str, pct: float, data: tuple[np.ndarray, dict[float, np.ndarray]],
                   classes: str = "text", columns: tuple[str, ...] | None = None) -> Path:
    features, labels = data
    columns = columns or _columns()
    touched = np.isin(labels[pct], (UP, DOWN)) & np.isfinite(features).all(axis=1)
    up = labels[pct][touched] == UP
    y = {"text": np.where(up, "up", "down"), "int": up.astype(int), "signed": np.where(up, 1, -1)}[classes]
    known = [c for c in columns if c in FEATURE_NAMES]
    x = features[touched][:, [FEATURE_NAMES.index(c) for c in known]] if len(known) == len(columns) else \
        np.random.default_rng(0).normal(size=(int(touched.sum()), len(columns)))
    forest = RandomForestClassifier(n_estimators=12, max_depth=6, min_samples_leaf=20, random_state=1).fit(x, y)
    path = folder / f"rf_{symbol}_{pct / 100:.3f}_model.pkl"
    with path.open("wb") as handle:
        pickle.dump({"model": forest, "feature_cols": list(columns), "accuracy": 0.531, "trained_at": "2025-01-01",
                     "training_rows": int(touched.sum())}, handle)
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(models_dir=str(tmp_path / "models"))


def test_a_migrated_version_serves_what_the_pickles_answered(
    tmp_path: Path, settings: Settings, rows: tuple[np.ndarray, dict[float, np.ndarray]],
    futures_series: dict[str, CandleSeries],
) -> None:
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for pct, classes in ((1.0, "text"), (2.0, "int")):
        _legacy_pickle(legacy, "BTCUSDT", pct, rows, classes)
    _legacy_pickle(legacy, "ETHUSDT", 1.0, rows, "signed")
    _legacy_pickle(legacy, "ETHUSDT", 2.0, rows, "signed")
    before = {p.name: p.read_bytes() for p in legacy.iterdir()}

    version_dir = migrate_legacy(legacy, settings, version="legacy-1")

    manifest = load_manifest(version_dir)
    assert manifest.legacy is not None and manifest.legacy.three_classes == THREE_CLASSES
    assert manifest.served_model == "legacy_rf_BTCUSDT" and manifest.targets_pct == (1.0, 2.0)
    assert manifest.legacy.max_abs_diff <= 1e-5 and manifest.legacy.verified_rows > 300
    assert all(p.max_abs_diff <= 1e-5 for p in manifest.parity.values()) and len(manifest.parity) == 4
    assert manifest.metrics["legacy_rf_BTCUSDT/1%"] == {"legacy_accuracy": 0.531}
    assert {p.name: p.read_bytes() for p in (version_dir / "legacy").iterdir()} == before  # the backup
    assert {p.name: p.read_bytes() for p in legacy.iterdir()} == before  # the originals untouched
    assert manifest.changelog is not None and manifest.changelog.previous_version is None

    # Served through the worker's own path on real windows: equal to the pickles on the same rows.
    served = ServedModelSet.load(version_dir)
    btc = futures_series["BTCUSDT"].tail(400)
    lookback = served.min_history
    windows = np.stack([btc.ohlcv[i - lookback + 1: i + 1] for i in range(lookback - 1, 400, 7)])
    open_times = btc.open_time_ms[lookback - 1: 400: 7]
    answered = predict_windows(served, windows, open_times)
    features = feature_matrix(btc.open_time_ms, btc.ohlcv)[lookback - 1: 400: 7]
    for pct in (1.0, 2.0):
        expected = read_legacy(legacy / f"rf_BTCUSDT_{pct / 100:.3f}_model.pkl").predict(features)
        got = answered[f"{pct:g}%"]
        assert np.max(np.abs(got - expected)) <= 1e-5
        assert np.all(got[:, 2] == 0.0) and np.allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_unknown_feature_columns_and_bad_classes_are_refused(
    tmp_path: Path, settings: Settings, rows: tuple[np.ndarray, dict[float, np.ndarray]]
) -> None:
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    _legacy_pickle(legacy, "BTCUSDT", 1.0, rows, columns=("bb_width_24", "whale_alert_score", "funding_rate_z"))
    with pytest.raises(LegacyError, match="2 feature column.*cannot compute: whale_alert_score, funding_rate_z"):
        migrate_legacy(legacy, settings, version="bad")
    assert not (settings.models_dir / "bad").exists()
    assert not list(settings.models_dir.glob(".*partial"))

    odd = tmp_path / "odd"
    odd.mkdir()
    path = odd / "rf_BTCUSDT_0.010_model.pkl"
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(np.random.default_rng(0).normal(size=(60, 1)),
                                                                        np.repeat(["a", "b", "c"], 20))
    path.write_bytes(pickle.dumps({"model": forest, "feature_cols": ["bb_width_24"]}))
    with pytest.raises(LegacyError, match="3 classes"):
        read_legacy(path)
    (odd / "rf_BTCUSDT_0.010_model.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(LegacyError, match="expected a dict"):
        read_legacy(path)


def test_the_command_migrates_and_shows_the_changelog(
    tmp_path: Path, rows: tuple[np.ndarray, dict[float, np.ndarray]]
) -> None:
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    _legacy_pickle(legacy, "BTCUSDT", 1.0, rows)
    env = {"BSE_MODELS_DIR": str(tmp_path / "models")}
    runner = CliRunner()
    assert runner.invoke(app, ["models", "migrate", "--help"]).exit_code == 0
    first = runner.invoke(app, ["models", "migrate", str(legacy), "--version", "legacy-a"], env=env)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["models", "migrate", str(legacy), "--version", "legacy-b"], env=env)
    assert second.exit_code == 0, second.output
    shown = runner.invoke(app, ["models", "show", "legacy-b"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "changelog against legacy-a:" in shown.output
    assert json.loads(shown.output[: shown.output.index("changelog against")])["legacy"]["three_classes"] == THREE_CLASSES
    refused = runner.invoke(app, ["models", "migrate", str(tmp_path / "nothing-here")], env=env)
    assert refused.exit_code == 2 and refused.output.strip().startswith("error: no legacy")
    assert len(refused.output.strip().splitlines()) == 1
