"""Margin contributions carried into probability, keeping them additive.

A softmax model answers p = softmax(m) with the margin m = b + Σ_f φ_f (bias b,
each feature's margin contribution φ_f, e.g. XGBoost's TreeSHAP values). Along
the straight line m(t) = b + t·Σ_f φ_f from the bias (t = 0) to the row's
margin (t = 1), dp/dt = J(m(t)) Σ_f φ_f with J = diag(p) − p pᵀ, the softmax's
Jacobian. So, with A = ∫₀¹ J(m(t)) dt,

    softmax(m) − softmax(b) = A Σ_f φ_f = Σ_f A φ_f

and feature f's share of the probability is A φ_f: the features add up exactly
to the model's probabilities, with softmax(b) (the answer at the bias margin) as
the probability bias. A feature that raised only its own class's margin gets
that class's probability raised by it, the others lowered; since J's columns
sum to 0, each feature's shares sum to 0 over the classes.

A is computed by composite Gauss–Legendre quadrature: 16 nodes on each of as
many equal panels of [0, 1] as the largest move between two classes' margins
has units of :data:`MARGIN_PER_PANEL`. The integrand is analytic; its nearest
singularities lie π / (that move) off the real line, so each panel sees them
equally far whatever the move, and the error stays below 1e-12
(tests/unit/test_explain_contributions.py measures it for moves past ±100).
"""

from __future__ import annotations

import numpy as np

__all__ = ["softmax", "softmax_path", "MARGIN_PER_PANEL"]

MARGIN_PER_PANEL = 4.0
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)


def softmax(margins: np.ndarray) -> np.ndarray:
    """Over the last axis."""
    e = np.exp(margins - margins.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_path(values: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Margin contributions float[n, F, C] and bias float[n, C] -> the same in probability (see the module)."""
    delta = values.sum(axis=1)  # [n, C]: the row's margin minus the bias
    t, w = _path_nodes(float(np.ptp(delta, axis=1).max(initial=0.0)))
    p = softmax(bias[:, None, :] + t[None, :, None] * delta[:, None, :])  # [n, K, C] along the path
    mean_jacobian = (np.einsum("k,nki,ij->nij", w, p, np.eye(p.shape[2]))
                     - np.einsum("k,nki,nkj->nij", w, p, p))  # [n, C, C]
    return np.einsum("nij,nfj->nfi", mean_jacobian, values), softmax(bias)


def _path_nodes(move: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1]: 16 per panel, one panel per :data:`MARGIN_PER_PANEL` of ``move``."""
    panels = max(1, int(np.ceil(move / MARGIN_PER_PANEL)))
    starts = np.arange(panels) / panels
    nodes = (starts[:, None] + (_NODES[None, :] + 1.0) / (2 * panels)).ravel()
    return nodes, np.tile(_WEIGHTS / (2 * panels), panels)
