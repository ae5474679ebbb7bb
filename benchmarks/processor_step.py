"""Per-tick cost of the worker's candle processor with everything on: a served ensemble, a shadow version, drift.

Feeds ticks of ``--symbols`` closed candles (real ones, ``../shared/data/candles``)
through :class:`~bse_predict.stream.processor.CandleProcessor` in process: the
in-memory window store (the Redis store is measured by ``bse-predict bench``), a
publisher that drops what it is given, a :class:`~bse_predict.serving.router.ModelRouter`
serving ``--version`` live and ``--shadow-version`` in shadow, and the outcome side
as the worker builds it (real Redis and Kafka: outcome store, live scores,
challenger, drift). The first ``--warm`` ticks are untimed. Prints one JSON
object. Run from the repository root with the services up:

    .venv/bin/python benchmarks/processor_step.py --version V --shadow-version V2 [--symbols 100] [--ticks 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bse_predict.candles.schema import DeadLetter, Prediction
from bse_predict.connections.clients import connect_redis, kafka_options
from bse_predict.connections.topics import TopicNames, delete_topics_under, ensure_topics
from bse_predict.control.state_machine import ControlState
from bse_predict.ensembles.adaptive_weights import load_served_version
from bse_predict.features.definitions import LOOKBACK_CANDLES
from bse_predict.monitoring.live_outcomes import LiveOutcomes
from bse_predict.monitoring.resolver import KafkaOutcomePublisher
from bse_predict.serving.router import ModelRouter
from bse_predict.stream.bench_load import bench_symbols
from bse_predict.stream.processor import CandleProcessor, RawMessage
from bse_predict.stream.replay import candle_payload
from bse_predict.stream.window_store import MemoryWindowStore
from configs.settings import load_settings

_DATA = Path("../shared/data/candles/binance-futures")


class _DroppingPublisher:
    def __init__(self) -> None:
        self.predictions = 0
        self.shadow = 0

    async def publish(self, predictions: Sequence[Prediction], dead_letters: Sequence[DeadLetter],
                      shadow: Sequence[Prediction] = ()) -> None:
        self.predictions += len(predictions)
        self.shadow += len(shadow)


async def _run(args: argparse.Namespace) -> dict[str, object]:
    settings = load_settings(topic_prefix=f"bench-processor-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(settings)
    live = load_served_version(settings, args.version)
    shadow = load_served_version(settings, args.shadow_version)
    loaded = {live.version: live, shadow.version: shadow}
    router = ModelRouter(live, loaded.__getitem__, settings.control.breaker)
    router.table = router.table_for(ControlState(revision=1, live=live.version, shadow=shadow.version))
    client = connect_redis(settings)
    outcome_publisher = KafkaOutcomePublisher(kafka_options(settings), TopicNames.of(settings).outcomes)
    await outcome_publisher.start()
    resolver = LiveOutcomes(settings).resolver(client, outcome_publisher)
    publisher = _DroppingPublisher()
    processor = CandleProcessor(settings, MemoryWindowStore(settings.window.retain_candles), router, publisher,
                                ThreadPoolExecutor(max_workers=1), outcomes=resolver)
    first = router.min_history - 1
    series = bench_symbols([_DATA], args.symbols, first + args.warm + args.ticks)

    def tick_messages(row: int) -> list[RawMessage]:
        return [RawMessage(s.symbol.encode(), candle_payload(s.symbol, s.timeframe, int(s.open_time_ms[row]),
                                                             s.ohlcv[row], True), "candles", 0, row) for s in series]

    times: list[float] = []
    try:
        for row in range(first):  # history only: no prediction yet
            await processor.process(tick_messages(row))
        for tick in range(args.warm + args.ticks):
            if tick == args.warm:
                processor.stage_times.take_per_batch_ms()  # from here on, the timed ticks only
            messages = tick_messages(first + tick)
            started = time.perf_counter()
            await processor.process(messages)
            if tick >= args.warm:
                times.append((time.perf_counter() - started) * 1000.0)
    finally:
        await outcome_publisher.stop()
        keys = [k async for k in client.scan_iter(match=f"{settings.topic_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await delete_topics_under(settings, settings.topic_prefix)
    return {
        "symbols": args.symbols, "timed_ticks": len(times), "live": live.version, "shadow": shadow.version,
        "lookback_candles": LOOKBACK_CANDLES, "min_history": router.min_history,
        "ms_per_tick": {"p50": round(statistics.median(times), 2), "mean": round(statistics.fmean(times), 2),
                        "p90": round(statistics.quantiles(times, n=10)[-1], 2), "max": round(max(times), 2)},
        "ms_per_batch_by_stage": processor.stage_times.take_per_batch_ms(),
        "published": {"predictions": publisher.predictions, "shadow": publisher.shadow},
        "counts": {k: v for k, v in processor.counts.items() if not k.startswith("dlq")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the live version (an ensemble served member by member)")
    parser.add_argument("--shadow-version", required=True)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--warm", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=60)
    print(json.dumps(asyncio.run(_run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
