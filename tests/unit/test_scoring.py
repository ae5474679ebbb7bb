"""Scores, baselines and the paired block bootstrap, against hand-computed values and the batch formulas."""

from __future__ import annotations

import numpy as np
import pytest

from bse_predict.evaluation.baselines import AlwaysUp, Climatology, LogisticBaseline, Momentum24h
from bse_predict.evaluation.bootstrap import claim_verdict, comparison_verdict, day_blocks, paired_bootstrap
from bse_predict.evaluation.schema import Interval
from bse_predict.evaluation.scoring import (
    auc_up_vs_down,
    expected_calibration_error,
    group_metrics,
    reliability_bins,
    threshold_metrics,
)
from bse_predict.labels.first_touch import DOWN, NONE, UP
from bse_predict.evaluation.holdout_metrics import holdout_metrics
from bse_predict.scoring.probabilities import climatology_shares, confidence, row_brier, row_log_loss

DAY = 86_400_000


def _random_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.dirichlet([2, 2, 1], size=n), rng.choice(3, size=n, p=[0.45, 0.45, 0.1])


def test_row_losses_by_hand() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    y = np.array([UP, DOWN])
    np.testing.assert_allclose(row_log_loss(p, y), [-np.log(0.5), -np.log(0.1)])
    np.testing.assert_allclose(row_brier(p, y), [0.25 + 0.09 + 0.04, 0.01 + 0.81 + 0.64])
    np.testing.assert_allclose(confidence(p), [0.5 / 0.8, 0.5])


def test_group_metrics_agree_with_the_manifest_metrics() -> None:
    p, y = _random_rows(3000, seed=1)
    train_y = np.random.default_rng(2).choice(3, size=5000, p=[0.4, 0.5, 0.1])
    climatology = np.tile(climatology_shares(train_y), (len(y), 1))  # the trainer's (smoothed) shares
    ours = group_metrics(p, y, climatology, (0.55,))
    theirs = holdout_metrics(p, y, train_y)
    for name in ("log_loss", "log_loss_climatology", "brier", "brier_climatology", "brier_skill", "accuracy",
                 "accuracy_base_rate", "auc_up_vs_down", "up_share_touched"):
        assert getattr(ours, name) == pytest.approx(theirs[name], abs=1e-9), name
    assert sum(ours.mean_probabilities) == pytest.approx(1.0) and sum(ours.label_shares) == pytest.approx(1.0)


def test_ece_by_hand_and_zero_for_the_true_shares() -> None:
    y = np.array([UP, DOWN] * 50)
    always = np.tile([0.9, 0.05, 0.05], (100, 1))
    # up: |0.9 - 0.5|, down: |0.05 - 0.5|, none: |0.05 - 0|; the mean over classes
    assert expected_calibration_error(always, y) == pytest.approx((0.4 + 0.45 + 0.05) / 3)
    assert expected_calibration_error(np.tile([0.5, 0.5, 0.0], (100, 1)), y) == pytest.approx(0.0)
    (only,) = reliability_bins(always, y, UP)
    assert (only.lower, only.rows, only.observed) == (0.9, 100, 0.5)


def test_precision_and_coverage_at_a_threshold() -> None:
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.45, 0.45, 0.1], [0.5, 0.2, 0.3]])
    y = np.array([UP, UP, DOWN, NONE])
    t = threshold_metrics(p, y, 0.6)  # confidences 0.667, 0.778, 0.5, 0.714: three calls
    assert (t.calls, t.coverage) == (3, 0.75)
    assert t.precision == pytest.approx(1 / 3)  # the up call hit; the down call missed; "none" counts as a miss
    assert t.precision_touched == pytest.approx(1 / 2)
    assert threshold_metrics(p, y, 0.9).precision is None


def test_auc_needs_both_touched_classes_and_ignores_none() -> None:
    p = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.9, 0.0, 0.1]])
    assert auc_up_vs_down(p, np.array([UP, DOWN, NONE])) == 1.0
    assert auc_up_vs_down(p, np.array([UP, UP, NONE])) is None


def test_baselines_by_hand() -> None:
    y = np.array([UP] * 6 + [DOWN] * 3 + [NONE] * 1)
    ret = np.array([0.01] * 6 + [-0.01] * 4)
    X = np.zeros((10, 2))
    climatology = Climatology().fit(X, ret, y).predict_proba(X, ret)
    np.testing.assert_allclose(climatology[0], [6.5 / 11.5, 3.5 / 11.5, 1.5 / 11.5])
    up = AlwaysUp(0.65).fit(X, ret, y).predict_proba(X, ret)
    assert np.allclose(up[:, UP] / (up[:, UP] + up[:, DOWN]), 0.65) and up.min() > 0
    momentum = Momentum24h().fit(X, ret, y).predict_proba(X, np.array([0.02, -0.02]))
    np.testing.assert_allclose(momentum, [[6.5 / 7.5, 0.5 / 7.5, 0.5 / 7.5], [0.5 / 5.5, 3.5 / 5.5, 1.5 / 5.5]])
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 3))
    labels = np.where(features[:, 0] > 0, UP, DOWN)  # no "none" in training
    p = LogisticBaseline().fit(features, np.zeros(400), labels).predict_proba(features, np.zeros(400))
    assert np.allclose(p.sum(axis=1), 1.0) and p[:, NONE].min() > 0
    assert auc_up_vs_down(p, labels) > 0.95


def test_day_blocks_group_consecutive_days() -> None:
    times = np.array([0, 1, DAY, 2 * DAY, 3 * DAY + 5, 10 * DAY])
    assert day_blocks(times, 1).tolist() == [0, 0, 1, 2, 3, 4]
    assert day_blocks(times, 3).tolist() == [0, 0, 0, 0, 1, 2]


def test_paired_bootstrap_is_deterministic_and_finds_a_real_difference() -> None:
    rng = np.random.default_rng(5)
    reference = rng.exponential(0.7, size=3000)
    blocks = np.repeat(np.arange(100), 30)
    same = paired_bootstrap(reference, reference, blocks, 300, 0.95, seed=1)
    assert same[0] == Interval(estimate=0.0, lower=0.0, upper=0.0)
    better = paired_bootstrap(reference * 0.9, reference, blocks, 300, 0.95, seed=1)
    assert better == paired_bootstrap(reference * 0.9, reference, blocks, 300, 0.95, seed=1)
    difference, improvement = better
    assert difference.upper < 0 and improvement.estimate == pytest.approx(0.1)
    assert improvement.lower <= 0.1 <= improvement.upper
    assert comparison_verdict(improvement) == "better"
    assert claim_verdict(improvement).startswith("supported")
    noisy = paired_bootstrap(reference + rng.normal(0, 0.5, 3000), reference, blocks, 300, 0.95, seed=1)[1]
    assert comparison_verdict(noisy) == "no significant difference"
    tiny = paired_bootstrap(reference * (1 - 1e-8), reference, blocks, 300, 0.95, seed=1)[1]
    assert 0 < tiny.lower <= tiny.upper < 1e-7  # consistent in sign, and nil
    assert comparison_verdict(tiny) == "negligible"
    assert comparison_verdict(Interval(estimate=3e-4, lower=1e-4 + 1e-9, upper=5e-4)) == "better"
    assert comparison_verdict(Interval(estimate=-3e-4, lower=-5e-4, upper=-1e-4 - 1e-9)) == "worse"
    assert claim_verdict(Interval(estimate=0.01, lower=-0.01, upper=0.03)).startswith("rejected")
