"""Mixture weights on the simplex, fitted on out-of-fold member predictions with a stabilising penalty.

The weights ``w`` (every ``w_i >= 0``, ``Σ w_i = 1``) of the mixture ``Σ_i w_i P_i`` minimise

    mean over rows of  -log(Σ_i w_i p_i(y))  +  (penalty / 2) · ||w - prior||²

with ``p_i(y)`` member ``i``'s probability of the outcome (a failed member row,
not finite, counts 0) and ``prior`` all the weight on member ``toward`` (the
climatology member, :func:`bse_predict.ensembles.combiners.with_climatology`),
or equal weights without one. The mixture's log loss is convex in ``w``; the
penalty makes the minimum unique, so two members that say nearly the same thing
share their weight equally instead of swapping it from one resample to the
next, and what the members do not earn goes to climatology (shrinkage). A
member that only adds noise is driven to exactly 0: the constraints are bounds,
not a floor (SLSQP, with the analytic gradient).
"""

from __future__ import annotations

import numpy as np

from bse_predict.scoring.probabilities import PROBABILITY_FLOOR, outcome_log_loss

__all__ = ["fit_weights", "mixture_objective"]

_ROUNDING = 1e-9
"""A weight below this after the solver is its rounding of a bound: set to exactly 0."""


def _picked(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float[M, n]: each member's probability of the outcome that happened; a failed row 0."""
    return np.nan_to_num(probs[:, np.arange(len(y)), y], nan=0.0)


def mixture_objective(weights: np.ndarray, picked: np.ndarray, penalty: float,
                      prior: np.ndarray) -> tuple[float, np.ndarray]:
    """(penalised mean log loss of the mixture, its gradient in ``weights``) for ``picked`` [M, n]."""
    mixed = weights @ picked
    loss = float(np.mean(outcome_log_loss(mixed)))
    gradient = -(picked / np.maximum(mixed, PROBABILITY_FLOOR)).mean(axis=1)
    offset = weights - prior
    return loss + 0.5 * penalty * float(offset @ offset), gradient + penalty * offset


def fit_weights(probs: np.ndarray, y: np.ndarray, penalty: float, toward: int | None = None) -> np.ndarray:
    """float[M]: the weights on the simplex minimising :func:`mixture_objective` on ``probs``
    [M, n, 3] against outcomes ``y``, the penalty pulling toward member ``toward`` (``None``: toward
    equal weights); equal weights for one member or no rows."""
    from scipy.optimize import minimize

    m = probs.shape[0]
    equal = np.full(m, 1.0 / m)
    if m == 1 or len(y) == 0:
        return equal
    if penalty < 0:
        raise ValueError(f"the weight penalty must be >= 0, got {penalty}")
    prior = equal if toward is None else np.eye(m)[toward]
    picked = _picked(probs, np.asarray(y, dtype=np.int64))
    result = minimize(mixture_objective, equal, args=(picked, penalty, prior), jac=True, method="SLSQP",
                      bounds=[(0.0, 1.0)] * m,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                      options={"ftol": 1e-12, "maxiter": 500})
    weights = np.where(result.x > _ROUNDING, result.x, 0.0)
    return weights / weights.sum()
