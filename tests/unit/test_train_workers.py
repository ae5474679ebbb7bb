"""Training in worker processes gives the version that training in one process gives, and fits
the regime model once per set of training hours, not once per family and target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.families.regime_model import RegimeModel
from bse_predict.serving.manifest import load_manifest
from bse_predict.training.train import train_version
from configs.settings import Settings, load_settings

_TIMINGS = {"train_seconds", "train_cpu_seconds"}
_FOREST = {"n_estimators": 12, "max_depth": 5, "min_samples_leaf": 40, "seed": 3}
_HMM = {"n_states": 3, "n_iter": 10, "seed": 3}


def _settings(models_dir: Path, workers: int) -> Settings:
    families: dict[str, Any] = {name: {"enabled": False} for name in load_settings().models.families}
    families["random_forest"] = {"enabled": True, "params": _FOREST}
    families["hmm_regime"] = {"enabled": True, "params": _HMM}
    families["ensemble"] = {"enabled": True, "params": {
        "members": ["random_forest", "hmm_regime"], "strategy": "regime", "regime_min_rows": 150}}
    return load_settings(models_dir=str(models_dir), training={"max_rows_per_symbol": 1500, "workers": workers},
                         models={"served": "ensemble", "families": families})


def _leaves(node: Any, path: str = "") -> dict[str, Any]:
    """Every value of a nested dump, by its path."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{path}/{key}").items()}
    if isinstance(node, list | tuple):
        return {k: v for i, value in enumerate(node) for k, v in _leaves(value, f"{path}/{i}").items()}
    return {path: node}


def _comparable(folder: Path, settings: Settings) -> dict[str, Any]:
    """The version's models, metrics and parity reports (timings left out), and which files it holds.
    The files' bytes are not compared: skl2onnx does not write the same bytes twice for the same forest."""
    manifest = load_manifest(folder, settings.model_signing_secret).model_dump(mode="json")
    for values in manifest["metrics"].values():
        for timing in _TIMINGS & set(values):
            del values[timing]
    return _leaves({"models": manifest["models"], "metrics": manifest["metrics"], "parity": manifest["parity"],
                    "files": sorted(manifest["files_sha256"])})


def test_two_workers_write_the_version_one_process_writes(
        tmp_path: Path, futures_series: dict[str, CandleSeries], monkeypatch: pytest.MonkeyPatch) -> None:
    series = [futures_series["BTCUSDT"], futures_series["SOLUSDT"]]
    fitted_hours: list[int] = []
    real_fit = RegimeModel.fit

    def counted(self: RegimeModel, stretches: list[np.ndarray]) -> RegimeModel:
        fitted_hours.append(sum(len(s) for s in stretches))
        return real_fit(self, stretches)

    monkeypatch.setattr(RegimeModel, "fit", counted)  # seen in this process only: the one-process run
    one = _settings(tmp_path / "one", workers=1)
    in_process = train_version(series, one, "v-one", show_progress=False)
    # hmm_regime reads the hours before the holdout, the ensemble's member those before its validation slice:
    # two fits for three targets and both families (six trainings)
    assert len(fitted_hours) == 2 and len(set(fitted_hours)) == 2
    two = _settings(tmp_path / "two", workers=2)
    in_workers = train_version(series, two, "v-two", show_progress=False)
    assert len(fitted_hours) == 2  # the workers fitted theirs in their own processes
    expected, got = _comparable(in_process, one), _comparable(in_workers, two)
    assert sum(key.endswith("/name") for key in expected) > 9  # every model, not an empty version
    assert got.keys() == expected.keys()
    # a forest fitted with two threads sums its trees in either order: equal to the last bits only
    assert {k: v for k, v in got.items() if not isinstance(v, float)} == \
        {k: v for k, v in expected.items() if not isinstance(v, float)}
    assert {k: v for k, v in got.items() if isinstance(v, float)} == \
        pytest.approx({k: v for k, v in expected.items() if isinstance(v, float)}, rel=1e-9, abs=1e-12)
