"""A call's explanation, computed when a person opens the call (never on the worker's path).

The candles come from the worker's window store in Redis (read, never written); the
:class:`~bse_predict.explain.explainer.Explainer` (the version's native model, the call's window, the
check against the published answer) runs on a thread of its own, so the pages and the feed keep going,
and gets ``timeout_s``. A computation that overran keeps running on its thread and fills the model cache
for the next request. Errors say why there is no explanation: :class:`ExplainError` from the explainer,
:class:`~bse_predict.dashboard.errors.SourceUnavailable` when Redis does not answer."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Awaitable, Callable

import numpy as np

from bse_predict.candles.schema import Prediction
from bse_predict.explain.errors import ExplanationUnavailable
from bse_predict.explain.explainer import Explainer
from bse_predict.explain.explanation import Explanation

__all__ = ["ReadCandles", "OnDemandExplanations"]

ReadCandles = Callable[[str, str], Awaitable[tuple[np.ndarray, np.ndarray]]]
"""(symbol, timeframe) -> the closed candles' open times and OHLCV, as the worker's window store reads them."""


class OnDemandExplanations:
    def __init__(self, read_candles: ReadCandles, explainer: Explainer, timeout_s: float) -> None:
        self._read_candles = read_candles
        self._explainer = explainer
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="explain")

    async def explain(self, prediction: Prediction, target: str) -> Explanation:
        open_time_ms, ohlcv = await self._read_candles(prediction.symbol, prediction.timeframe)
        computing = asyncio.get_running_loop().run_in_executor(
            self._executor, self._explainer.explain, prediction, target, open_time_ms, ohlcv)
        try:
            return await asyncio.wait_for(computing, self._timeout_s)
        except TimeoutError:
            raise ExplanationUnavailable(f"not computed within {self._timeout_s} s; try again") from None

    def close(self) -> None:
        """Drop queued work; a computation in progress finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
