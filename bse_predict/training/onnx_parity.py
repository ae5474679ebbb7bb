"""Prove that an exported ONNX graph answers like the native model it came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bse_predict.errors import ManifestError
from bse_predict.families.base import ONNX_OUTPUT
from bse_predict.serving.manifest import ParityReport
from bse_predict.serving.onnx_runner import make_session

__all__ = ["check_parity", "PARITY_TOLERANCE"]

PARITY_TOLERANCE = 1e-5


def check_parity(native_probabilities: np.ndarray, onnx_path: Path, feed: dict[str, np.ndarray],
                 tolerance: float = PARITY_TOLERANCE) -> ParityReport:
    """Run the ONNX file on ``feed`` (its inputs by name) and compare with the native
    probabilities of the same rows; raise past tolerance."""
    session = make_session(onnx_path, ["CPUExecutionProvider"])
    (onnx_probabilities,) = session.run([ONNX_OUTPUT], feed)
    rows = len(native_probabilities)
    max_diff = float(np.max(np.abs(onnx_probabilities - native_probabilities))) if rows else 0.0
    if not max_diff <= tolerance:
        raise ManifestError(f"{onnx_path.name}: ONNX differs from the native model by {max_diff:.2e} > {tolerance:.0e}")
    return ParityReport(rows=rows, max_abs_diff=max_diff, tolerance=tolerance)
