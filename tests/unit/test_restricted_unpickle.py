"""The two pickle formats we still read (the legacy forests of ``models migrate`` and the native
models of ``--engine native``) admit only the classes those models are made of: a pickle that
names anything else is refused, naming it, before any of it runs."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from configs.settings import Settings, load_settings
from bse_predict.training.migrate import LegacyError, migrate_legacy, read_legacy
from bse_predict.errors import BsePredictError, ManifestError
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.families import BasePredictor
from bse_predict.serving.manifest import MANIFEST_NAME, sha256_of
from bse_predict.serving.native_runner import NativeModelSet

SOURCE = "v-test"
LEGACY_NAME = "rf_BTCUSDT_0.010_model.pkl"


class _RunsCode:
    """Unpickling this calls ``call(*args)``: what a hostile pickle does."""

    def __init__(self, call: Callable[..., Any], *args: Any) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self.call, self.args


def _hostile(kind: str, marker: Path) -> tuple[_RunsCode, str]:
    """(an object whose unpickling writes ``marker``, the global the unpickler meets first)."""
    if kind == "os.system":
        return _RunsCode(os.system, f"touch {marker}"), f"{os.system.__module__}.system"
    return _RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"


HOSTILE = ["os.system", "builtins.exec"]


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("where", ["whole", "as_the_model"])
def test_a_hostile_legacy_pickle_is_refused_before_it_runs(tmp_path: Path, kind: str, where: str) -> None:
    marker = tmp_path / "ran"
    hostile, named = _hostile(kind, marker)
    payload = hostile if where == "whole" else {"model": hostile, "feature_cols": ["bb_width_24"]}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / LEGACY_NAME).write_bytes(pickle.dumps(payload))

    with pytest.raises(LegacyError, match=f"{LEGACY_NAME}: refused to unpickle {named}"):
        read_legacy(legacy / LEGACY_NAME)
    settings = load_settings(models_dir=str(tmp_path / "models"))
    with pytest.raises(LegacyError, match="refused to unpickle"):
        migrate_legacy(legacy, settings, version="hostile")
    assert not marker.exists()
    assert not (settings.models_dir / "hostile").exists()


def test_only_the_named_classes_of_an_allowed_module_are_admitted(tmp_path: Path) -> None:
    """An allow-list of exact names: a module of the list does not open every attribute of it."""
    path = tmp_path / LEGACY_NAME
    path.write_bytes(b"\x80\x04csklearn.base\ninspect\n.")  # GLOBAL sklearn.base inspect: a module, not a class
    with pytest.raises(LegacyError, match="refused to unpickle sklearn.base.inspect"):
        read_legacy(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_sound_legacy_forest_loads_whatever_the_pickle_protocol(tmp_path: Path, protocol: int) -> None:
    """Protocol 5 (Python 3.14's default) rebuilds arrays with numpy's ``_frombuffer``: admitted too."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    features, labels = rng.normal(size=(200, 4)), rng.integers(0, 2, 200)
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=3).fit(features, labels)
    path = tmp_path / LEGACY_NAME
    columns = list(FEATURE_NAMES[:4])
    path.write_bytes(pickle.dumps({"model": forest, "feature_cols": columns}, protocol=protocol))
    loaded = read_legacy(path)
    assert np.array_equal(loaded.forest.predict_proba(features), forest.predict_proba(features))


def _native_copy(trained_version: Settings, tmp_path: Path, payload: Any) -> Path:
    """A copy of the trained version whose 1% native model is ``payload``, hashes rewritten."""
    version_dir = tmp_path / "models" / SOURCE
    shutil.copytree(trained_version.models_dir / SOURCE, version_dir)
    fields = json.loads((version_dir / MANIFEST_NAME).read_text())
    native = next(m for m in fields["models"] if m["name"] == fields["served_model"] and m["target"] == "1%")
    joblib.dump(payload, version_dir / native["native_file"])
    fields["files_sha256"] = {name: sha256_of(version_dir / name) for name in fields["files_sha256"]}
    (version_dir / MANIFEST_NAME).write_text(json.dumps(fields))
    return version_dir / native["native_file"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_native_model_is_refused_before_it_runs(trained_version: Settings, tmp_path: Path,
                                                          kind: str) -> None:
    marker = tmp_path / "ran"
    hostile, named = _hostile(kind, marker)
    native_file = _native_copy(trained_version, tmp_path, hostile)

    with pytest.raises(ManifestError, match=f"{native_file.name}: refused to unpickle {named}"):
        NativeModelSet.load(native_file.parent.parent)
    with pytest.raises(BsePredictError, match=f"refused to unpickle {named}"):
        BasePredictor.load(native_file)
    assert not marker.exists()


def test_a_hostile_object_array_inside_a_joblib_file_is_refused(tmp_path: Path) -> None:
    """joblib writes an object array as a nested pickle after its wrapper: that one is read under
    the same allow-list, or not at all."""
    marker = tmp_path / "ran"
    hostile, _ = _hostile("os.system", marker)
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": np.array([hostile, 1], dtype=object)}, path)
    with pytest.raises(BsePredictError, match="refused to unpickle"):
        BasePredictor.load(path)
    assert not marker.exists()


def test_a_native_model_still_loads_and_answers_as_saved(trained_version: Settings) -> None:
    version_dir = trained_version.models_dir / SOURCE
    fields = json.loads((version_dir / MANIFEST_NAME).read_text())
    entry = next(m for m in fields["models"] if m["target"] == "2%")
    loaded = BasePredictor.load(version_dir / entry["native_file"])
    rows = np.random.default_rng(0).normal(size=(5, loaded.forest_.n_features_in_))
    expected = joblib.load(version_dir / entry["native_file"]).predict_proba(rows)  # the trusted file, the old way
    # threads sum the trees in any order: equal to the last bits
    np.testing.assert_allclose(loaded.predict_proba(rows), expected, rtol=0, atol=1e-12)


def test_a_native_file_written_before_the_modules_moved_loads_as_the_class_in_its_new_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A native file written while the family lived in ``models.families.random_forest`` names that
    module; it loads as :mod:`bse_predict.families.random_forest`'s class and answers as before."""
    import sys
    import types

    from bse_predict.families.random_forest import RandomForestPredictor

    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, 300)
    model = RandomForestPredictor(n_estimators=3, max_depth=3, min_samples_leaf=20, seed=1, n_jobs=1)
    model.train(X, y)
    old_home = types.ModuleType("models.families.random_forest")
    old_home.RandomForestPredictor = RandomForestPredictor  # type: ignore[attr-defined]
    with monkeypatch.context() as patch:  # pickle names the class where __module__ says it lives
        for parent in ("models", "models.families"):
            patch.setitem(sys.modules, parent, types.ModuleType(parent))
        patch.setitem(sys.modules, "models.families.random_forest", old_home)
        patch.setattr(RandomForestPredictor, "__module__", "models.families.random_forest")
        model.save(tmp_path / "legacy.joblib")
    data = (tmp_path / "legacy.joblib").read_bytes()
    assert b"models.families.random_forest" in data and b"bse_predict.families" not in data
    loaded = BasePredictor.from_bytes(data, "legacy.joblib")
    assert type(loaded) is RandomForestPredictor
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
