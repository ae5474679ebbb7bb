"""The trainer's training, validation and holdout rows: one calendar cut for every series, purged by the horizon."""

from __future__ import annotations

import numpy as np

from bse_predict.training.time_split import NEVER, calendar_cut, split_series

HOUR = 3_600_000
HORIZON = 72 * HOUR


def test_one_series_holds_out_its_newest_share_purged_by_the_horizon() -> None:
    times = np.arange(1000, dtype=np.int64) * HOUR
    (split,) = split_series([times], 0.2, 0.0, HORIZON)
    assert split.holdout.sum() == 200 and not split.validation.any() and not (split.train & split.holdout).any()
    assert times[split.train].max() + HORIZON < times[split.holdout].min()
    assert split.train.sum() == 800 - 72


def test_a_longer_spot_history_never_trains_on_hours_the_futures_series_holds_out() -> None:
    """Spot from hour 0, futures of the same coin from hour 600: cut each at its own 20 % and spot would
    train up to hour 727 while futures holds out from hour 920 on, and its validation slice from 800."""
    spot, futures = np.arange(1000, dtype=np.int64) * HOUR, np.arange(600, 1000, dtype=np.int64) * HOUR
    splits = split_series([spot, futures], 0.2, 0.15, HORIZON)
    unseen = [t[s.holdout | s.validation] for t, s in zip((spot, futures), splits, strict=True)]
    first_unseen = min(int(u.min()) for u in unseen)
    for times, split in zip((spot, futures), splits, strict=True):
        assert times[split.train].max() + HORIZON < first_unseen
        assert times[split.validation].max() + HORIZON < min(int(t[s.holdout].min()) for t, s in
                                                          zip((spot, futures), splits, strict=True))
        assert not (split.train & split.validation).any() and not (split.validation & split.holdout).any()
    holdout_start = calendar_cut([spot, futures], 0.2)
    assert all(np.array_equal(s.holdout, t >= holdout_start) for t, s in zip((spot, futures), splits, strict=True))
    assert sum(int(s.holdout.sum()) for s in splits) == 280  # 20 % of the 1,400 rows together


def test_nothing_held_out_trains_on_every_row() -> None:
    times = np.arange(100, dtype=np.int64) * HOUR
    assert calendar_cut([times], 0.0) == NEVER and calendar_cut([], 0.2) == NEVER
    (split,) = split_series([times], 0.0, 0.0, HORIZON)
    assert split.train.all() and not split.holdout.any() and not split.validation.any()
