"""Token buckets and backoff with the time passed in."""

from __future__ import annotations

import pytest

from bse_predict.alerts.telegram_pacing import TokenBucket, backoff_delay_s


def test_burst_then_one_per_interval() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3)
    for _ in range(3):
        assert bucket.wait_s(0.0) == 0
        bucket.take(0.0)
    assert bucket.wait_s(0.0) == pytest.approx(1.0)
    assert bucket.wait_s(0.5) == pytest.approx(0.5)
    bucket.take(1.0)
    assert bucket.wait_s(1.0) == pytest.approx(1.0)
    assert bucket.wait_s(100.0) == 0  # refills, but never beyond the burst
    for _ in range(3):
        bucket.take(100.0)
    with pytest.raises(ValueError):
        bucket.take(100.0)


def test_hold_honours_retry_after() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=5)
    bucket.hold(10.0, 3.0)
    assert bucket.wait_s(10.0) >= 3.0
    assert bucket.wait_s(13.5) == 0


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_delay_s(a, 0.5, 3.0) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        backoff_delay_s(0, 1, 2)
