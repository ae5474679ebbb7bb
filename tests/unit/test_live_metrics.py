"""Rolling live scores (bse_predict/monitoring/live_scores.py), step by step against their batch formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss

from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.monitoring.live_scores import (
    RollingScores,
    add_fields,
    batch_score_fields,
    grouped_score_fields,
    score_fields,
    window_scores,
)
from bse_predict.scoring.probabilities import PROBABILITY_FLOOR

HOUR_MS = 3_600_000
BINS = 10


def _batch(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    onehot = np.eye(3)[y]
    counts = np.bincount(y, minlength=3)
    return {
        "log_loss": float(log_loss(y, np.clip(p, PROBABILITY_FLOOR, 1), labels=[0, 1, 2])),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        "accuracy": float(np.mean(np.argmax(p, axis=1) == y)),
        "base_rate": float(counts.max() / len(y)),
        "climatology_log_loss": float(log_loss(y, np.tile(np.clip(counts / len(y), PROBABILITY_FLOOR, 1), (len(y), 1)),
                                               labels=[0, 1, 2])),
    }


def test_one_outcome_by_hand() -> None:
    fields = score_fields((0.5, 0.3, 0.2), "down", BINS)
    assert fields["log_loss"] == pytest.approx(-math.log(0.3))
    assert fields["brier"] == pytest.approx(0.25 + 0.49 + 0.04)
    assert fields["correct"] == 0.0 and fields["y:down"] == 1.0
    assert (fields["cal:up:5:p"], fields["cal:down:3:hit"], fields["cal:none:2:hit"]) == (0.5, 1.0, 0.0)
    scores = window_scores(add_fields([fields, score_fields((0.1, 0.1, 0.8), "none", BINS)]), BINS)
    assert scores is not None and scores.count == 2 and scores.accuracy == 0.5
    assert scores.class_shares == {"up": 0.0, "down": 0.5, "none": 0.5} and scores.base_rate == 0.5
    assert scores.climatology_log_loss == pytest.approx(math.log(2))  # always (0, 0.5, 0.5): -log 0.5 per row
    assert window_scores({}, BINS) is None


@pytest.mark.slow
def test_rolling_scores_equal_the_batch_formulas_at_every_step() -> None:
    rng = np.random.default_rng(0)
    span = 24
    rolling = RollingScores(span_buckets=span, bucket_ms=HOUR_MS, bins=BINS)
    times = np.sort(rng.integers(0, 200 * HOUR_MS, 600))
    times[rng.choice(600, 30, replace=False)] -= rng.integers(0, 5 * HOUR_MS, 30)  # some arrive a little late
    p = rng.dirichlet([1.5, 1.5, 1.0], 600)
    y = rng.integers(0, 3, 600)
    for step in range(600):
        rolling.update(p[step], CLASS_NAMES[y[step]], int(times[step]))
        newest = max(t // HOUR_MS for t in times[: step + 1])
        inside = np.array([t // HOUR_MS > newest - span for t in times[: step + 1]])
        scores = rolling.scores()
        if not inside.any():
            assert scores is None
            continue
        expected = _batch(p[: step + 1][inside], y[: step + 1][inside])
        assert scores is not None and scores.count == int(inside.sum())
        for name, value in expected.items():
            assert getattr(scores, name) == pytest.approx(value, abs=1e-9), (step, name)
        for cal in scores.calibration:
            k = CLASS_NAMES.index(cal.cls)
            pk = p[: step + 1][inside][:, k]
            in_bin = np.minimum((pk * BINS).astype(int), BINS - 1) == cal.bin
            assert cal.count == int(in_bin.sum())
            assert cal.mean_p == pytest.approx(float(pk[in_bin].mean()))
            assert cal.hit_rate == pytest.approx(float((y[: step + 1][inside][in_bin] == k).mean()))


def test_grouped_sums_equal_the_per_row_fields_added_in_order() -> None:
    rng = np.random.default_rng(3)
    p = rng.dirichlet([1.0, 1.0, 0.7], 500)
    p[:5] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.1, 0.3, 0.6]]  # edge bins
    y = rng.integers(0, 3, 500)
    groups = rng.integers(0, 7, 500)
    rows = batch_score_fields(p, y, BINS)
    grouped = grouped_score_fields(p, y, BINS, groups, 7)
    for g in range(7):
        assert grouped[g] == add_fields(rows[i] for i in np.flatnonzero(groups == g))  # exact, not approx
