"""Domain errors of the pure core; adapters catch these and nothing broader."""

from __future__ import annotations

__all__ = ["BsePredictError", "InvalidCandle", "ManifestError", "NotServable", "UnsafePickle", "InsufficientHistory", "ModelError"]


class BsePredictError(Exception):
    """Base of every error bse-predict raises on purpose."""


class InvalidCandle(BsePredictError):
    """A candle message that fails validation; ``kind`` names the rule it broke."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class ManifestError(BsePredictError):
    """A model version whose manifest, files or hashes do not check out."""


class NotServable(ManifestError):
    """A version whose served model training marked not servable (worse than climatology on its holdout)."""


class UnsafePickle(BsePredictError):
    """A pickle naming a class outside its allow-list (:mod:`bse_predict.integrity.restricted_pickle`): refused
    before the class is imported, so nothing of the file has run."""


class InsufficientHistory(BsePredictError):
    """A window too short for the served models' ``min_history``."""


class ModelError(BsePredictError):
    """A served model failed on a batch (the runtime's own error, turned into this one by the runner)."""
