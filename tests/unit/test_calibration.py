"""Calibrators fit on one slice improve an overconfident predictor on another, and always return valid rows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from bse_predict.evaluation.calibration import CALIBRATORS, PROBABILITY_FLOOR, TemperatureCalibrator, make_calibrator
from bse_predict.evaluation.scoring import expected_calibration_error
from bse_predict.scoring.probabilities import row_log_loss


def _overconfident(rows: int, seed: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities; the predictor reports them sharpened (logits × 3)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 0.6, size=(rows, 3)) + np.array([0.1, 0.2, -0.5])
    truth = softmax(logits, axis=1)
    labels = (rng.random(rows)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    return softmax(sharpness * logits, axis=1), labels


@pytest.mark.parametrize("name", ["platt", "temperature", "isotonic"])
def test_calibration_lowers_ece_and_log_loss_out_of_sample(name: str) -> None:
    fit_p, fit_y = _overconfident(6000, seed=1)
    test_p, test_y = _overconfident(6000, seed=2)
    calibrated = make_calibrator(name).fit(fit_p, fit_y).transform(test_p)
    assert expected_calibration_error(calibrated, test_y) < 0.5 * expected_calibration_error(test_p, test_y)
    assert row_log_loss(calibrated, test_y).mean() < row_log_loss(test_p, test_y).mean() - 0.05


def test_temperature_above_one_for_an_overconfident_predictor() -> None:
    p, y = _overconfident(4000, seed=3)
    assert TemperatureCalibrator().fit(p, y).temperature_ == pytest.approx(3.0, rel=0.15)


@pytest.mark.parametrize("name", CALIBRATORS)
def test_outputs_are_valid_even_with_zeros_and_a_missing_class(name: str) -> None:
    p, y = _overconfident(500, seed=4)
    p[:50] = [1.0, 0.0, 0.0]  # a tree's hard zeros
    y = np.where(y == 2, 0, y)  # the slice holds no "none"
    out = make_calibrator(name).fit(p, y).transform(p)
    assert out.shape == p.shape and np.allclose(out.sum(axis=1), 1.0)
    assert out.min() >= PROBABILITY_FLOOR * 0.999


def test_a_slice_with_one_class_leaves_probabilities_alone() -> None:
    p, _ = _overconfident(100, seed=5)
    out = make_calibrator("platt").fit(p, np.zeros(100, dtype=np.int64)).transform(p)
    np.testing.assert_allclose(out, p, atol=1e-5)


def test_identity_and_unknown_names() -> None:
    p, y = _overconfident(100, seed=6)
    np.testing.assert_allclose(make_calibrator("none").fit(p, y).transform(p), p, atol=1e-5)
    with pytest.raises(ValueError, match="known: platt"):
        make_calibrator("beta")  # type: ignore[arg-type]
