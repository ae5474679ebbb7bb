"""Walk-forward folds: purged by the horizon, embargoed, covering the test span without overlap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bse_predict.evaluation.walk_forward import FoldError, block_mask, calibration_split, make_folds, training_mask

HOUR = 3_600_000


def test_hand_checked_folds_on_one_hourly_symbol() -> None:
    times = np.arange(100) * HOUR
    folds = make_folds(times, n_folds=2, initial_train_fraction=0.5)
    assert [(f.test_start_ms // HOUR, f.test_end_ms) for f in folds] == [(50, 75 * HOUR), (75, 99 * HOUR + 1)]
    first = training_mask(folds[0], folds, times, horizon_ms=5 * HOUR, embargo_ms=3 * HOUR)
    assert np.flatnonzero(first).tolist() == list(range(45))  # 44 + 5 h < 50 h; 45 + 5 = 50 is purged
    second = training_mask(folds[1], folds, times, horizon_ms=5 * HOUR, embargo_ms=3 * HOUR)
    assert np.flatnonzero(second).tolist() == list(range(70))  # the first fold's embargo lies after row 75
    fit, calibration = calibration_split(second, times, 0.2, 5 * HOUR)
    assert np.flatnonzero(calibration).tolist() == list(range(56, 70))
    assert np.flatnonzero(fit).tolist() == list(range(51))  # 50 + 5 < 56


def test_embargo_keeps_rows_after_an_earlier_block_out_of_training() -> None:
    times = np.arange(200) * HOUR
    folds = make_folds(times, n_folds=4, initial_train_fraction=0.2)
    train = training_mask(folds[3], folds, times, horizon_ms=2 * HOUR, embargo_ms=10 * HOUR)
    for earlier in folds[:2]:
        after = (times >= earlier.test_end_ms) & (times < earlier.test_end_ms + 10 * HOUR)
        assert after.any() and not (train & after).any()
    assert train[folds[0].test_start_ms // HOUR]  # the blocks themselves train later folds


def test_too_few_rows_is_a_clear_error() -> None:
    with pytest.raises(FoldError, match="folds"):
        make_folds(np.arange(3) * HOUR, n_folds=5, initial_train_fraction=0.5)


@st.composite
def pooled_times(draw: st.DrawFn) -> np.ndarray:
    """Open times of 1-3 symbols with different starts, lengths and missing hours, pooled."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, 200))
        length = draw(st.integers(40, 400))
        hours = np.arange(start, start + length)
        keep = np.random.default_rng(draw(st.integers(0, 2**16))).random(length) > draw(st.floats(0.0, 0.3))
        parts.append(hours[keep] * HOUR)
    return np.concatenate(parts).astype(np.int64)


@settings(max_examples=80, deadline=None)
@given(times=pooled_times(), n_folds=st.integers(1, 6), initial=st.floats(0.2, 0.8),
       horizon_h=st.integers(1, 96), embargo_h=st.integers(0, 48), calibration=st.floats(0.0, 0.5))
def test_folds_are_purged_embargoed_and_cover_the_test_span(times: np.ndarray, n_folds: int, initial: float,
                                                            horizon_h: int, embargo_h: int, calibration: float) -> None:
    try:
        folds = make_folds(times, n_folds, initial)
    except FoldError:
        assume(False)
        return
    horizon_ms, embargo_ms = horizon_h * HOUR, embargo_h * HOUR
    assert len(folds) == n_folds
    # Consecutive, non-overlapping blocks that cover everything from the first test row on.
    for a, b in zip(folds, folds[1:]):
        assert a.test_end_ms == b.test_start_ms and a.test_start_ms < a.test_end_ms
    membership = np.stack([block_mask(f, times) for f in folds])
    assert (membership.sum(axis=0) == (times >= folds[0].test_start_ms)).all()
    assert folds[-1].test_end_ms > times.max()
    for fold in folds:
        train = training_mask(fold, folds, times, horizon_ms, embargo_ms)
        t = times[train]
        # Every candle a training label reads (open + 1 h .. open + horizon) opens before the test block.
        assert (t + horizon_ms < fold.test_start_ms).all()
        # Nothing within the embargo after an earlier block trains.
        for earlier in folds[:fold.index]:
            assert not ((t >= earlier.test_end_ms) & (t < earlier.test_end_ms + embargo_ms)).any()
        fit, held_out = calibration_split(train, times, calibration, horizon_ms)
        assert not (fit & held_out).any() and not (fit & ~train).any() and not (held_out & ~train).any()
        if held_out.any() and fit.any():
            assert times[fit].max() + horizon_ms < times[held_out].min()
