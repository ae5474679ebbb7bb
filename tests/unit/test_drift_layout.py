"""BinLayout: a batch counted per group in one pass equals bin_counts feature by feature, group by group."""

from __future__ import annotations

import numpy as np

from bse_predict.monitoring.drift import BinLayout, FeatureBins, bin_counts


def test_layout_counts_equal_bin_counts_per_feature_and_group() -> None:
    rng = np.random.default_rng(7)
    bins = {"a": FeatureBins(edges=(0.0, 1.0), expected=(0.3, 0.3, 0.4)),
            "c": FeatureBins(edges=(-1.0,), expected=(0.5, 0.5))}
    features = rng.normal(size=(60, 3))
    features[3, 0] = np.nan
    features[5, 2] = np.inf
    groups = rng.integers(0, 4, 60)
    layout = BinLayout(bins, ["a", "b", "c"])
    counted = layout.counts(features, groups, 4)
    assert layout.fields == ["a|0", "a|1", "a|2", "c|0", "c|1"]
    for group in range(4):
        rows = groups == group
        expected = np.concatenate([bin_counts(features[rows, 0], bins["a"].edges),
                                   bin_counts(features[rows, 2], bins["c"].edges)])
        assert counted[group].tolist() == expected.tolist()
    assert counted.sum() == 2 * 60 - 2  # the NaN and the inf are not counted
