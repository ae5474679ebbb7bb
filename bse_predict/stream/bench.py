"""``bse-predict bench``: the real stack, measured against its floor and the plain approach.

The phases run one after the other in one invocation, each on fresh topics
and with its own subprocess, fed the same candles the same way:

- ``relay``: a Faust agent that forwards every candle (the floor: Kafka + Faust);
- ``onnx``: the worker as deployed;
- ``native``: the same worker with scikit-learn ``predict_proba`` instead of ONNX;
- ``ensemble``: the worker serving ``ensemble_version`` (an ensemble graph per target);
- ``ensemble_members``: the same version served member by member
  (``--ensemble-mode members``: each member's own file, side by side).

Beside the phases, inference alone is timed in this process on the same
windows (one tick of every symbol, median of repeats): each phase's served
model set and, for an ensemble version, also member by member.

Each phase fills the windows (``min_history`` candles per symbol, not timed),
sends ``settle_seconds`` of ticks untimed (the first full batches pay one-off
costs: allocations, caches), then sends ticks of one closed candle per symbol
at ``rate`` candles per second for ``seconds`` and records candle-sent to
output-consumed latency, then sends a burst as fast as possible to measure
the maximum throughput.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pydantic import BaseModel, ConfigDict

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.serving.manifest import load_manifest, newest_version
from bse_predict.connections.clients import client_environment, connect_redis, kafka_options
from bse_predict.stream.relay import RELAY_OUTPUT
from bse_predict.stream.replay import candle_payload
from bse_predict.connections.topics import TopicNames, ensure_topics

__all__ = ["BenchOptions", "run_bench"]

Progress = Callable[[str], None]


class BenchOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbols: int = 100
    rate: float = 1000.0
    seconds: float = 30.0
    burst_candles: int = 20_000
    settle_seconds: float = 3.0
    data: tuple[Path, ...] = ()
    version: str | None = None
    ensemble_version: str | None = None
    phases: tuple[str, ...] = ("relay", "onnx", "native")
    phase_timeout_s: float = 120.0
    config_file: Path | None = None


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
    process_exit_code: int | None = None


@dataclass
class _Phase:
    name: str
    command: list[str]
    output_topic: str


def _summary(values: Sequence[float]) -> LatencySummary | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return LatencySummary(p50=round(float(np.percentile(array, 50)), 3), p99=round(float(np.percentile(array, 99)), 3),
                          max=round(float(array.max()), 3), mean=round(float(array.mean()), 3))


def bench_symbols(data: Sequence[Path], count: int, rows: int) -> list[CandleSeries]:
    """``count`` distinct symbols of ``rows`` candles each. Beyond the real series, extra symbols
    reuse a real series' earlier stretch under a new name (BTC1USDT, ...), so no two symbols replay
    the same candles."""
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
    return chosen


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


async def _drive(settings: Settings, phase: _Phase, series: Sequence[CandleSeries], options: BenchOptions,
                 warmup: int, progress: Progress) -> PhaseResult:
    topic = TopicNames.of(settings).candles
    watcher = _OutputWatcher(kafka_options(settings), phase.output_topic, settings.topics.partitions)
    await watcher.start()
    producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=0)
    await producer.start()
    sent_at: dict[str, float] = {}
    try:
        progress(f"[{phase.name}] filling {len(series)} windows with {warmup} candles each")
        pending: list[asyncio.Future] = []
        for index in range(warmup):
            pending += await _send_tick(producer, topic, _payloads(series, index), {})
        await asyncio.gather(*pending)
        last_warmup = [candle_id for _, candle_id, _ in _payloads(series, warmup - 1)]
        await watcher.wait_for(last_warmup, options.phase_timeout_s)
        if not all(i in watcher.arrived for i in last_warmup):
            raise RuntimeError(f"[{phase.name}] no output for the warm-up candles within {options.phase_timeout_s} s")
        watcher.processing_ms.clear()

        interval = len(series) / options.rate
        settle = int(options.rate * options.settle_seconds / len(series))
        ticks = max(1, int(options.rate * options.seconds / len(series)))
        progress(f"[{phase.name}] {settle} untimed ticks, then {ticks} timed ticks of {len(series)} candles "
                 f"at {options.rate:g} candles/s")
        timed_ids: list[str] = []
        pending = []
        for timed, count, first in ((False, settle, warmup), (True, ticks, warmup + settle)):
            started = time.perf_counter()
            for tick in range(count):
                delay = started + tick * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                payloads = _payloads(series, first + tick)
                if timed:
                    timed_ids += [candle_id for _, candle_id, _ in payloads]
                pending += await _send_tick(producer, topic, payloads, sent_at if timed else {})
        await asyncio.gather(*pending)
        send_seconds = time.perf_counter() - started
        await watcher.wait_for(timed_ids, max(30.0, options.seconds))
        latencies = [(watcher.arrived[i] - sent_at[i]) * 1000 for i in timed_ids if i in watcher.arrived]
        processing = _summary(watcher.processing_ms)

        burst_ticks = max(1, options.burst_candles // len(series))
        progress(f"[{phase.name}] burst of {burst_ticks * len(series)} candles as fast as possible")
        burst_ids: list[str] = []
        burst_started = time.perf_counter()
        pending = []
        for tick in range(burst_ticks):
            payloads = _payloads(series, warmup + settle + ticks + tick)
            burst_ids += [candle_id for _, candle_id, _ in payloads]
            pending += await _send_tick(producer, topic, payloads, sent_at)
        await asyncio.gather(*pending)
        await watcher.wait_for(burst_ids, options.phase_timeout_s)
        # Throughput counts every output after the burst began: a phase that fell behind in the
        # timed part is still draining that backlog, and those outputs are its work too.
        drained = [t for t in watcher.arrived.values() if t >= burst_started]
        burst_received = [watcher.arrived[i] for i in burst_ids if i in watcher.arrived]
        burst_seconds = (max(drained) if drained else time.perf_counter()) - burst_started
        return PhaseResult(
            phase=phase.name,
            sent=len(timed_ids),
            received=len(latencies),
            missing=len(timed_ids) - len(latencies),
            latency_ms=_summary(latencies),
            achieved_rate_per_s=round(len(timed_ids) / send_seconds, 1),
            max_throughput_per_s=round(len(drained) / burst_seconds, 1) if burst_seconds > 0 else 0.0,
            burst_received=len(burst_received),
            processing_ms=processing if phase.name != "relay" else None,
        )
    finally:
        await producer.stop()
        await watcher.stop()


def _spawn(phase: _Phase, settings: Settings, log_path: Path, config_file: Path | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **client_environment(settings),
           "BSE_TOPIC_PREFIX": settings.topic_prefix, "BSE_MODELS_DIR": str(settings.models_dir)}
    log = log_path.open("wb")
    config = ["--config", str(config_file)] if config_file else []
    return subprocess.Popen([sys.executable, "-m", "bse_predict.cli", *phase.command, *config], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _phases(settings: Settings, version: str, ensemble_version: str | None = None) -> dict[str, _Phase]:
    predictions = TopicNames.of(settings).predictions
    return {
        "ensemble": _Phase("ensemble", ["worker", "--version", ensemble_version or version, "--loglevel", "info",
                                        "--ensemble-mode", "graph"], predictions),
        "ensemble_members": _Phase("ensemble_members", ["worker", "--version", ensemble_version or version,
                                                        "--loglevel", "info", "--ensemble-mode", "members"],
                                   predictions),
        "relay": _Phase("relay", ["relay"], settings.topic(RELAY_OUTPUT)),
        "onnx": _Phase("onnx", ["worker", "--version", version, "--loglevel", "info"], predictions),
        "native": _Phase("native", ["worker", "--version", version, "--engine", "native", "--loglevel", "info"],
                         predictions),
    }


def run_bench(settings: Settings, options: BenchOptions, log_dir: Path, progress: Progress) -> dict[str, object]:
    """Run every phase and return the report (one JSON-able dict)."""
    version = options.version or newest_version(settings.models_dir)
    if {"ensemble", "ensemble_members"} & set(options.phases) and not options.ensemble_version:
        raise ValueError("the ensemble phases need --ensemble-version")
    versions = {version, *([options.ensemble_version] if options.ensemble_version else [])}
    warmup = max(load_manifest(settings.models_dir / v).min_history for v in versions)
    ticks = max(1, int(options.rate * options.seconds / options.symbols))
    settle = int(options.rate * options.settle_seconds / options.symbols)
    rows = warmup + settle + ticks + max(1, options.burst_candles // options.symbols)
    series = bench_symbols(options.data, options.symbols, rows)
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, PhaseResult] = {}
    run_id = uuid.uuid4().hex[:8]
    for name in options.phases:
        phase_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}bench-{run_id}-{name}."})
        phase = _phases(phase_settings, version, options.ensemble_version)[name]
        asyncio.run(ensure_topics(phase_settings, extra=(phase_settings.topic(RELAY_OUTPUT),)))
        process = _spawn(phase, phase_settings, log_dir / f"{name}.log", options.config_file)
        try:
            results[name] = asyncio.run(_drive(phase_settings, phase, series, options, warmup, progress))
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            asyncio.run(_forget_keys(phase_settings))
        results[name] = results[name].model_copy(update={"process_exit_code": process.returncode})
    progress("timing inference alone on one tick of every symbol")
    inference = inference_per_tick(settings, version, options.ensemble_version, series, warmup)
    report = _report(options, version, results)
    p99 = {n: r.latency_ms.p99 if r.latency_ms else None for n, r in results.items()}
    report["inference_per_tick_ms"] = inference
    report["ratios"].update({  # type: ignore[attr-defined]
        "p99_ensemble_over_relay": _ratio(p99.get("ensemble"), p99.get("relay")),
        "p99_ensemble_members_over_relay": _ratio(p99.get("ensemble_members"), p99.get("relay")),
        "inference_ensemble_over_onnx": _ratio(inference.get("ensemble"), inference.get("onnx")),
        "inference_ensemble_members_over_onnx": _ratio(inference.get("ensemble_members"), inference.get("onnx")),
    })
    return report


async def _forget_keys(settings: Settings) -> None:
    """Delete what a phase's worker left in Redis (windows, pending outcomes, scores of 100 symbols):
    every key under the phase's own prefix. Left behind, they slowed every later key scan."""
    client = connect_redis(settings)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{settings.topic_prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


def median_ms(call: Callable[[], object], repeats: int = 30) -> float:
    """Median milliseconds of ``repeats`` calls after one untimed call."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(times)), 3)


def inference_per_tick(settings: Settings, version: str, ensemble_version: str | None,
                       series: Sequence[CandleSeries], history: int) -> dict[str, float]:
    """Median milliseconds of one tick's inference (every symbol in one batch, windows of the last
    ``history`` candles): the served model set of each version as one graph per target, and an
    ensemble also member by member (:class:`bse_predict.ensembles.member_runner.ServedEnsemble`, on
    ``worker.ensemble.threads`` threads)."""
    from bse_predict.ensembles.member_runner import ServedEnsemble
    from bse_predict.features.inputs import build_inputs
    from bse_predict.serving.onnx_runner import ServedModelSet

    windows = np.stack([s.ohlcv[-history:] for s in series])
    open_times = np.array([int(s.open_time_ms[-1]) for s in series], dtype=np.int64)
    out: dict[str, float] = {}
    for name, v in (("onnx", version), ("ensemble", ensemble_version)):
        if v is None:
            continue
        served = ServedModelSet.load(settings.models_dir / v, signing_key=settings.model_signing_secret)
        inputs = build_inputs(served.input_kinds, windows, open_times)
        out[name] = median_ms(lambda: served.predict_outputs(inputs))
        manifest = load_manifest(settings.models_dir / v, settings.model_signing_secret)
        if name == "ensemble" and all(e.combiner for e in manifest.entries_for(served.model_name).values()):
            members = ServedEnsemble.load(settings.models_dir / v, settings.worker.ensemble,
                                           signing_key=settings.model_signing_secret)
            out["ensemble_members"] = median_ms(lambda: members.predict_outputs(inputs))
            members.close()
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _report(options: BenchOptions, version: str, results: dict[str, PhaseResult]) -> dict[str, object]:
    relay, onnx, native = (results.get(n) for n in ("relay", "onnx", "native"))
    p99 = {n: r.latency_ms.p99 if r and r.latency_ms else None for n, r in results.items()}
    return {
        "symbols": options.symbols,
        "rate_per_s": options.rate,
        "seconds": options.seconds,
        "settle_seconds": options.settle_seconds,
        "version": version,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "phases": {name: r.model_dump() for name, r in results.items()},
        "ratios": {
            "p99_onnx_over_relay": _ratio(p99.get("onnx"), p99.get("relay")),
            "p99_native_over_relay": _ratio(p99.get("native"), p99.get("relay")),
            "max_throughput_onnx_over_relay": _ratio(onnx and onnx.max_throughput_per_s,
                                                     relay and relay.max_throughput_per_s),
            "max_throughput_onnx_over_native": _ratio(onnx and onnx.max_throughput_per_s,
                                                      native and native.max_throughput_per_s),
        },
        "errors": {name: r.missing + (0 if r.process_exit_code in (0, -15, None) else 1) for name, r in results.items()},
    }
