"""Retrying the control plane's Redis and Kafka calls in place (bse_predict/connections/transient.py)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest
import redis.exceptions
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from bse_predict.connections.transient import Backoff, retry_transient, transient_service

BACKOFF = Backoff(initial_s=0.001, max_s=0.004)
log = logging.getLogger("test.control.retry")


class FailingCall:
    """Raises each of ``errors`` in turn, then returns the number of calls."""

    def __init__(self, *errors: Exception) -> None:
        self._errors = list(errors)
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self._errors:
            raise self._errors.pop(0)
        return self.calls


def test_transient_faults_are_retried_counted_and_logged_once_each_way(caplog: pytest.LogCaptureFixture) -> None:
    call = FailingCall(redis.exceptions.ConnectionError("refused"), redis.exceptions.BusyLoadingError("loading"),
                       KafkaTimeoutError(), redis.exceptions.TimeoutError("slow"))
    faults: Counter[str] = Counter()
    with caplog.at_level(logging.INFO, logger=log.name):
        assert asyncio.run(retry_transient(call, "doing it", BACKOFF, faults, log)) == 5
    assert faults == Counter(redis=3, kafka=1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("doing it: redis fault (ConnectionError: refused), retrying in place")
    assert lines[1] == "doing it: recovered after 4 failed tries"


def test_a_call_that_works_logs_and_counts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    faults: Counter[str] = Counter()
    with caplog.at_level(logging.INFO, logger=log.name):
        assert asyncio.run(retry_transient(FailingCall(), "doing it", BACKOFF, faults, log)) == 1
    assert not faults and not caplog.records


@pytest.mark.parametrize("error", [ValueError("a bug"), redis.exceptions.ResponseError("WRONGTYPE"),
                                   MessageSizeTooLargeError()])
def test_other_errors_are_raised_at_once(error: Exception) -> None:
    call = FailingCall(error)
    faults: Counter[str] = Counter()
    with pytest.raises(type(error)):
        asyncio.run(retry_transient(call, "doing it", BACKOFF, faults, log))
    assert call.calls == 1 and not faults


def test_which_errors_are_transient() -> None:
    assert transient_service(redis.exceptions.ReadOnlyError("replica")) == "redis"
    assert transient_service(KafkaConnectionError()) == "kafka"
    assert transient_service(redis.exceptions.ResponseError("ERR")) is None
    assert transient_service(MessageSizeTooLargeError()) is None
    assert transient_service(OSError("disk")) is None
