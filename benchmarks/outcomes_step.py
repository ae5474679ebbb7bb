"""Per-tick cost of the worker's outcome step against the real Redis and Kafka.

Feeds 100-symbol ticks of real candles (``../shared/data/candles``) through the
:class:`~bse_predict.monitoring.resolver.OutcomeResolver` the worker builds (Redis outcome
store, Kafka outcome publisher, live scores, challenger watch, drift monitor),
with one live and (unless ``--shadow-version ''``) one shadow prediction per symbol and candle, the live
ones' feature rows handed to drift as the stream hands them. The first
``--warm`` ticks fill the pending books (72 candles x 3 targets x 2 streams per
symbol at the defaults); the next ``--ticks`` are timed. Prints one JSON object;
``--profile`` prints the top of a cProfile of the timed ticks instead.
Run from the repository root:

    .venv/bin/python benchmarks/outcomes_step.py [--symbols 100] [--warm 80] [--ticks 40] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path


import numpy as np

from configs.settings import load_settings
from bse_predict.features.definitions import LOOKBACK_CANDLES, feature_matrix
from bse_predict.serving.manifest import newest_version
from bse_predict.candles.schema import Candle, ModelRef, Prediction, TargetPrediction
from bse_predict.connections.clients import connect_redis, kafka_options
from bse_predict.stream.bench_load import bench_symbols
from bse_predict.monitoring.live_outcomes import LiveOutcomes
from bse_predict.monitoring.resolver import KafkaOutcomePublisher, OutcomeResolver
from bse_predict.connections.topics import TopicNames, delete_topics_under, ensure_topics

_DATA = Path("../shared/data/candles/binance-futures")


def _time_parts(resolver: OutcomeResolver, parts: dict[str, list[float]]) -> None:
    """Wrap the resolver's collaborators (private attributes: a benchmark may look inside) with timers."""

    def timed(name: str, call: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[object]]:
        async def wrapper(*args: object) -> object:
            started = time.perf_counter()
            try:
                return await call(*args)
            finally:
                parts[name].append((time.perf_counter() - started) * 1000)
        return wrapper

    store, publisher = resolver._store, resolver._publisher  # noqa: SLF001
    for name in ("register", "pending", "settle"):
        setattr(store, name, timed(f"store.{name}", getattr(store, name)))
    setattr(publisher, "publish_outcomes", timed("publish_outcomes", publisher.publish_outcomes))
    for listener in resolver._listeners:  # noqa: SLF001
        setattr(listener, "on_settled", timed(type(listener).__name__, listener.on_settled))
    for listener in resolver._batch_listeners:  # noqa: SLF001
        setattr(listener, "on_batch", timed(type(listener).__name__, listener.on_batch))


def _prediction(candle: Candle, version: str, index: int) -> Prediction:
    p_up = 0.2 + 0.6 * ((index * 37 + candle.open_time // 3_600_000) % 10) / 10
    part = TargetPrediction.model_construct(p_up=p_up, p_down=(1 - p_up) * 0.7, p_none=(1 - p_up) * 0.3,
                                            direction="up", confidence=p_up, signal="hold")
    return Prediction.model_construct(
        id=f"{candle.symbol}|{candle.timeframe}|{candle.open_time}", symbol=candle.symbol, timeframe=candle.timeframe,
        open_time=candle.open_time, close=candle.close, horizon_hours=72,
        targets={"1%": part, "2%": part, "5%": part}, model=ModelRef.model_construct(name="random_forest", version=version),
        variant="control", degraded=False, regime=None, latency_ms=1.0)


async def _run(args: argparse.Namespace) -> None:
    settings = load_settings(topic_prefix=f"bench-outcomes-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(settings)
    names = TopicNames.of(settings)
    live_version = args.version or newest_version(settings.models_dir)
    shadow_version = live_version if args.shadow_version is None else args.shadow_version
    first = LOOKBACK_CANDLES - 1  # the first candle with a full window
    series = bench_symbols([_DATA], args.symbols, first + args.warm + args.ticks)
    features = np.stack([feature_matrix(s.open_time_ms, s.ohlcv)[first:] for s in series], axis=1)  # [tick, symbol, F]
    client = connect_redis(settings)
    publisher = KafkaOutcomePublisher(kafka_options(settings), names.outcomes)
    await publisher.start()
    resolver = LiveOutcomes(settings).resolver(client, publisher)
    assert resolver is not None
    parts: dict[str, list[float]] = defaultdict(list)
    _time_parts(resolver, parts)
    times: list[float] = []
    profiler = cProfile.Profile()
    try:
        for tick in range(args.warm + args.ticks):
            row = first + tick
            closed = [Candle.model_construct(symbol=s.symbol, timeframe=s.timeframe, open_time=int(s.open_time_ms[row]),
                                             open=float(s.ohlcv[row, 0]), high=float(s.ohlcv[row, 1]),
                                             low=float(s.ohlcv[row, 2]), close=float(s.ohlcv[row, 3]),
                                             volume=float(s.ohlcv[row, 4]), closed=True) for s in series]
            live = [_prediction(c, live_version, i) for i, c in enumerate(closed)]
            shadow = [_prediction(c, shadow_version, i + 1) for i, c in enumerate(closed)] if shadow_version else []
            timed = tick >= args.warm
            if timed and args.profile:
                profiler.enable()
            started = time.perf_counter()
            await resolver.after_publish(live, shadow, closed, lambda tick=tick: features[tick])
            if timed:
                times.append((time.perf_counter() - started) * 1000)
            else:
                parts.clear()
            if timed and args.profile:
                profiler.disable()
    finally:
        await publisher.stop()
        keys = [k async for k in client.scan_iter(match=f"{settings.topic_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await delete_topics_under(settings, settings.topic_prefix)
    if args.profile:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
        return
    print(json.dumps({
        "symbols": args.symbols, "timed_ticks": len(times), "pending_per_symbol": (2 if shadow_version else 1) * 3 * 72,
        "ms_per_tick": {"p50": round(statistics.median(times), 2), "mean": round(statistics.fmean(times), 2),
                        "max": round(max(times), 2)},
        "ms_per_tick_by_part": {name: round(sum(v) / len(times), 2) for name, v in parts.items()},
        "counts": dict(resolver.counts),
    }, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--warm", type=int, default=80)
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--version", default=None)
    parser.add_argument("--shadow-version", default=None, help="default: the live version; '' for no shadow stream")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key with --profile")
    parser.add_argument("--top", type=int, default=35, help="lines of the profile to print")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
