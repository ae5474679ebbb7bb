"""The plain approach, kept as a reference: the native scikit-learn models of a
version, called with ``predict_proba``. ``bench`` runs the worker with it to show
what ONNX buys; production serves ONNX (``bse_predict.serving.onnx_runner``).

A native file is a joblib pickle: it is read once, checked against its sha256, and
unpickled from those bytes under the families' allow-list
(:meth:`bse_predict.families.base.BasePredictor.from_bytes`), so neither a swapped file nor
a pickle naming any other class runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from bse_predict.errors import ManifestError, UnsafePickle
from bse_predict.serving.manifest import Manifest, load_manifest, read_verified, verify_files
from bse_predict.serving.model_set import ManifestModelSet

__all__ = ["NativeModelSet"]


class NativeModelSet(ManifestModelSet):
    """Same interface as :class:`bse_predict.serving.onnx_runner.ServedModelSet`, native models inside."""

    def __init__(self, manifest: Manifest, models: dict[str, Any]) -> None:
        super().__init__(manifest, f"{manifest.served_model}-native")
        self._models = models

    @classmethod
    def load(cls, version_dir: Path, signing_key: SecretStr | None = None) -> NativeModelSet:
        """``signing_key`` (``Settings.model_signing_secret``): the manifest must be signed under it."""
        from bse_predict.families import BasePredictor  # the train extra; a serving install has no scikit-learn

        manifest = load_manifest(version_dir, signing_key)
        verify_files(version_dir, manifest)
        models = {}
        for target, entry in manifest.entries_for(manifest.served_model).items():
            if entry.native_file is None:
                raise ManifestError(f"version {manifest.version} keeps no native model for {target}")
            data = read_verified(version_dir, manifest, entry.native_file)
            try:
                models[target] = BasePredictor.from_bytes(data, entry.native_file)
            except (UnsafePickle, TypeError) as exc:
                raise ManifestError(f"version {manifest.version}: {exc}") from exc
        return cls(manifest, models)

    @property
    def min_history(self) -> int:
        return self.manifest.min_history

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self._models)

    @property
    def input_kinds(self) -> tuple[str, ...]:
        return tuple(sorted({kind for model in self._models.values() for kind in model.input_kinds}))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {target: model.predict_proba(model.rows_from_inputs(inputs)) for target, model in self._models.items()}
