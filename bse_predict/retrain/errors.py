"""The errors of a retrain: each says at which step it stopped and why, in one line."""

from __future__ import annotations

from bse_predict.errors import BsePredictError

__all__ = ["RetrainError", "GateRefused"]


class RetrainError(BsePredictError):
    """A retrain that stops at ``step`` (read, train, gate, shadow, prune) for ``reason``; the fleet is left as it was."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"retrain failed at {step}: {reason}")
        self.step = step
        self.reason = reason


class GateRefused(RetrainError):
    """The new version is significantly worse than the live one on the holdout: it is not shadowed."""

    def __init__(self, reason: str) -> None:
        super().__init__("gate", reason)
