"""The fold-robust AUCs and their block-bootstrap intervals, and the effective sample size, against hand
counts and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bse_predict.evaluation.bootstrap import day_blocks
from bse_predict.evaluation.effective_sample import non_overlapping_windows
from bse_predict.evaluation.robust_auc import (
    auc_intervals,
    fold_demeaned,
    symbol_auc_intervals,
    weighted_auc,
)
from bse_predict.evaluation.schema import Interval
from bse_predict.evaluation.scoring import auc_up_vs_down
from bse_predict.labels.first_touch import DOWN, NONE, UP
from bse_predict.scoring.probabilities import up_share

HOUR_MS = 3_600_000
HORIZON_MS = 72 * HOUR_MS


def _probabilities(up_share: np.ndarray, p_none: float = 0.2) -> np.ndarray:
    touched = 1.0 - p_none
    return np.column_stack([up_share * touched, (1.0 - up_share) * touched, np.full(len(up_share), p_none)])


def test_non_overlapping_windows_by_hand() -> None:
    hours = np.array([0, 10, 80, 81, 200, 5, 77, 78])
    symbols = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    # symbol 0: 0 (skips 10), 80 (skips 81), 200; symbol 1 (unsorted on purpose): 5, 77 (skips 78)
    assert non_overlapping_windows(hours * HOUR_MS, symbols, HORIZON_MS) == 5
    assert non_overlapping_windows(np.arange(200) * HOUR_MS, np.zeros(200), HORIZON_MS) == 3  # 0, 72, 144
    assert non_overlapping_windows(np.array([], dtype=np.int64), np.array([]), HORIZON_MS) == 0
    with pytest.raises(ValueError, match="positive"):
        non_overlapping_windows(hours, symbols, 0)


def test_weighted_auc_equals_scikit_learn_with_ties_and_repeated_rows() -> None:
    rng = np.random.default_rng(3)
    score = np.round(rng.normal(size=400), 1)  # many ties
    positive = rng.random(400) < 1 / (1 + np.exp(-score))
    assert weighted_auc(score, positive, np.ones(400)) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    counts = rng.integers(0, 4, 400)
    repeated = np.repeat(np.arange(400), counts)
    assert weighted_auc(score, positive, counts) == pytest.approx(
        roc_auc_score(positive[repeated], score[repeated]), abs=1e-12)
    assert np.isnan(weighted_auc(score, np.ones(400, dtype=bool), np.ones(400)))


def test_fold_demeaned_subtracts_each_folds_mean() -> None:
    score = np.array([1.0, 3.0, 10.0, 20.0, 30.0])
    folds = np.array([0, 0, 1, 1, 1])
    np.testing.assert_allclose(fold_demeaned(score, folds), [-1.0, 1.0, -10.0, 0.0, 10.0])


def _episodes(rng: np.random.Generator, hours: int, informative: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels that come in 72-hour episodes (one outcome repeated), and an up share that knows the
    episode's outcome with weight ``informative``."""
    episode_up = rng.random(hours // 72 + 1) < 0.5
    labels = np.where(episode_up[np.arange(hours) // 72], UP, DOWN)
    labels[rng.random(hours) < 0.2] = NONE
    signal = np.where(labels == UP, 1.0, np.where(labels == DOWN, -1.0, 0.0))
    share = 1 / (1 + np.exp(-(informative * signal + rng.normal(size=hours))))
    return labels, share


def test_a_score_that_follows_the_fold_base_rate_has_pooled_auc_but_no_fold_robust_auc() -> None:
    """Climatology's trap: a constant score per fold that tracks each fold's up share."""
    hours = 3000
    times = np.arange(hours) * HOUR_MS
    folds = np.repeat([0, 1, 2], hours // 3)
    rng = np.random.default_rng(5)
    up_rate = np.array([0.3, 0.5, 0.7])[folds]
    labels = np.where(rng.random(hours) < up_rate, UP, DOWN)
    blocks = day_blocks(times, 3)
    result = auc_intervals(_probabilities(up_rate), labels, folds, 3, blocks, 3, 200, 0.95, seed=1)
    assert result.pooled is not None and result.pooled.estimate > 0.6
    assert result.fold_demeaned is not None and result.within_fold_mean is not None
    assert (result.fold_demeaned.lower, result.fold_demeaned.upper) == (0.5, 0.5)
    assert (result.within_fold_mean.lower, result.within_fold_mean.upper) == (0.5, 0.5)
    assert result.blocks == int(blocks.max()) + 1 and result.block_days == 3


def test_estimates_equal_scikit_learn_and_intervals_are_deterministic() -> None:
    hours = 2400
    rng = np.random.default_rng(11)
    labels, share = _episodes(rng, hours, informative=1.0)
    folds = np.repeat([0, 1, 2], hours // 3)
    blocks = day_blocks(np.arange(hours) * HOUR_MS, 3)
    result = auc_intervals(_probabilities(share), labels, folds, 3, blocks, 3, 300, 0.95, seed=2)
    touched = labels != NONE
    assert result.pooled.estimate == pytest.approx(roc_auc_score(labels[touched] == UP, share[touched]), abs=1e-12)
    per_fold = [roc_auc_score(labels[touched & (folds == k)] == UP, share[touched & (folds == k)]) for k in range(3)]
    assert [f.estimate for f in result.by_fold] == pytest.approx(per_fold, abs=1e-12)
    assert result.within_fold_mean.estimate == pytest.approx(np.mean(per_fold), abs=1e-12)
    for interval in (result.pooled, result.within_fold_mean, result.fold_demeaned, *result.by_fold):
        assert interval.lower <= interval.estimate <= interval.upper
    assert result == auc_intervals(_probabilities(share), labels, folds, 3, blocks, 3, 300, 0.95, seed=2)


def test_blocks_that_cover_the_horizon_widen_the_interval_of_clustered_outcomes() -> None:
    """Outcomes repeated over 72-hour episodes carry about one outcome per episode: hour blocks (a row
    bootstrap) give an interval far too narrow, and only 3-day blocks say that 0.5 is not ruled out."""
    hours = 2400
    labels, share = _episodes(np.random.default_rng(4), hours, informative=0.0)
    episode_noise = np.random.default_rng(9).normal(size=hours // 72 + 1)[np.arange(hours) // 72]
    share = 1 / (1 + np.exp(-(0.3 * episode_noise + 0.1 * (labels == UP))))
    folds = np.zeros(hours, dtype=np.int64)
    times = np.arange(hours) * HOUR_MS
    rows = auc_intervals(_probabilities(share), labels, folds, 1, np.arange(hours), 3, 300, 0.95, seed=3)
    days = auc_intervals(_probabilities(share), labels, folds, 1, day_blocks(times, 3), 3, 300, 0.95, seed=3)
    assert days.fold_demeaned.upper - days.fold_demeaned.lower > 2.5 * (
        rows.fold_demeaned.upper - rows.fold_demeaned.lower)
    assert days.fold_demeaned.lower < 0.5 < days.fold_demeaned.upper


def test_a_fold_without_both_outcomes_has_no_interval_and_is_left_out_of_the_mean() -> None:
    labels = np.array([UP, DOWN, UP, DOWN, UP, UP, NONE, UP])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    share = np.array([0.6, 0.4, 0.7, 0.3, 0.5, 0.5, 0.5, 0.5])
    result = auc_intervals(_probabilities(share), labels, folds, 2, np.arange(8) // 2, 1, 50, 0.9, seed=0)
    assert result.by_fold[1] is None and result.by_fold[0].estimate == 1.0
    assert result.within_fold_mean.estimate == 1.0


def test_a_constant_side_ties_across_folds_whatever_its_share_of_none() -> None:
    """always-up's rows: p_up / (p_up + p_down) = 0.65 in every fold, equal but for float rounding."""
    folds = np.repeat([0, 1, 2], 200)
    q = np.array([0.02, 0.03, 0.04])[folds]
    p = np.column_stack([(1 - q) * 0.65, (1 - q) * 0.35, q])
    assert up_share(p)[folds == 1].max() < 0.65 == up_share(p)[folds != 1].min()  # what rounding removes
    labels = np.where(folds == 1, DOWN, UP)  # the fold whose share rounds low is all down
    labels[::7] = DOWN
    result = auc_intervals(p, labels, folds, 3, np.arange(600) // 24, 3, 50, 0.95, seed=0)
    assert result.pooled == Interval(estimate=0.5, lower=0.5, upper=0.5) and auc_up_vs_down(p, labels) == 0.5


def test_each_symbol_gets_its_own_auc_and_an_interval_over_its_own_blocks() -> None:
    """Skill in one symbol only: the pooled interval mixes them, the per-symbol intervals tell them apart."""
    hours = 2400
    rng = np.random.default_rng(21)
    skilled_labels, skilled_share = _episodes(rng, hours, informative=2.0)
    blind_labels, blind_share = _episodes(rng, hours, informative=0.0)
    labels = np.concatenate([skilled_labels, blind_labels])
    share = np.concatenate([skilled_share, blind_share])
    symbols = np.repeat([0, 1], hours)
    folds = np.tile(np.repeat([0, 1], hours // 2), 2)
    times = np.tile(np.arange(hours), 2) * HOUR_MS
    times[symbols == 1] += 1000 * 24 * HOUR_MS  # the second symbol's rows come later: blocks of its own
    blocks = day_blocks(times, 3)
    result = symbol_auc_intervals(_probabilities(share), labels, folds, 2, symbols, ("SKILL", "BLIND", "EMPTY"),
                                  blocks, 3, 300, 0.95, seed=4)
    assert set(result) == {"SKILL", "BLIND"}
    for name, own in (("SKILL", symbols == 0), ("BLIND", symbols == 1)):
        touched = own & (labels != NONE)
        assert result[name].pooled.estimate == pytest.approx(
            roc_auc_score(labels[touched] == UP, share[touched]), abs=1e-12)
        assert result[name].blocks == len(np.unique(blocks[own])) < int(blocks.max()) + 1
    assert result["SKILL"].fold_demeaned.lower > 0.6
    assert result["BLIND"].fold_demeaned.lower < 0.5 < result["BLIND"].fold_demeaned.upper
