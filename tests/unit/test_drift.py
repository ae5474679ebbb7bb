"""PSI (bse_predict/monitoring/drift.py) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bse_predict.monitoring.drift import FeatureBins, bin_counts, feature_psi, psi, training_bins


def test_psi_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5)
    assert psi([0.5, 0.5], [1, 3]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0.2, 0.3, 0.5], [20, 30, 50]) == pytest.approx(0.0)
    # an empty live bin is floored at 1e-4: (1e-4 - 0.5) ln(1e-4/0.5) + (1 - 0.5) ln(1/0.5)
    assert psi([0.5, 0.5], [0, 10]) == pytest.approx((1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2))
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1, 2, 3])
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [0, 0])


def test_bin_counts_by_hand() -> None:
    # bins: (-inf, 1), [1, 2), [2, +inf); NaN not counted
    assert bin_counts(np.array([0.5, 1.0, 1.5, 2.0, 7.0, np.nan, -3.0]), [1.0, 2.0]).tolist() == [2, 2, 2]


def test_training_bins_are_quantiles_and_merge_duplicates() -> None:
    x = np.column_stack([np.arange(100, dtype=float), np.repeat([0.0, 1.0], 50), np.full(100, np.nan)])
    bins = training_bins(x, ["ramp", "flag", "empty"], bins=4)
    assert bins["ramp"].edges == pytest.approx((24.75, 49.5, 74.25))
    assert bins["ramp"].expected == pytest.approx((0.25, 0.25, 0.25, 0.25))
    assert bins["flag"].edges == pytest.approx((0.0, 0.5, 1.0))
    assert bins["flag"].expected == pytest.approx((0.0, 0.5, 0.0, 0.5))
    assert "empty" not in bins


def test_a_shifted_feature_has_a_large_psi_and_a_stable_one_a_small_one() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (5000, 2))
    bins = training_bins(train, ["stable", "shifted"])
    live = np.column_stack([rng.normal(0, 1, 2000), rng.normal(1.0, 1, 2000)])
    counts = {name: bin_counts(live[:, i], bins[name].edges) for i, name in enumerate(["stable", "shifted"])}
    judged = feature_psi(bins, {**counts, "unbinned": [2000]}, min_rows=500)
    assert set(judged) == {"stable", "shifted"}
    assert judged["shifted"] > 0.25 and judged["stable"] < 0.05
    assert judged["stable"] == psi(bins["stable"].expected, counts["stable"])
    assert feature_psi(bins, counts, min_rows=5000) == {}
    assert feature_psi({"x": FeatureBins(edges=(0.0,), expected=(0.5, 0.5))}, {"x": [0, 600]}, 500)["x"] > 0.25
