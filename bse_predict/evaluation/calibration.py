"""Calibrators fit out of fold: a family's probabilities on a held-out slice -> better ones.

- ``temperature`` (the default): ``softmax(log p / T)``, one parameter fit
  by log loss. It shrinks (T > 1) or sharpens confidence and leaves the
  ranking of rows, hence the AUC, untouched; it cannot move the class priors.
- ``platt``: multinomial logistic regression on the three log-probabilities
  (Platt scaling for three classes, "matrix scaling"): twelve parameters, can
  move the priors. Choose it for a family whose training distorts the priors
  (class weights, resampling).
- ``isotonic``: one isotonic regression per class, then renormalised. No
  shape assumption, but step-shaped: it ties many rows (which costs AUC) and
  the per-class fits ignore that the classes sum to one.
- ``none``: the identity, to measure what calibration buys.

Why temperature by default: the calibration slice is the newest part of a
fold's training rows, and hourly crypto's base rates drift from one block of
months to the next, so whatever a calibrator learns about the *priors* on
that slice tends not to carry into the test block; a shrink of confidence
does. Measured on the full BTC/ETH/SOL futures history (target 2%, five
expanding folds, RandomForest with the default settings, 78,527 test rows):
out-of-fold log loss 0.7839 uncalibrated, 0.7817 temperature, 0.7882 Platt,
0.7959 isotonic; ECE 0.0146, 0.0090, 0.0153, 0.0200; AUC 0.535, 0.536,
0.535, 0.529. On a deliberately overconfident predictor all three help
(``tests/unit/test_calibration.py``).

Every calibrator returns float64[n, 3] rows that sum to 1 with each
probability at least :data:`PROBABILITY_FLOOR`.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from bse_predict.training.blas import single_threaded_blas

__all__ = ["Calibrator", "CalibratorName", "CALIBRATORS", "DEFAULT_CALIBRATOR", "PROBABILITY_FLOOR", "make_calibrator",
           "PlattCalibrator", "TemperatureCalibrator", "IsotonicCalibrator", "IdentityCalibrator"]

CalibratorName = Literal["platt", "temperature", "isotonic", "none"]
CALIBRATORS: tuple[CalibratorName, ...] = ("platt", "temperature", "isotonic", "none")
DEFAULT_CALIBRATOR: CalibratorName = "temperature"
PROBABILITY_FLOOR = 1e-6
"""The least probability a calibrator returns (rows are mixed with it); the log-loss floor of the
scores is :data:`bse_predict.scoring.probabilities.PROBABILITY_FLOOR`."""
_CLASSES = 3


class Calibrator(Protocol):
    def fit(self, probabilities: np.ndarray, labels: np.ndarray) -> Calibrator: ...

    def transform(self, probabilities: np.ndarray) -> np.ndarray: ...


def _floored(probabilities: np.ndarray) -> np.ndarray:
    """Rows renormalised (an all-zero row becomes uniform), then mixed with the floor."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    total = p.sum(axis=1, keepdims=True)
    p = np.divide(p, total, out=np.full_like(p, 1.0 / _CLASSES), where=total > 0)
    return PROBABILITY_FLOOR + (1.0 - _CLASSES * PROBABILITY_FLOOR) * p


def _log(probabilities: np.ndarray) -> np.ndarray:
    return np.log(_floored(probabilities))


class IdentityCalibrator:
    def fit(self, probabilities: np.ndarray, labels: np.ndarray) -> IdentityCalibrator:
        return self

    def transform(self, probabilities: np.ndarray) -> np.ndarray:
        return _floored(probabilities)


class PlattCalibrator:
    """Multinomial logistic regression on log-probabilities (L2, ``C``)."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, probabilities: np.ndarray, labels: np.ndarray) -> PlattCalibrator:
        from sklearn.linear_model import LogisticRegression

        labels = np.asarray(labels, dtype=np.int64)
        self.classes_ = np.unique(labels)
        self.model_ = None
        if len(self.classes_) >= 2:
            with single_threaded_blas():
                self.model_ = LogisticRegression(C=self.C, max_iter=1000).fit(_log(probabilities), labels)
        return self

    def transform(self, probabilities: np.ndarray) -> np.ndarray:
        if self.model_ is None:  # one class in the slice: nothing to learn a mapping from
            return _floored(probabilities)
        full = np.zeros((len(probabilities), _CLASSES))
        full[:, self.model_.classes_] = self.model_.predict_proba(_log(probabilities))
        return _floored(full)


class TemperatureCalibrator:
    """``softmax(log p / T)`` with T minimising the slice's log loss (T > 1 shrinks)."""

    def fit(self, probabilities: np.ndarray, labels: np.ndarray) -> TemperatureCalibrator:
        from scipy.optimize import minimize_scalar
        from scipy.special import log_softmax

        logits = _log(probabilities)
        rows = np.arange(len(labels))
        labels = np.asarray(labels, dtype=np.int64)

        def loss(log_t: float) -> float:
            return float(-np.mean(log_softmax(logits / np.exp(log_t), axis=1)[rows, labels]))

        self.temperature_ = float(np.exp(minimize_scalar(loss, bounds=(-3.0, 3.0), method="bounded").x))
        return self

    def transform(self, probabilities: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        return _floored(softmax(_log(probabilities) / self.temperature_, axis=1))


class IsotonicCalibrator:
    """Per-class isotonic regression of the class indicator on its probability, renormalised."""

    def fit(self, probabilities: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        from sklearn.isotonic import IsotonicRegression

        p = _floored(probabilities)
        self.regressions_ = [
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p[:, k], (labels == k).astype(float))
            for k in range(_CLASSES)
        ]
        return self

    def transform(self, probabilities: np.ndarray) -> np.ndarray:
        p = _floored(probabilities)
        return _floored(np.column_stack([r.predict(p[:, k]) for k, r in enumerate(self.regressions_)]))


def make_calibrator(name: CalibratorName) -> Calibrator:
    makers = {"platt": PlattCalibrator, "temperature": TemperatureCalibrator, "isotonic": IsotonicCalibrator,
              "none": IdentityCalibrator}
    if name not in makers:
        raise ValueError(f"unknown calibrator {name!r}; known: {', '.join(CALIBRATORS)}")
    return makers[name]()
