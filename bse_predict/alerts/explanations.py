"""The explanation of an alerted call, for the alerts service: off the worker, bounded in time.

The alerts service asks only for calls it is about to alert. The candles come
from the worker's window store in Redis (read, never written); the
:class:`~bse_predict.explain.explainer.Explainer` runs on a thread of its own, so
the event loop keeps serving Kafka and Telegram. The whole step (the read and
the computation) gets ``alerts.explain_timeout_s``: past that, or when the
explainer says there is no truthful explanation, the alert goes without one.
A computation that overran keeps running on its thread and fills the model
cache for the next call; one still queued behind it is dropped. Nothing here
can hold an alert back for longer than the timeout or stop the service.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np

from bse_predict.candles.schema import ModelRef, Prediction
from bse_predict.explain.errors import ExplainError
from bse_predict.explain.explainer import Explainer
from bse_predict.explain.explanation import Explanation

__all__ = ["CallExplanations", "ClosedCandles"]

log = logging.getLogger(__name__)

_FAILURES = (ValueError, ArithmeticError, LookupError, RuntimeError, MemoryError)
"""Beside its own refusals (:class:`~bse_predict.explain.errors.ExplainError`), what an explanation may fail
with: a library's error on an odd model or window. Logged with its traceback; it costs only the explanation
line, never the alert."""


class ClosedCandles(Protocol):
    """The read side of the worker's window store (:class:`bse_predict.stream.window_store.RedisWindowStore`)."""

    async def closed_candles(self, symbol: str, timeframe: str) -> tuple[np.ndarray, np.ndarray]: ...


class CallExplanations:
    def __init__(self, candles: ClosedCandles, explainer: Explainer, timeout_s: float) -> None:
        self._candles = candles
        self._explainer = explainer
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")
        self._prepared: set[tuple[str, str]] = set()

    async def explain(self, prediction: Prediction, target: str) -> Explanation | None:
        """The call's explanation, or None (logged why) when there is none within the timeout."""
        try:
            return await asyncio.wait_for(self._explain(prediction, target), self._timeout_s)
        except TimeoutError:
            log.warning("explanation of %s %s not ready within %s s: the alert goes without it", prediction.id,
                        target, self._timeout_s)
        except ExplainError as exc:
            log.info("no explanation for %s %s: %s", prediction.id, target, exc)
        except _FAILURES:
            log.exception("explaining %s %s failed: the alert goes without an explanation", prediction.id, target)
        return None

    async def _explain(self, prediction: Prediction, target: str) -> Explanation:
        open_time_ms, ohlcv = await self._candles.closed_candles(prediction.symbol, prediction.timeframe)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._explainer.explain, prediction, target,
                                          open_time_ms, ohlcv)

    def prepare(self, prediction: Prediction) -> None:
        """Start loading the prediction's models on the explanation thread, once per (version, model), so
        that the first alert does not wait for them; returns at once."""
        model = prediction.model
        if (model.version, model.name) in self._prepared:
            return
        self._prepared.add((model.version, model.name))
        future = self._executor.submit(self._explainer.prepare, model, tuple(prediction.targets))
        future.add_done_callback(lambda done: self._log_unprepared(model, done))

    @staticmethod
    def _log_unprepared(model: ModelRef, done: Future[None]) -> None:
        error = None if done.cancelled() else done.exception()
        if error is not None:
            log.info("%s %s will not be explained: %s", model.name, model.version, error)

    def close(self) -> None:
        """Drop queued work; a computation in progress finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
