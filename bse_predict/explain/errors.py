"""Errors of the explanations: why a call has none."""

from __future__ import annotations

from bse_predict.errors import BsePredictError

__all__ = ["ExplainError", "NotExplainable", "ExplanationUnavailable"]


class ExplainError(BsePredictError):
    """Base of the explanations' errors."""


class NotExplainable(ExplainError):
    """A model whose answer has no exact per-feature decomposition: not a tree family, a stacking
    ensemble, or an ensemble row where a member failed."""


class ExplanationUnavailable(ExplainError):
    """A published prediction that cannot be explained truthfully (its version or window is gone, its
    model is not a tree family, or the recomputed answer differs from the published one); says why."""
