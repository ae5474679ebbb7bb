"""How an ensemble combines its members' class probabilities: the pure arithmetic.

Every function takes member probabilities as ``float[M, n, 3]`` (members,
rows, classes up/down/none). A member row that is not finite (NaN from a
failed member, or a member that raised, filled with NaN by the caller) is
*failed*: it gets weight 0 for that row, the other members' weights are
renormalised, and the row is marked ``degraded``. The ONNX graph of
:mod:`bse_predict.ensembles.graph` computes the same numbers in float32.

The climatology member: a spec with ``climatology`` (the class shares of the
ensemble's training rows) mixes in one more member that answers those shares
for every row (:func:`with_climatology`, appended last). Its weight is fitted
like any member's, so the mixture shrinks toward knowing nothing as far as the
members earn no better; it never fails. Stacking does not use it (its intercept
is the prior).

Strategies:

- ``weighted``: one weight per member (and the climatology), on the simplex,
  minimising the out-of-fold log loss of Σ w_i P_i with a penalty toward equal
  weights (:mod:`bse_predict.ensembles.weight_fit`): a member may get 0.
- ``dynamic``: per row, w_i · c_i^power with c_i the member's confidence
  max(p_up, p_down) / (p_up + p_down) (:func:`bse_predict.scoring.probabilities.confidence`);
  the power is chosen on out-of-fold log loss (0 is the weighted ensemble).
- ``regime``: one weight vector per HMM regime (filtered regime at the row,
  its arg max), fitted on that regime's out-of-fold rows; regimes with too
  few rows take the global weights.
- ``stacking``: multinomial logistic regression on the members' log
  probabilities (a failed member's are replaced by its mean out-of-fold
  log probabilities); its L2 strength is chosen on inner folds and it is
  dropped for the weighted mixture when it loses there
  (:mod:`bse_predict.ensembles.stacking_choice`).
- adaptive re-weighting (:func:`hedge_update`, :func:`adaptive_predictions`):
  multiplicative weights on each member's log loss as outcomes arrive,
  floored so that no member vanishes for good, for a live or replayed sequence.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.scoring.probabilities import confidence, outcome_log_loss, row_log_loss

__all__ = [
    "STRATEGIES",
    "EPS",
    "StackingCombiner",
    "CombinerSpec",
    "combine",
    "row_weights",
    "failed_rows",
    "with_climatology",
    "weighted_average",
    "dynamic_weights",
    "regime_weights",
    "stacking_predict",
    "log_loss",
    "hedge_update",
    "adaptive_predictions",
]

STRATEGIES = ("weighted", "dynamic", "regime", "stacking")
EPS = 1e-6
_STACKING_MAX_ITER = 1000

log = logging.getLogger(__name__)


def failed_rows(probs: np.ndarray) -> np.ndarray:
    """bool[M, n]: member rows that are not a finite probability triple."""
    return ~np.isfinite(probs).all(axis=2)


def with_climatology(probs: np.ndarray, climatology: np.ndarray | Sequence[float] | None) -> np.ndarray:
    """``probs`` [M, n, 3] with the climatology member appended as member M (its shares on every
    row); ``probs`` itself when there is none."""
    if climatology is None:
        return probs
    constant = np.broadcast_to(np.asarray(climatology, dtype=np.float64), (1, probs.shape[1], 3))
    return np.concatenate([probs, constant], axis=0)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean :func:`~bse_predict.scoring.probabilities.row_log_loss` of rows ``p`` [n, 3] against ``y``."""
    return float(np.mean(row_log_loss(p, y)))


