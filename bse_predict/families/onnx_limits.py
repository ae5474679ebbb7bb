"""ONNX versions every exported graph must respect to load in the pinned onnxruntime."""

from __future__ import annotations

__all__ = ["TARGET_OPSET", "ML_OPSET", "MAX_IR_VERSION", "cap_ir_version"]

TARGET_OPSET = 17
ML_OPSET = 3
MAX_IR_VERSION = 10  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default


def cap_ir_version(model: object) -> None:
    """Lower a ModelProto's IR version to what onnxruntime accepts (in place)."""
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)  # type: ignore[attr-defined]
