"""The circuit breaker, step by step."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from bse_predict.serving.breaker import BreakerConfig, BreakerState, allows, bad_rows, record

CONFIG = BreakerConfig(window_calls=5, failures_to_open=2, open_s=10, probes_to_close=2)


def test_opens_after_enough_failures_in_the_window() -> None:
    state = BreakerState()
    state = record(state, True, 0, CONFIG, "nan")
    assert state.status == "closed"
    for t in range(1, 6):  # successes push the first failure out of the 5-call window
        state = record(state, False, t, CONFIG)
    state = record(state, True, 6, CONFIG, "nan")
    assert state.status == "closed"
    state = record(state, True, 7, CONFIG, "slow")
    assert (state.status, state.opened_at_s, state.reason) == ("open", 7, "slow")


def test_open_refuses_calls_then_probes_and_closes_on_recovery() -> None:
    state = BreakerState("open", (), 100.0, 0, "error")
    assert not allows(state, 105, CONFIG)
    assert allows(state, 110, CONFIG)
    state = record(state, False, 110, CONFIG)
    assert state.status == "half_open"
    state = record(state, False, 111, CONFIG)
    assert state == BreakerState()


def test_failed_probe_opens_again_from_now() -> None:
    state = record(BreakerState("open", (), 100.0, 0, "error"), False, 111, CONFIG)
    state = record(state, True, 112, CONFIG, "still nan")
    assert (state.status, state.opened_at_s, state.reason) == ("open", 112, "still nan")
    assert not allows(state, 121, CONFIG)


def test_late_outcome_while_open_is_ignored() -> None:
    state = BreakerState("open", (), 100.0, 0, "error")
    assert record(state, False, 101, CONFIG) == state


@given(st.lists(st.booleans(), max_size=60))
def test_never_open_with_fewer_failures_than_the_threshold_in_the_window(outcomes: list[bool]) -> None:
    state = BreakerState()
    for t, failed in enumerate(outcomes):
        state = record(state, failed, float(t), BreakerConfig(window_calls=5, failures_to_open=3, open_s=1e9))
        window = outcomes[max(0, t - 4): t + 1]
        if state.status == "closed":
            assert sum(state.recent) < 3 and len(state.recent) <= 5
        if sum(window) >= 3:
            assert state.status == "open"


def test_bad_rows_finds_nan_out_of_range_and_bad_sums() -> None:
    good = np.array([[0.2, 0.3, 0.5]] * 5)
    other = good.copy()
    other[1, 0] = np.nan
    other[2] = [1.5, -0.5, 0.0]
    other[3] = [0.2, 0.2, 0.2]
    assert bad_rows({"1%": good, "2%": other}, 5).tolist() == [False, True, True, True, False]
    assert bad_rows({"1%": good[:3]}, 5).all()
