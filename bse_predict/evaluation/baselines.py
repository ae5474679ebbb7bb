"""The baselines every family is measured against, fit on the same training rows.

- ``climatology``: the training rows' class shares (Jeffreys-smoothed, +0.5
  per class, so a class absent from training still has a finite log loss:
  :func:`bse_predict.scoring.probabilities.climatology_shares`).
- ``always_up``: always calls up with a fixed confidence ``c``
  (``p_up / (p_up + p_down) = c``, 0.65 by default: a permanent STRONG_BUY),
  and the climatology's share of "none": ``p = ((1 - q) c, (1 - q)(1 - c), q)``.
  Every probability is positive, so its log loss is finite, and the only
  thing it asserts beyond climatology is the side.
- ``momentum_24h``: the sign of the last 24 h log return (> 0 or not) picks
  one of two buckets; each predicts its training rows' class shares
  (smoothed like climatology).
- ``logistic``: multinomial logistic regression on the standardised feature
  rows: the linear model a family must beat to justify itself. Strong L2
  (C = 0.01): 82 correlated, heavy-tailed features and a thin signal make a
  weakly regularised fit overconfident out of sample (on 900 real hourly rows,
  C = 1 scored a log loss of 1.34 against climatology's 0.72; C = 0.01, 0.95).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol, Self

import numpy as np

from bse_predict.training.blas import single_threaded_blas
from bse_predict.evaluation.calibration import PROBABILITY_FLOOR
from bse_predict.labels.first_touch import expand_classes
from bse_predict.scoring.probabilities import climatology_shares

__all__ = ["Baseline", "Climatology", "AlwaysUp", "Momentum24h", "LogisticBaseline", "make_baselines", "BASELINE_NAMES"]


class Baseline(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]

    def fit(self, features: np.ndarray, return_24h: np.ndarray, labels: np.ndarray) -> Baseline: ...

    def predict_proba(self, features: np.ndarray, return_24h: np.ndarray) -> np.ndarray: ...


class _SameForEveryRow(ABC):
    """A baseline that answers every row with one probability vector, learnt from the training labels."""

    def fit(self, features: np.ndarray, return_24h: np.ndarray, labels: np.ndarray) -> Self:
        self.probabilities_ = self._probabilities(labels)
        return self

    def predict_proba(self, features: np.ndarray, return_24h: np.ndarray) -> np.ndarray:
        return np.tile(self.probabilities_, (len(return_24h), 1))

    @abstractmethod
    def _probabilities(self, labels: np.ndarray) -> np.ndarray:
        """float64[3]: the (up, down, none) answer for every row."""


class Climatology(_SameForEveryRow):
    name: ClassVar[str] = "climatology"
    description: ClassVar[str] = "training class shares"

    def _probabilities(self, labels: np.ndarray) -> np.ndarray:
        return climatology_shares(labels)


class AlwaysUp(_SameForEveryRow):
    name: ClassVar[str] = "always_up"
    description: ClassVar[str] = "always up at a fixed confidence; p_none from climatology"

    def __init__(self, confidence: float = 0.65) -> None:
        self.confidence = confidence

    def _probabilities(self, labels: np.ndarray) -> np.ndarray:
        q = climatology_shares(labels)[2]
        return np.array([(1 - q) * self.confidence, (1 - q) * (1 - self.confidence), q])


class Momentum24h:
    name: ClassVar[str] = "momentum_24h"
    description: ClassVar[str] = "class shares of training rows with the same sign of the 24 h return"

    def fit(self, features: np.ndarray, return_24h: np.ndarray, labels: np.ndarray) -> Momentum24h:
        rising = return_24h > 0
        self.rising_ = climatology_shares(labels[rising])
        self.falling_ = climatology_shares(labels[~rising])
        return self

    def predict_proba(self, features: np.ndarray, return_24h: np.ndarray) -> np.ndarray:
        return np.where((return_24h > 0)[:, None], self.rising_, self.falling_)


class LogisticBaseline:
    name: ClassVar[str] = "logistic"
    description: ClassVar[str] = "multinomial logistic regression on the standardised features"

    def __init__(self, C: float = 0.01) -> None:
        self.C = C

    def fit(self, features: np.ndarray, return_24h: np.ndarray, labels: np.ndarray) -> LogisticBaseline:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
        with single_threaded_blas():
            self.model_.fit(features, labels)
        return self

    def predict_proba(self, features: np.ndarray, return_24h: np.ndarray) -> np.ndarray:
        p = expand_classes(self.model_.predict_proba(features), self.model_[-1].classes_)
        p = np.clip(p, PROBABILITY_FLOOR, None)  # a class absent from training keeps a finite log loss
        return p / p.sum(axis=1, keepdims=True)


BASELINE_NAMES = ("climatology", "always_up", "momentum_24h", "logistic")


def make_baselines(always_up_confidence: float) -> list[Baseline]:
    """Fresh, unfitted baselines in report order; climatology first (the others' reference)."""
    return [Climatology(), AlwaysUp(always_up_confidence), Momentum24h(), LogisticBaseline()]
