"""Each batch of candles is finished, or the process leaves without acknowledging it.

Faust acknowledges a ``take_events`` batch in the ``finally`` around its
``yield``: whatever ends the loop body, an exception or a cancellation,
acknowledges the batch, and Faust later commits its offsets. So the body must
end only when the batch is done. :class:`BatchGuard` runs one attempt after
another of the same batch:

- an attempt that raises, or is still running after ``attempt_timeout_s`` (a call
  that hangs: it is cancelled), is a fault: one log line when the first attempt of a
  batch fails and one when the batch finally succeeds, counted in ``counts``
  (``fault.<kind>``, ``fault_recovered``) for ``/metrics``; the next attempt
  waits an exponential backoff, and ``recover(kind)`` runs before it (the
  publishers start a fresh producer after a broker fault). Meanwhile the
  agent takes nothing new: Faust's stream buffer fills and its flow control
  stops the fetching. The partitions are not paused through Faust's
  ``pause_partitions``: in faust-streaming 0.15 a fetch already under way for
  a partition paused meanwhile drops its records (``Consumer.getmany`` yields
  only active partitions), which stalled the stream in the chaos suite;
- still failing after ``deadline_s``: the process exits with
  :data:`FAULT_EXIT_CODE` at once (``os._exit``: no ``finally``, no ack, no
  graceful commit), and its supervisor restarts it from the last committed
  offset;
- a stop (SIGTERM cancels the agent) while a batch is in hand lets the batch
  finish within ``stop_grace_s`` and then stops; a batch that cannot finish
  in time makes the process exit the same hard way.

Every step of a batch is safe to repeat (idempotent window writes, predictions
deduplicated by id downstream, pending outcomes refused once settled), which
is what makes retrying a whole batch correct.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from configs.settings import FaultConfig

__all__ = ["BatchGuard", "FAULT_EXIT_CODE", "FaultInjector", "InjectedFault", "fault_kind", "leave_now"]

log = logging.getLogger(__name__)

FAULT_EXIT_CODE = 75
"""EX_TEMPFAIL: the worker gave up on a batch it could not finish; restarting it resumes that batch."""


class InjectedFault(RuntimeError):
    """Raised by the chaos suite's test hook (``worker.faults.inject_failure_probability``)."""


def fault_kind(error: BaseException) -> str:
    """``redis``, ``kafka``, ``network``, ``injected`` or ``other``: the label of a fault in logs and metrics."""
    if isinstance(error, RedisError):
        return "redis"
    if isinstance(error, KafkaError):
        return "kafka"
    if isinstance(error, InjectedFault):
        return "injected"
    if isinstance(error, (OSError, asyncio.TimeoutError)):
        return "network"
    return "other"


def leave_now(code: int) -> None:
    """Exit the process at once, logs flushed, skipping every ``finally`` and Faust's commit on stop."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class BatchGuard:
    """See the module docstring. ``leave`` is :func:`leave_now` outside tests; ``in_hand`` is true while
    a batch runs."""

    def __init__(self, config: FaultConfig, counts: Counter[str], *,
                 recover: Callable[[str], Awaitable[None]] | None = None,
                 leave: Callable[[int], None] = leave_now,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._counts = counts
        self._recover = recover
        self._leave = leave
        self._sleep = sleep
        self._clock = clock
        self.in_hand = False


    async def run(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Return once ``attempt`` succeeded; see the module docstring for faults and stops."""
        task = asyncio.ensure_future(self._until_done(attempt))
        self.in_hand = True
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await self._finish_before_stop(task)
            raise
        finally:
            self.in_hand = False

    async def _finish_before_stop(self, task: asyncio.Future[None]) -> None:
        ends_at = self._clock() + self._config.stop_grace_s
        while not task.done():
            left = ends_at - self._clock()
            if left <= 0:
                log.error("stopping with a batch still unfinished after %.0f s: leaving without acknowledging it "
                          "(exit %d; a restart processes it again)", self._config.stop_grace_s, FAULT_EXIT_CODE)
                self._leave(FAULT_EXIT_CODE)
                return
            try:
                await asyncio.wait({task}, timeout=left)
            except asyncio.CancelledError:  # asked again to stop: the batch in hand still comes first
                continue

    async def _until_done(self, attempt: Callable[[], Awaitable[None]]) -> None:
        first_failure: float | None = None
        attempts = 0
        delay = self._config.retry_initial_s
        while True:
            attempts += 1
            try:
                await asyncio.wait_for(attempt(), self._config.attempt_timeout_s)
            except Exception as error:  # every failure of an attempt is retried or ends the process
                kind = fault_kind(error)
                self._counts[f"fault.{kind}"] += 1
                now = self._clock()
                if first_failure is None:
                    first_failure = now
                    log.warning("batch failed (%s fault: %s: %s); retrying it in place", kind,
                                type(error).__name__, error)
                if now - first_failure >= self._config.deadline_s:
                    log.error("batch still failing after %.0f s and %d attempts (%s: %s): leaving without "
                              "acknowledging it (exit %d; a restart resumes from the last committed offset)",
                              now - first_failure, attempts, type(error).__name__, error, FAULT_EXIT_CODE)
                    self._leave(FAULT_EXIT_CODE)
                    raise  # only reached when ``leave`` returns (tests)
                await self._sleep(delay)
                delay = min(2 * delay, self._config.retry_max_s)
                if self._recover is not None:
                    try:
                        await self._recover(kind)
                    except Exception as recover_error:  # the next attempt meets the same fault and counts it
                        log.info("recovery step after a %s fault failed: %r", kind, recover_error)
                continue
            if first_failure is not None:
                self._counts["fault_recovered"] += 1
                log.warning("batch recovered after %d attempts and %.1f s", attempts, self._clock() - first_failure)
            return


class FaultInjector:
    """The chaos suite's test hook: called at each stage of a batch, raises :class:`InjectedFault`
    with ``probability`` (``worker.faults.inject_failure_probability``; 0 in production)."""

    def __init__(self, probability: float, rng: random.Random | None = None) -> None:
        self._probability = probability
        self._rng = rng or random.Random()

    def __call__(self, stage: str) -> None:
        if self._rng.random() < self._probability:
            raise InjectedFault(f"injected at stage {stage!r}")
