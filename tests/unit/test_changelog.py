"""Each trained version records its training feature bins (for drift) and a changelog against the previous one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from configs.settings import load_settings
from bse_predict.serving.changelog import build_changelog, changelog_lines
from bse_predict.training.train import train_version
from bse_predict.candles.files import CandleSeries
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.serving.manifest import load_manifest

SMALL = {
    "models": {"served": "random_forest", "families": {
        **{name: {"enabled": False} for name in load_settings().models.families},
        "random_forest": {"enabled": True, "params": {"n_estimators": 6, "max_depth": 4, "min_samples_leaf": 40,
                                                      "seed": 1}}}},
}


def test_two_versions_record_bins_and_a_changelog(tmp_path: Path, futures_series: dict[str, CandleSeries]) -> None:
    btc = futures_series["BTCUSDT"]
    first_settings = load_settings(models_dir=str(tmp_path), training={"max_rows_per_symbol": 1200}, **SMALL)
    second_settings = load_settings(models_dir=str(tmp_path), training={"max_rows_per_symbol": 1500}, **SMALL)
    train_version([btc], first_settings, "v1", show_progress=False)
    train_version([btc], second_settings, "v2", show_progress=False)
    v1, v2 = load_manifest(tmp_path / "v1"), load_manifest(tmp_path / "v2")

    assert v1.changelog is not None and v1.changelog.previous_version is None
    assert v2.changelog is not None and v2.changelog.previous_version == "v1"
    assert any("1200 rows to 1500 rows" in line for line in v2.changelog.changes), v2.changelog.changes
    change = v2.changelog.metrics["random_forest/1%"]["log_loss"]
    assert change.previous == v1.metrics["random_forest/1%"]["log_loss"]
    assert change.current == v2.metrics["random_forest/1%"]["log_loss"]
    assert change.delta == pytest.approx(change.current - change.previous)
    lines = changelog_lines(v2.changelog)
    assert lines[0] == "changelog against v1:" and any(line.startswith("  random_forest/1%: ") and "log_loss" in line for line in lines)
    assert build_changelog(v2, v2).changes == ("no change in models, data, features or libraries (a retrain)",)

    assert v2.feature_bins is not None and set(v2.feature_bins) <= set(FEATURE_NAMES)
    assert len(v2.feature_bins) >= len(FEATURE_NAMES) - 5
    for bins in v2.feature_bins.values():
        assert np.all(np.diff(bins.edges) > 0) and len(bins.expected) == len(bins.edges) + 1
        assert sum(bins.expected) == pytest.approx(1.0)
