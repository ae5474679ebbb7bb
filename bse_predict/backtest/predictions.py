"""Backtest predictions from the worker's own code path: no second implementation.

Candle files are replayed, merged by open time one tick at a time (every
symbol's candle of an hour in one batch, as the live feed delivers them),
through :class:`bse_predict.stream.processor.CandleProcessor` with the in-memory window
store and a publisher that keeps what it is given. Windows, features, ONNX
inference and signals are therefore the worker's, byte for byte; only Kafka
and Redis are replaced by memory. The trades and the report are built from
these predictions elsewhere (:mod:`bse_predict.backtest.trading`, :mod:`bse_predict.backtest.report`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.serving.model_set import Predictor
from bse_predict.candles.schema import DeadLetter, Prediction
from bse_predict.stream.replay import candle_records
from bse_predict.stream.processor import CandleProcessor, RawMessage
from bse_predict.stream.window_store import MemoryWindowStore

__all__ = ["CollectingPublisher", "replay_predictions"]

_TOPIC = "backtest.candles"


class CollectingPublisher:
    """A :class:`bse_predict.stream.processor.Publisher` that keeps every message in memory."""

    def __init__(self) -> None:
        self.predictions: list[Prediction] = []
        self.dead_letters: list[DeadLetter] = []

    async def publish(self, predictions: Sequence[Prediction], dead_letters: Sequence[DeadLetter],
                      shadow: Sequence[Prediction] = ()) -> None:
        self.predictions.extend(predictions)
        self.dead_letters.extend(dead_letters)


async def _replay(settings: Settings, predictor: Predictor, series: Sequence[CandleSeries],
                  on_tick: Callable[[int], None] | None) -> CollectingPublisher:
    publisher = CollectingPublisher()
    store = MemoryWindowStore(settings.window.retain_candles)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backtest-inference") as executor:
        processor = CandleProcessor(settings, store, predictor, publisher, executor)
        tick: list[RawMessage] = []
        tick_time: int | None = None
        ticks = 0
        for offset, record in enumerate(candle_records(series)):
            if tick and record.open_time_ms != tick_time:
                await processor.process(tick)
                ticks += 1
                if on_tick is not None:
                    on_tick(ticks)
                tick = []
            tick_time = record.open_time_ms
            tick.append(RawMessage(record.symbol.encode(), record.payload, _TOPIC, 0, offset))
        if tick:
            await processor.process(tick)
    if publisher.dead_letters:
        reasons = sorted({d.reason for d in publisher.dead_letters})[:3]
        raise ValueError(f"{len(publisher.dead_letters)} candles were refused by the worker's validation: {reasons}")
    return publisher


def replay_predictions(settings: Settings, predictor: Predictor, series: Sequence[CandleSeries],
                       on_tick: Callable[[int], None] | None = None) -> list[Prediction]:
    """Every prediction the worker publishes for these candles, in publication order."""
    return asyncio.run(_replay(settings, predictor, series, on_tick)).predictions
