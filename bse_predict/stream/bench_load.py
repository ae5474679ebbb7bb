"""The load side of ``bse-predict bench``: candles sent in ticks at a rate, outputs watched, latency timed.

One phase (:func:`drive`) fills the windows (``min_history`` candles per symbol,
not timed), sends ``settle_seconds`` of ticks untimed (the first full batches
pay one-off costs: allocations, caches), then sends ticks of one closed candle
per symbol at ``rate`` candles per second for ``seconds`` and records
candle-sent to output-consumed latency, then sends a burst as fast as possible
to measure the maximum throughput.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pydantic import BaseModel

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import TopicNames
from bse_predict.stream.replay import candle_payload

__all__ = ["LatencySummary", "PhaseResult", "LoadPlan", "bench_symbols", "drive"]

Progress = Callable[[str], None]


class LatencySummary(BaseModel):
    p50: float
    p99: float
    max: float
    mean: float


class PhaseResult(BaseModel):
    phase: str
    sent: int
    received: int
    missing: int
    latency_ms: LatencySummary | None
    achieved_rate_per_s: float
    max_throughput_per_s: float
    burst_received: int
    processing_ms: LatencySummary | None = None
    worker_cpu_ms_per_candle: float | None = None
    """CPU time (user + system) the phase's process spent per candle sent, from the first settle tick
    until the burst was answered: what a candle costs, much less moved by other load than latency."""
    shadow_outputs: int | None = None
    """Messages on ``predictions.shadow`` during the phase, where a shadow version was served."""
    process_exit_code: int | None = None


class LoadPlan(Protocol):
    """What a phase sends (:class:`bse_predict.stream.bench.BenchOptions` is one)."""

    rate: float
    seconds: float
    settle_seconds: float
    burst_candles: int
    phase_timeout_s: float


def summary(values: Sequence[float]) -> LatencySummary | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return LatencySummary(p50=round(float(np.percentile(array, 50)), 3), p99=round(float(np.percentile(array, 99)), 3),
                          max=round(float(array.max()), 3), mean=round(float(array.mean()), 3))


def bench_symbols(data: Sequence[Path], count: int, rows: int) -> list[CandleSeries]:
    """``count`` distinct symbols of ``rows`` candles each, ticking in step as a live fleet does: every
    series is moved in time (by whole candles) to end at the same open time as the newest one, so the
    candles of one tick share their hour (their live-score buckets and drift days, as in production).
    Beyond the real series, extra symbols reuse a real series' earlier stretch under a new name
    (BTC1USDT, ...), so no two symbols replay the same prices."""
    sources = [s for s in read_candle_files(data) if len(s.open_time_ms) >= rows]
    if not sources:
        raise ValueError(f"no candle series with {rows} rows in {list(map(str, data))}")
    chosen: list[CandleSeries] = []
    taken: set[str] = set()
    for index in range(count):
        base = sources[index % len(sources)]
        round_ = index // len(sources)
        end = len(base.open_time_ms) - round_ * rows
        if end < rows:
            raise ValueError(f"{base.symbol} has too few rows for {count} symbols of {rows} candles")
        name = base.symbol
        suffix = 1
        while name in taken:
            name = f"{base.symbol.removesuffix('USDT')}{suffix}USDT"
            suffix += 1
        taken.add(name)
        chosen.append(CandleSeries(name, base.timeframe, base.open_time_ms[end - rows:end], base.ohlcv[end - rows:end],
                                   base.source))
    newest = max(int(s.open_time_ms[-1]) for s in chosen)
    return [CandleSeries(s.symbol, s.timeframe, s.open_time_ms + (newest - int(s.open_time_ms[-1])), s.ohlcv, s.source)
            for s in chosen]


def _payloads(series: Sequence[CandleSeries], index: int) -> list[tuple[str, str, bytes]]:
    out = []
    for s in series:
        t = int(s.open_time_ms[index])
        out.append((s.symbol, f"{s.symbol}|{s.timeframe}|{t}", candle_payload(s.symbol, s.timeframe, t, s.ohlcv[index], True)))
    return out


class _OutputWatcher:
    """Consumes the phase's output topic and notes when each id first arrived."""

    def __init__(self, kafka: Mapping[str, Any], topic: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(**kafka, enable_auto_commit=False, group_id=None,
                                          auto_offset_reset="earliest", fetch_max_wait_ms=5)
        self._topic = topic
        self._partitions = partitions
        self.arrived: dict[str, float] = {}
        self.processing_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        parts = [TopicPartition(self._topic, p) for p in range(self._partitions)]
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    message = orjson.loads(record.value)
                    key = message.get("id") or f"{message['symbol']}|{message['timeframe']}|{message['open_time']}"
                    self.arrived.setdefault(key, now)
                    if "latency_ms" in message:
                        self.processing_ms.append(float(message["latency_ms"]))

    async def wait_for(self, ids: Sequence[str], timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline and not all(i in self.arrived for i in ids):
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()


async def _send_tick(producer: AIOKafkaProducer, topic: str, tick: list[tuple[str, str, bytes]],
                     sent_at: dict[str, float]) -> list[asyncio.Future]:
    futures = []
    for symbol, candle_id, payload in tick:
        sent_at[candle_id] = time.perf_counter()
        futures.append(await producer.send(topic, payload, key=symbol.encode()))
    return futures


class _Load:
    """One phase's producer, output watcher and send times, shared by its three parts."""

    def __init__(self, settings: Settings, name: str, output_topic: str, series: Sequence[CandleSeries]) -> None:
        self.name = name
        self.series = series
        self.topic = TopicNames.of(settings).candles
        self.watcher = _OutputWatcher(kafka_options(settings), output_topic, settings.topics.partitions)
        self.producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=0)
        self.sent_at: dict[str, float] = {}

    async def send_ticks(self, rows: range, timed: bool, interval_s: float = 0.0) -> list[str]:
        """Send one tick per row (paced ``interval_s`` apart when given); the ids sent, once acknowledged."""
        ids: list[str] = []
        pending: list[asyncio.Future] = []
        started = time.perf_counter()
        for tick, row in enumerate(rows):
            delay = started + tick * interval_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            payloads = _payloads(self.series, row)
            ids += [candle_id for _, candle_id, _ in payloads]
            pending += await _send_tick(self.producer, self.topic, payloads, self.sent_at if timed else {})
        await asyncio.gather(*pending)
        return ids


async def _fill_windows(load: _Load, warmup: int, timeout_s: float, progress: Progress) -> None:
    progress(f"[{load.name}] filling {len(load.series)} windows with {warmup} candles each")
    await load.send_ticks(range(warmup - 1), timed=False)
    last = await load.send_ticks(range(warmup - 1, warmup), timed=False)
    await load.watcher.wait_for(last, timeout_s)
    if not all(i in load.watcher.arrived for i in last):
        raise RuntimeError(f"[{load.name}] no output for the warm-up candles within {timeout_s} s")
    load.watcher.processing_ms.clear()


async def _timed_ticks(load: _Load, plan: LoadPlan, first: int, progress: Progress
                       ) -> tuple[list[str], list[float], float]:
    """The settle ticks (untimed), then the timed ones: (their ids, latencies in ms, seconds to send them)."""
    symbols = len(load.series)
    interval = symbols / plan.rate
    settle = int(plan.rate * plan.settle_seconds / symbols)
    ticks = max(1, int(plan.rate * plan.seconds / symbols))
    progress(f"[{load.name}] {settle} untimed ticks, then {ticks} timed ticks of {symbols} candles "
             f"at {plan.rate:g} candles/s")
    await load.send_ticks(range(first, first + settle), timed=False, interval_s=interval)
    started = time.perf_counter()
    timed_ids = await load.send_ticks(range(first + settle, first + settle + ticks), timed=True, interval_s=interval)
    send_seconds = time.perf_counter() - started
    await load.watcher.wait_for(timed_ids, max(30.0, plan.seconds))
    latencies = [(load.watcher.arrived[i] - load.sent_at[i]) * 1000 for i in timed_ids if i in load.watcher.arrived]
    return timed_ids, latencies, send_seconds


async def _burst(load: _Load, plan: LoadPlan, first: int, progress: Progress) -> tuple[float, int]:
    """(maximum throughput per second, burst candles answered)."""
    burst_ticks = max(1, plan.burst_candles // len(load.series))
    progress(f"[{load.name}] burst of {burst_ticks * len(load.series)} candles as fast as possible")
    burst_started = time.perf_counter()
    burst_ids = await load.send_ticks(range(first, first + burst_ticks), timed=True)
    await load.watcher.wait_for(burst_ids, plan.phase_timeout_s)
    # Throughput counts every output after the burst began: a phase that fell behind in the
    # timed part is still draining that backlog, and those outputs are its work too.
    drained = [t for t in load.watcher.arrived.values() if t >= burst_started]
    burst_seconds = (max(drained) if drained else time.perf_counter()) - burst_started
    throughput = round(len(drained) / burst_seconds, 1) if burst_seconds > 0 else 0.0
    return throughput, sum(1 for i in burst_ids if i in load.watcher.arrived)


async def drive(settings: Settings, name: str, output_topic: str, series: Sequence[CandleSeries], plan: LoadPlan,
                warmup: int, progress: Progress, shadow: bool = False,
                cpu_seconds: Callable[[], float] | None = None) -> PhaseResult:
    """One phase's load against a worker already started on ``settings``' topics; see the module docstring.
    ``shadow``: also count what the worker's shadow version publishes. ``cpu_seconds``: the phase process's
    CPU time so far, read before the settle ticks and after the burst."""
    load = _Load(settings, name, output_topic, series)
    shadow_watcher = (_OutputWatcher(kafka_options(settings), TopicNames.of(settings).predictions_shadow,
                                     settings.topics.partitions) if shadow else None)
    await load.watcher.start()
    await load.producer.start()
    if shadow_watcher is not None:
        await shadow_watcher.start()
    try:
        await _fill_windows(load, warmup, plan.phase_timeout_s, progress)
        settle = int(plan.rate * plan.settle_seconds / len(series))
        cpu_before = cpu_seconds() if cpu_seconds is not None else None
        timed_ids, latencies, send_seconds = await _timed_ticks(load, plan, warmup, progress)
        processing = summary(load.watcher.processing_ms)
        throughput, burst_received = await _burst(load, plan, warmup + settle + len(timed_ids) // len(series), progress)
        candles = (settle * len(series) + len(timed_ids) + max(1, plan.burst_candles // len(series)) * len(series))
        cpu_ms = (None if cpu_seconds is None or cpu_before is None
                  else round((cpu_seconds() - cpu_before) * 1000 / candles, 4))
        return PhaseResult(
            phase=name,
            sent=len(timed_ids),
            received=len(latencies),
            missing=len(timed_ids) - len(latencies),
            latency_ms=summary(latencies),
            achieved_rate_per_s=round(len(timed_ids) / send_seconds, 1),
            max_throughput_per_s=throughput,
            burst_received=burst_received,
            processing_ms=processing if name != "relay" else None,
            worker_cpu_ms_per_candle=cpu_ms,
            shadow_outputs=len(shadow_watcher.arrived) if shadow_watcher is not None else None,
        )
    finally:
        await load.producer.stop()
        await load.watcher.stop()
        if shadow_watcher is not None:
            await shadow_watcher.stop()
