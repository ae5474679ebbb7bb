"""The batch guard: a failing batch is retried in place, never given up silently, and a stop lets it finish."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter

import pytest
from aiokafka.errors import KafkaTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError

from configs.settings import FaultConfig
from tests.support.fake_time import FakeTime
from bse_predict.stream.batch_guard import FAULT_EXIT_CODE, BatchGuard, FaultInjector, InjectedFault, fault_kind


class Left(Exception):
    """Stands in for the process exit: ``leave`` raises it so the test sees the exit code."""


def _leave(code: int) -> None:
    raise Left(code)



def _failing(times: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(len(calls))
        if len(calls) <= times:
            raise error

    return calls, attempt


async def test_a_transient_fault_is_retried_with_backoff_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    counts: Counter[str] = Counter()
    recovered: list[str] = []

    async def recover(kind: str) -> None:
        recovered.append(kind)

    guard = BatchGuard(FaultConfig(retry_initial_s=0.5, retry_max_s=2.0), counts, recover=recover,
                       leave=_leave, sleep=time.sleep, clock=time.clock)
    calls, attempt = _failing(4, RedisConnectionError("Connection reset by peer"))
    with caplog.at_level(logging.WARNING, logger="bse_predict.stream.batch_guard"):
        await guard.run(attempt)
    assert len(calls) == 5
    assert time.sleeps == [0.5, 1.0, 2.0, 2.0]
    assert counts == Counter({"fault.redis": 4, "fault_recovered": 1})
    assert recovered == ["redis"] * 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # one line for the fault, one for the recovery
    assert "redis fault" in lines[0] and "recovered after 5 attempts" in lines[1]


async def test_past_the_deadline_the_process_leaves_without_finishing() -> None:
    time = FakeTime()
    counts: Counter[str] = Counter()
    guard = BatchGuard(FaultConfig(retry_initial_s=1.0, retry_max_s=4.0, deadline_s=30.0), counts,
                       leave=_leave, sleep=time.sleep, clock=time.clock)
    calls, attempt = _failing(10_000, KafkaTimeoutError("produce not acknowledged"))
    with pytest.raises(Left) as left:
        await guard.run(attempt)
    assert left.value.args == (FAULT_EXIT_CODE,)
    assert time.now >= 30.0 and time.now < 30.0 + 4.0
    assert counts["fault.kafka"] == len(calls) and counts["fault_recovered"] == 0


async def test_a_stop_lets_the_batch_in_hand_finish_before_it_propagates() -> None:
    finished = asyncio.Event()
    release = asyncio.Event()

    async def attempt() -> None:
        await release.wait()
        finished.set()

    guard = BatchGuard(FaultConfig(stop_grace_s=5.0), Counter(), leave=_leave)
    task = asyncio.create_task(guard.run(attempt))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # still finishing the batch
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()


async def test_a_stop_with_a_batch_that_cannot_finish_leaves_hard() -> None:
    async def attempt() -> None:
        await asyncio.Event().wait()

    left: list[int] = []
    guard = BatchGuard(FaultConfig(stop_grace_s=0.05), Counter(), leave=left.append)
    task = asyncio.create_task(guard.run(attempt))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert left == [FAULT_EXIT_CODE]


def test_faults_are_named_by_their_source() -> None:
    assert fault_kind(RedisConnectionError()) == "redis"
    assert fault_kind(KafkaTimeoutError()) == "kafka"
    assert fault_kind(ConnectionResetError()) == "network"
    assert fault_kind(InjectedFault("x")) == "injected"
    assert fault_kind(ValueError()) == "other"


def test_the_injector_fails_at_about_its_rate() -> None:
    injector = FaultInjector(0.2, random.Random(7))
    failures = 0
    for _ in range(5_000):
        try:
            injector("store")
        except InjectedFault:
            failures += 1
    assert 850 < failures < 1150
    never = FaultInjector(0.0, random.Random(7))
    for _ in range(1_000):
        never("store")


async def test_an_attempt_that_hangs_is_cancelled_and_retried() -> None:
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.Event().wait()  # a call that never answers

    counts: Counter[str] = Counter()
    guard = BatchGuard(FaultConfig(attempt_timeout_s=0.05, retry_initial_s=0.01), counts, leave=_leave)
    await guard.run(attempt)
    assert len(calls) == 2
    assert counts == Counter({"fault.network": 1, "fault_recovered": 1})