def weighted_average(probs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights [M] or per row [n, M] -> (probabilities [n, 3], degraded bool [n]). Failed member
    rows are dropped and the rest renormalised; a row where every member failed is NaN."""
    bad = failed_rows(probs)  # [M, n]
    clean = np.where(bad[..., None], 0.0, probs)
    w = np.broadcast_to(weights if weights.ndim == 2 else weights[None, :], (probs.shape[1], probs.shape[0])).T
    effective = np.where(bad, 0.0, w)  # [M, n]
    total = effective.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.einsum("mn,mnc->nc", effective, clean) / total[:, None]
    return out, bad.any(axis=0)


def dynamic_weights(probs: np.ndarray, weights: np.ndarray, power: float) -> np.ndarray:
    """[n, M]: static weights times each member's confidence to ``power``."""
    c = confidence(np.nan_to_num(probs, nan=0.0))  # [M, n]
    return (weights[:, None] * c**power).T


def regime_weights(regime_probabilities: np.ndarray, by_regime: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """[n, M]: the weights of each row's most probable regime (``by_regime`` [K, M]); rows whose
    regime is not finite take ``fallback``."""
    known = np.isfinite(regime_probabilities).all(axis=1)
    state = np.argmax(np.nan_to_num(regime_probabilities, nan=-1.0), axis=1)
    return np.where(known[:, None], by_regime[state], fallback[None, :])


@dataclass(frozen=True)
class StackingCombiner:
    """A multinomial logistic regression over the members' log probabilities."""

    coef: np.ndarray  # [3, 3M]
    intercept: np.ndarray  # [3]
    mean_log_probs: np.ndarray  # [M, 3], stands in for a failed member

    @staticmethod
    def meta_features(probs: np.ndarray, mean_log_probs: np.ndarray) -> np.ndarray:
        bad = failed_rows(probs)
        logs = np.log(np.clip(np.nan_to_num(probs, nan=1.0), EPS, None))
        logs = np.where(bad[..., None], mean_log_probs[:, None, :], logs)  # [M, n, 3]
        return np.transpose(logs, (1, 0, 2)).reshape(probs.shape[1], -1)

    @classmethod
    def fit(cls, probs: np.ndarray, y: np.ndarray, c: float, seed: int,
            max_iter: int = _STACKING_MAX_ITER) -> StackingCombiner:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        logs = np.log(np.clip(probs, EPS, None))
        mean_log_probs = logs.mean(axis=1)
        X = cls.meta_features(probs, mean_log_probs)
        with warnings.catch_warnings():
            # not for the user's screen: whether the fit is kept is decided by its inner out-of-fold log loss
            warnings.simplefilter("ignore", ConvergenceWarning)
            meta = LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit(X, y)
        if int(np.max(meta.n_iter_)) >= max_iter:
            log.debug("stacking meta-learner at C=%s stopped at %d iterations before converging", c, max_iter)
        coef = np.zeros((3, X.shape[1]))
        intercept = np.full(3, -30.0)  # a class never seen out of fold stays (almost) impossible
        coef[meta.classes_] = meta.coef_ if len(meta.classes_) > 2 else np.vstack([-meta.coef_, meta.coef_]) / 2
        intercept[meta.classes_] = meta.intercept_ if len(meta.classes_) > 2 else np.r_[-meta.intercept_,
                                                                                         meta.intercept_] / 2
        return cls(coef, intercept, mean_log_probs)


def stacking_predict(probs: np.ndarray, combiner: StackingCombiner) -> tuple[np.ndarray, np.ndarray]:
    logits = StackingCombiner.meta_features(probs, combiner.mean_log_probs) @ combiner.coef.T + combiner.intercept
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True), failed_rows(probs).any(axis=0)


@dataclass(frozen=True)
class CombinerSpec:
    """What an ensemble combines its members with: one strategy of :data:`STRATEGIES` and its
    fitted numbers. The ONNX graph (:mod:`bse_predict.ensembles.graph`) and :func:`combine` read it."""

    strategy: str
    weights: np.ndarray  # [M], or [M + 1] with the climatology member last
    power: float = 0.0
    by_regime: np.ndarray | None = None  # [K, M] (or [K, M + 1])
    stacking: StackingCombiner | None = None
    climatology: np.ndarray | None = None  # [3]: the climatology member's shares


def combine(spec: CombinerSpec, probs: np.ndarray, regime_probabilities: np.ndarray | None = None,
            weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Member probabilities [M, n, 3] -> (probabilities [n, 3], degraded [n]) by ``spec`` (its
    climatology member added here); ``weights`` replaces the fitted weight vector (live adaptive
    weights, weighted strategy)."""
    if spec.strategy == "stacking" and spec.stacking is not None:
        return stacking_predict(probs, spec.stacking)
    rows = with_climatology(probs, spec.climatology)
    return weighted_average(rows, row_weights(spec, rows, regime_probabilities, weights))


def row_weights(spec: CombinerSpec, probs: np.ndarray, regime_probabilities: np.ndarray | None = None,
                weights: np.ndarray | None = None) -> np.ndarray:
    """The member weights of each row [n, M] (before failed members are dropped) of a strategy that
    averages its members (all but stacking), as :func:`combine` takes them; ``probs`` with the
    climatology member already added (:func:`with_climatology`)."""
    base = spec.weights if weights is None else weights
    if spec.strategy == "weighted":
        return np.broadcast_to(base, (probs.shape[1], probs.shape[0]))
    if spec.strategy == "dynamic":
        return dynamic_weights(probs, base, spec.power)
    if spec.strategy == "regime" and spec.by_regime is not None and regime_probabilities is not None:
        return regime_weights(regime_probabilities, spec.by_regime, base)
    raise ValueError(f"strategy {spec.strategy!r} cannot combine with what it was given")


def hedge_update(weights: np.ndarray, member_probs: np.ndarray, outcome: int, rate: float,
                 floor: float) -> np.ndarray:
    """One outcome arrives: w_i ∝ w_i · exp(-rate · log loss_i), then floored. A member's log loss
    is capped at -log(EPS) (its p of the outcome raised to EPS); a member whose prediction failed
    (not finite) keeps its weight."""
    p = member_probs[:, outcome]
    loss = np.where(np.isfinite(p), outcome_log_loss(np.maximum(np.nan_to_num(p, nan=1.0), EPS)), 0.0)
    w = weights * np.exp(-rate * (loss - loss.min()))
    w = w / w.sum()
    w = np.maximum(w, floor)
    return w / w.sum()


def adaptive_predictions(probs: np.ndarray, y: np.ndarray, open_time_ms: np.ndarray, horizon_ms: int,
                         initial: np.ndarray, rate: float, floor: float) -> np.ndarray:
    """Replay rows in time order, re-weighting with :func:`hedge_update` as each row's outcome
    becomes known (``horizon_ms`` after its candle: never earlier, so nothing looks ahead).
    Returns the weighted-average probabilities [n, 3] in the rows' original order."""
    order = np.argsort(open_time_ms, kind="stable")
    pending: deque[int] = deque()
    weights = initial.copy()
    out = np.empty((probs.shape[1], 3))
    for row in order:
        now = open_time_ms[row]
        while pending and open_time_ms[pending[0]] + horizon_ms <= now:
            done = pending.popleft()
            weights = hedge_update(weights, probs[:, done], int(y[done]), rate, floor)
        out[row] = weighted_average(probs[:, row:row + 1], weights)[0][0]
        pending.append(row)
    return out
