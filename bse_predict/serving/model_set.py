"""What the stream needs from a served model set, and the step shared by the
worker and the trainer-side checks: windows -> inputs -> probabilities.

A model set may say more than probabilities (:class:`ModelOutputs`): which rows
were answered by a degraded ensemble (a member dropped) and the HMM regime. A
predictor that offers ``predict_outputs`` gives them; any other answers
``degraded`` False and no regime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from bse_predict.features.inputs import build_inputs

if TYPE_CHECKING:
    from bse_predict.serving.manifest import Manifest

__all__ = ["Predictor", "DetailedPredictor", "ModelOutputs", "ManifestModelSet", "predict_windows",
           "predict_input_outputs"]


@dataclass(frozen=True)
class ModelOutputs:
    """One batch's answer: probabilities per target, and per row ``degraded`` and the regime."""

    probabilities: dict[str, np.ndarray]
    degraded: np.ndarray
    """bool[B]: some target's ensemble dropped a failed member for this row."""
    regime_states: tuple[str, ...] = ()
    regime_probabilities: np.ndarray | None = None
    """float[B, K] forward-filtered regime probabilities, states named by ``regime_states``."""
    target_regimes: dict[str, np.ndarray] = field(default_factory=dict)
    """Each target's own regime (its models may have their own HMM); ``regime_probabilities`` is the first."""
    member_probabilities: dict[str, np.ndarray] | None = None
    """An ensemble served member by member: {target: float[M, B, 3]}, NaN where a member failed."""


class Predictor(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def model_name(self) -> str: ...

    @property
    def targets(self) -> tuple[str, ...]: ...

    @property
    def input_kinds(self) -> tuple[str, ...]:
        """The inputs its models read (``features``, ``sequence``)."""
        ...

    @property
    def min_history(self) -> int:
        """Candles of gap-filled history one prediction needs, the current one included."""
        ...

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class ManifestModelSet:
    """What every served model set of a version says the same way: ``version`` is its manifest's,
    ``model_name`` the name it was loaded under."""

    def __init__(self, manifest: Manifest, model_name: str) -> None:
        self.manifest = manifest
        self._model_name = model_name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def model_name(self) -> str:
        return self._model_name


def predict_windows(predictor: Predictor, windows: np.ndarray, open_time_ms: np.ndarray) -> dict[str, np.ndarray]:
    """float64[B, L, 5] gap-filled windows -> {target: float64[B, 3]} (up, down, none)."""
    return predictor.predict(build_inputs(predictor.input_kinds, windows, open_time_ms))


@runtime_checkable
class DetailedPredictor(Protocol):
    def predict_outputs(self, inputs: dict[str, np.ndarray]) -> ModelOutputs: ...


def predict_input_outputs(predictor: Predictor, inputs: dict[str, np.ndarray]) -> ModelOutputs:
    """The predictor's answer on its inputs, with the degraded flags and the regime where it has them."""
    if isinstance(predictor, DetailedPredictor):
        return predictor.predict_outputs(inputs)
    return ModelOutputs(predictor.predict(inputs), np.zeros(len(next(iter(inputs.values()))), dtype=bool))
