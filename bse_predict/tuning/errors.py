"""The errors of the hyperparameter search."""

from __future__ import annotations

from bse_predict.errors import BsePredictError

__all__ = ["TuningError"]


class TuningError(BsePredictError):
    """The search cannot run as asked: an unknown or untunable family, a study run on other data, too few rows."""
