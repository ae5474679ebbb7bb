"""What the stream needs from a served model set, and the step shared by the
worker and the trainer-side checks: windows -> inputs -> probabilities."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.inputs import build_inputs

__all__ = ["Predictor", "predict_windows"]


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


def predict_windows(predictor: Predictor, windows: np.ndarray, open_time_ms: np.ndarray) -> dict[str, np.ndarray]:
    """float64[B, L, 5] gap-filled windows -> {target: float64[B, 3]} (up, down, none)."""
    return predictor.predict(build_inputs(predictor.input_kinds, windows, open_time_ms))
