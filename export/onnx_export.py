"""Export native models to ONNX and prove the export answers like the original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier

from models.errors import ManifestError
from models.manifest import ParityReport
from models.onnx_runner import make_session

__all__ = ["export_random_forest", "check_parity", "PARITY_TOLERANCE", "MAX_IR_VERSION"]

PARITY_TOLERANCE = 1e-5
TARGET_OPSET = 17
MAX_IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; 10 matches opset 17


def export_random_forest(model: RandomForestClassifier, n_features: int, path: Path) -> None:
    """skl2onnx without ZipMap: one float32 input "features", output "probabilities"."""
    proto = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": TARGET_OPSET, "ai.onnx.ml": 3},
    )
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())


def check_parity(native_probabilities: np.ndarray, onnx_path: Path, rows: np.ndarray,
                 tolerance: float = PARITY_TOLERANCE) -> ParityReport:
    """Run the ONNX file on ``rows`` and compare with the native probabilities; raise past tolerance."""
    session = make_session(onnx_path, ["CPUExecutionProvider"])
    (onnx_probabilities,) = session.run(["probabilities"], {"features": rows.astype(np.float32)})
    max_diff = float(np.max(np.abs(onnx_probabilities - native_probabilities))) if len(rows) else 0.0
    if not max_diff <= tolerance:
        raise ManifestError(f"{onnx_path.name}: ONNX differs from the native model by {max_diff:.2e} > {tolerance:.0e}")
    return ParityReport(rows=len(rows), max_abs_diff=max_diff, tolerance=tolerance)
