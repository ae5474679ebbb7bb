"""A published prediction explained: its version's native model, the features of its candle, the check.

The worker serves ONNX graphs, which keep only their trees' leaves; the
contributions need the fitted trees, so the explainer loads the native model
the version keeps beside each graph (the manifest's ``native_file``: read once,
checked against its sha256, unpickled under the families' allow-list, as
``--engine native`` does). It rebuilds the call's inputs from the symbol's
candles with the worker's own code (:func:`bse_predict.candles.window.window_ending_at`,
:func:`bse_predict.features.inputs.build_inputs`), decomposes the model's answer,
and refuses to explain unless that answer is the published one: the recomputed
probabilities must match the message's within :data:`MATCH_TOLERANCE` (the ONNX
graphs equal their native models within 1e-5, checked when a version is trained). A window
that changed since the prediction (a late candle, a gap filled), a degraded
ensemble, live adaptive weights or a model that is not a tree family therefore
give no explanation rather than a false one.

Native models are kept in a small cache by (version, model, target). Not
thread-safe: the alerts service calls it from one thread.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import SecretStr

from configs.settings import TIMEFRAME_MS
from bse_predict.candles.schema import ModelRef, Prediction
from bse_predict.candles.window import window_ending_at
from bse_predict.errors import ManifestError, UnsafePickle
from bse_predict.explain.contributions import Contributions
from bse_predict.explain.errors import ExplanationUnavailable, NotExplainable
from bse_predict.explain.explanation import Explanation, explain_row
from bse_predict.features.inputs import build_inputs, min_history
from bse_predict.monitoring.drift import FeatureBins
from bse_predict.serving.manifest import load_manifest, read_verified

if TYPE_CHECKING:
    from bse_predict.families.base import BasePredictor

__all__ = ["Explainer", "MATCH_TOLERANCE"]

MATCH_TOLERANCE = 1e-4
"""Largest difference, per class, between the recomputed and the published probabilities."""


@dataclass(frozen=True)
class _Native:
    """One target's native model of a served model, and what explaining it needs."""

    model: BasePredictor
    variant: str | None  # an ensemble's strategy or ``member_<family>`` when the entry is not its own
    inputs: tuple[str, ...]  # what the native model reads (an ensemble: all its members' inputs)
    bins: dict[str, FeatureBins]


class Explainer:
    def __init__(self, models_dir: Path, signing_key: SecretStr | None = None, cache_size: int = 6) -> None:
        self._models_dir = models_dir
        self._signing_key = signing_key
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str, str], _Native] = OrderedDict()

    def explain(self, prediction: Prediction, target: str, open_time_ms: np.ndarray, ohlcv: np.ndarray,
                ) -> Explanation:
        """The explanation of ``prediction``'s call for ``target``, from the symbol's closed candles
        (``open_time_ms`` sorted, ``ohlcv`` float[n, 5]; candles after the prediction's are ignored);
        :class:`ExplanationUnavailable` says why there is none."""
        published = prediction.targets.get(target)
        if published is None:
            raise ExplanationUnavailable(f"the prediction has no target {target}")
        native = self._native(prediction.model, target)
        step_ms = TIMEFRAME_MS.get(prediction.timeframe)
        if step_ms is None:
            raise ExplanationUnavailable(f"unknown timeframe {prediction.timeframe!r}")
        window = window_ending_at(open_time_ms, ohlcv, prediction.open_time, min_history(native.inputs), step_ms)
        if window is None:
            raise ExplanationUnavailable("the stored candles no longer hold this candle's window")
        inputs = build_inputs(native.inputs, window[None], np.array([prediction.open_time], dtype=np.int64))
        try:
            contributions = self._contributions(native, native.model.rows_from_inputs(inputs))
        except NotExplainable as exc:
            raise ExplanationUnavailable(str(exc)) from exc
        answer = np.array([published.p_up, published.p_down, published.p_none])
        gap = float(np.max(np.abs(contributions.output()[0] - answer)))
        if not gap <= MATCH_TOLERANCE:
            raise ExplanationUnavailable(f"the model's answer for the stored window differs from the published one "
                                         f"by {gap:.2g}")
        return explain_row(contributions, 0, prediction.id, target, prediction.model, native.bins)

    def prepare(self, model: ModelRef, targets: tuple[str, ...]) -> None:
        """Load ``model``'s native models for ``targets`` ahead of the first explanation."""
        for target in targets:
            self._native(model, target)

    @staticmethod
    def _contributions(native: _Native, rows: np.ndarray) -> Contributions:
        from bse_predict.families.ensemble import EnsemblePredictor

        if native.variant is None:
            return native.model.contributions(rows)
        if not isinstance(native.model, EnsemblePredictor):
            raise ExplanationUnavailable(f"a {native.model.family} model has no variant {native.variant!r}")
        return native.model.strategy_contributions(rows, native.variant)

    def _native(self, model: ModelRef, target: str) -> _Native:
        key = (model.version, model.name, target)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        native = self._load(model, target)
        self._cache[key] = native
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return native

    def _load(self, model: ModelRef, target: str) -> _Native:
        version = model.version
        if not version or version.startswith(".") or "/" in version or "\\" in version:
            raise ExplanationUnavailable(f"{version!r} is not a version name")
        version_dir = self._models_dir / version
        try:
            manifest = load_manifest(version_dir, self._signing_key)
            if manifest.version != version:
                raise ManifestError(f"folder {version} holds version {manifest.version}")
            entry = manifest.entries_for(model.name).get(target)
            if entry is None or entry.native_file is None:
                raise ExplanationUnavailable(f"version {version} keeps no native {model.name} model for {target}")
            from bse_predict.families.base import BasePredictor  # the train extra: scikit-learn, xgboost

            predictor = BasePredictor.from_bytes(read_verified(version_dir, manifest, entry.native_file),
                                                 entry.native_file)
        except (ManifestError, UnsafePickle, TypeError, OSError, ImportError) as exc:
            raise ExplanationUnavailable(f"the native {model.name} model of version {version} cannot be loaded: "
                                         f"{exc}") from exc
        variant = entry.name.removeprefix(f"{entry.family}_") if entry.name != entry.family else None
        return _Native(predictor, variant, predictor.input_kinds, dict(manifest.feature_bins or {}))
