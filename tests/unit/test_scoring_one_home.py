"""The one home of the probability formulas (bse_predict/scoring/probabilities.py): its zero guard and
tie rule by hand, its users agreeing with it, and the live scores, fed outcome by outcome, equal to
its batch formulas at every step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from configs.settings import SignalThresholds
from bse_predict.alerts.summary_stats import ResolvedCall, summarize
from bse_predict.ensembles.combiners import EPS, hedge_update
from bse_predict.evaluation.scoring import threshold_metrics
from bse_predict.labels.first_touch import CLASS_NAMES, DOWN, UP
from bse_predict.monitoring.live_scores import RollingScores, score_fields
from bse_predict.monitoring.sequential import clipped_log_loss
from bse_predict.scoring.probabilities import (
    PROBABILITY_FLOOR,
    bin_index,
    calibration_bins,
    called_side,
    confidence,
    outcome_log_loss,
    row_brier,
    row_log_loss,
    up_share,
)
from bse_predict.serving.signals import target_predictions

HOUR_MS = 3_600_000
BINS = 10


def test_confidence_by_hand_and_its_zero_guard() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0], [1e-300, 0.0, 1.0], [0.0, 0.2, 0.8]])
    np.testing.assert_array_equal(confidence(p), [0.5 / 0.8, 0.5, 0.5, 1.0, 1.0])
    assert confidence(np.zeros((2, 4, 3))).shape == (2, 4)  # over the last axis: members x rows
    assert not np.isnan(confidence(np.zeros((1, 3)))).any()


def test_confidence_is_the_published_formula_bit_for_bit() -> None:
    """Same float64 values, same operation order as the message the stream publishes."""
    rng = np.random.default_rng(7)
    raw = rng.dirichlet([1.0, 1.0, 0.5], 500) * 3.0
    raw[:40, :2] = 0.0  # nothing touched
    raw[40:80, 1] = raw[40:80, 0]  # ties
    p = raw / raw.sum(axis=1, keepdims=True)  # what target_predictions makes of its input
    touched = p[:, 0] + p[:, 1]
    reference = np.where(touched > 0, np.maximum(p[:, 0], p[:, 1]) / np.where(touched > 0, touched, 1.0), 0.5)
    assert confidence(p).tobytes() == reference.tobytes()
    published = target_predictions(raw, SignalThresholds())
    assert [part.confidence for part in published] == reference.tolist()
    assert [part.direction for part in published] == [CLASS_NAMES[s] for s in called_side(p)]
    assert [part.direction for part in published[40:80]] == ["up"] * 40


def test_up_share_by_hand_and_its_zero_guard() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.0, 0.0, 1.0], [0.0, 0.2, 0.8]])
    np.testing.assert_array_equal(up_share(p), [0.5 / 0.8, 0.1 / 0.4, 0.5, 0.0])
    assert up_share(np.zeros((2, 4, 3))).shape == (2, 4)


def test_tie_rule_calls_up() -> None:
    p = np.array([[0.4, 0.4, 0.2], [0.0, 0.0, 1.0], [0.3, 0.30000000000000004, 0.4], [0.6, 0.1, 0.3]])
    np.testing.assert_array_equal(called_side(p), [UP, UP, DOWN, UP])
    assert [part.direction for part in target_predictions(p, SignalThresholds())] == ["up", "up", "down", "up"]
    tie = ResolvedCall(symbol="BTCUSDT", target="1%", outcome="up", p_up=0.4, p_down=0.4, p_none=0.2, alerted=False,
                       resolved_at=1)
    assert tie.direction == "up" and tie.hit
    # a tie at confidence 0.5 is a call of up: it hits an up outcome and misses a down one
    t = threshold_metrics(np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]]), np.array([UP, DOWN]), 0.5)
    assert (t.calls, t.precision) == (2, 0.5)


def test_losses_by_hand_and_the_floor() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8]])
    y = np.array([UP, UP, DOWN])
    np.testing.assert_allclose(row_log_loss(p, y), [-math.log(0.5), -math.log(PROBABILITY_FLOOR), -math.log(0.1)])
    np.testing.assert_allclose(row_brier(p, y), [0.25 + 0.09 + 0.04, 1.0 + 1.0, 0.01 + 0.81 + 0.64])
    assert outcome_log_loss(np.array([0.0]))[0] == -math.log(PROBABILITY_FLOOR)
    assert score_fields((0.0, 1.0, 0.0), "up", BINS)["log_loss"] == -math.log(PROBABILITY_FLOOR)


def test_bins_equal_width_and_by_edges() -> None:
    # equal width: floor(p * bins), so 0.3 * 10 = 3.0000000000000004 lies in bin 3, and 1.0 in the last
    np.testing.assert_array_equal(bin_index(np.array([0.0, 0.3, 0.35, 0.999, 1.0]), 10), [0, 3, 3, 9, 9])
    edges = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
    np.testing.assert_array_equal(bin_index(np.array([0.0, 0.29, 0.3, 0.7, 0.99, 1.0, 1.2, -0.1]), edges),
                                  [0, 0, 1, 5, 5, 5, -1, -1])
    binned = calibration_bins(np.array([0.1, 0.2, 0.65, 1.0, 1.2]), np.array([True, False, True, True, True]), edges)
    np.testing.assert_array_equal(binned.rows, [2, 0, 0, 0, 1, 1])  # 1.2 is outside the edges
    np.testing.assert_allclose(binned.sum_p, [0.3, 0, 0, 0, 0.65, 1.0])
    np.testing.assert_allclose(binned.hit_rate[binned.rows > 0], [0.5, 1.0, 1.0])
    assert np.isnan(binned.mean_p[1])


def test_summary_reliability_by_hand() -> None:
    def call(outcome: str, p_up: float, p_down: float) -> ResolvedCall:
        return ResolvedCall(symbol="BTCUSDT", target="1%", outcome=outcome, p_up=p_up, p_down=p_down,
                            p_none=round(1 - p_up - p_down, 10), alerted=False, resolved_at=1)

    calls = [call("up", 0.3, 0.2), call("down", 0.35, 0.1), call("down", 0.1, 0.7), call("none", 1.0, 0.0)]
    stats = summarize(calls, 0, 10, min_samples=1)
    assert stats is not None
    assert [(b.lower, b.upper, b.n) for b in stats.reliability] == [(0.3, 0.4, 2), (0.7, 1.0, 2)]
    assert stats.reliability[0].mean_forecast == pytest.approx(0.325) and stats.reliability[0].observed == 0.5
    assert stats.reliability[1].mean_forecast == pytest.approx(0.85) and stats.reliability[1].observed == 0.5


def test_sequential_and_hedge_losses_are_the_shared_log_loss_capped() -> None:
    p = np.array([0.0, 1e-9, math.exp(-5.0), 0.2, 1.0])
    np.testing.assert_allclose(clipped_log_loss(p, 5.0), [5.0, 5.0, 5.0, -math.log(0.2), 0.0])
    np.testing.assert_array_equal(clipped_log_loss(p[2:], 5.0), outcome_log_loss(p[2:]))  # below the cap: the same
    # a member that gave the outcome 0 loses -log(EPS) nats, not -log(PROBABILITY_FLOOR)
    w = hedge_update(np.array([0.5, 0.5]), np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]), UP, rate=1.0, floor=0.0)
    np.testing.assert_allclose(w, [EPS / (1 + EPS), 1 / (1 + EPS)], rtol=1e-12)


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rows with exact zeros (the floor), exact ones and values on bin edges; outcomes; times."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1.5, 1.5, 1.0], n)
    y = rng.integers(0, 3, n)
    zero = rng.choice(n, n // 10, replace=False)
    p[zero, y[zero]] = 0.0  # the outcome had probability 0: its log loss is the floor's
    p[rng.choice(n, n // 20, replace=False)] = np.eye(3)[rng.integers(0, 3, n // 20)]  # certain rows: p = 1
    p[rng.choice(n, n // 20, replace=False)] = (0.3, 0.5, 0.2)  # on bin edges
    p = p / p.sum(axis=1, keepdims=True)
    times = np.sort(rng.integers(0, 150 * HOUR_MS, n))
    late = rng.choice(n, n // 20, replace=False)
    times[late] -= rng.integers(0, 5 * HOUR_MS, len(late))  # some arrive a little late
    return p, y, times


def test_live_scores_equal_the_scoring_module_at_every_step() -> None:
    n, span = 400, 24
    p, y, times = _rows(n, seed=11)
    assert (row_log_loss(p, y) == -math.log(PROBABILITY_FLOOR)).sum() >= 20  # the floor is hit
    rolling = RollingScores(span_buckets=span, bucket_ms=HOUR_MS, bins=BINS)
    newest = -1
    for step in range(n):
        rolling.update(p[step], CLASS_NAMES[y[step]], int(times[step]))
        newest = max(newest, int(times[step]) // HOUR_MS)
        inside = times[: step + 1] // HOUR_MS > newest - span
        scores = rolling.scores()
        if not inside.any():
            assert scores is None
            continue
        pw, yw = p[: step + 1][inside], y[: step + 1][inside]
        assert scores is not None and scores.count == len(yw), step
        assert scores.log_loss == pytest.approx(float(row_log_loss(pw, yw).mean()), rel=1e-12, abs=1e-12), step
        assert scores.brier == pytest.approx(float(row_brier(pw, yw).mean()), rel=1e-12, abs=1e-12), step
        assert scores.accuracy == pytest.approx(float(np.mean(np.argmax(pw, axis=1) == yw)), abs=1e-12), step
        expected = []
        for k, name in enumerate(CLASS_NAMES):
            binned = calibration_bins(pw[:, k], yw == k, BINS)
            expected += [(name, int(b), int(binned.rows[b]), float(binned.mean_p[b]), float(binned.hit_rate[b]))
                         for b in np.flatnonzero(binned.rows)]
        found = [(c.cls, c.bin, c.count, c.mean_p, c.hit_rate) for c in scores.calibration]
        assert [e[:3] for e in found] == [e[:3] for e in expected], step
        np.testing.assert_allclose([e[3:] for e in found], [e[3:] for e in expected], rtol=1e-12, atol=1e-12)
