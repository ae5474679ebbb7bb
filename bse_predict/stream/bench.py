"""``bse-predict bench``: the real stack, measured against its floor and the plain approach.

The phases run one after the other in one invocation, each on fresh topics
and with its own subprocess, fed the same candles the same way
(:mod:`bse_predict.stream.bench_load`); what a phase left in Kafka (its topics)
and Redis (its keys) is deleted when it ends:

- ``relay``: a Faust agent that forwards every candle (the floor: Kafka + Faust);
- ``onnx``: the worker as deployed;
- ``native``: the same worker with scikit-learn ``predict_proba`` instead of ONNX;
- ``ensemble``: the worker serving ``ensemble_version`` (an ensemble graph per target);
- ``ensemble_members``: the same version served member by member
  (``--ensemble-mode members``: each member's own file, side by side).

By default only ``relay`` and ``onnx`` run (and ``ensemble_members`` with an
``ensemble_version``): the worker as shipped. Every worker runs the settings a
user gets (``configs/default.yaml``: outcome settling, live scores, drift and the
challenger test on, an ensemble served member by member) unless ``--config``
layers others over them; the report's ``worker_settings`` says which ran.

With ``shadow_version`` every worker phase also serves that version in shadow,
set through a signed ``shadow`` control message before the windows fill (as
an operator would; a secret is made for the run when none is configured).
With ``compare_with`` (a checkout of another commit with its own ``.venv``),
every worker phase runs a second time right after, with that checkout's
worker, as ``<phase>@before``: before and after in the same run, on the same
machine, with the same candles.

Beside the phases, inference alone is timed in this process on the same
windows (:mod:`bse_predict.stream.bench_inference`).
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, SecretStr

from configs.settings import Settings
from bse_predict.connections.clients import client_environment, connect_redis
from bse_predict.connections.topics import TopicNames, delete_topics_under, ensure_topics
from bse_predict.control.messages import build_message
from bse_predict.control.sender import send_control_and_wait
from bse_predict.serving.manifest import load_manifest, newest_version
from bse_predict.stream.bench_inference import forest_ms, inference_per_tick
from bse_predict.stream.bench_load import PhaseResult, Progress, bench_symbols, drive
from bse_predict.stream.relay import RELAY_OUTPUT

__all__ = ["BenchOptions", "run_bench", "BEFORE_SUFFIX"]

BEFORE_SUFFIX = "@before"
_SHADOW_WAIT_S = 120.0  # the worker loads, verifies and warms the shadow version before it answers


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
    shadow_version: str | None = None
    compare_with: Path | None = None
    phases: tuple[str, ...] = ("relay", "onnx")
    phase_timeout_s: float = 120.0
    config_file: Path | None = None


@dataclass
class _Phase:
    name: str
    command: list[str]
    output_topic: str
    checkout: Path | None = None
    """Run the worker of this checkout (its ``.venv``), not this process's."""

    @property
    def is_worker(self) -> bool:
        return self.command[0] == "worker"


def _spawn(phase: _Phase, settings: Settings, log_path: Path, config_file: Path | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **client_environment(settings),
           "BSE_TOPIC_PREFIX": settings.topic_prefix, "BSE_MODELS_DIR": str(settings.models_dir.resolve())}
    if settings.control_secret is not None:
        env["BSE_CONTROL_SECRET"] = settings.control_secret.get_secret_value()
    python = str(phase.checkout / ".venv" / "bin" / "python") if phase.checkout else sys.executable
    log = log_path.open("wb")
    config = ["--config", str(config_file.resolve())] if config_file else []
    return subprocess.Popen([python, "-m", "bse_predict.cli", *phase.command, *config], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=phase.checkout)


def _cpu_seconds(pid: int) -> Callable[[], float]:
    """The process's CPU time so far (user + system, every thread), read each call."""
    process = psutil.Process(pid)

    def read() -> float:
        times = process.cpu_times()
        return times.user + times.system

    return read


def _phases(settings: Settings, version: str, ensemble_version: str | None = None) -> dict[str, _Phase]:
    predictions = TopicNames.of(settings).predictions
    ensemble = ensemble_version or version
    return {
        "ensemble": _Phase("ensemble", ["worker", "--version", ensemble, "--loglevel", "info", "--ensemble-mode", "graph"],
                           predictions),
        "ensemble_members": _Phase("ensemble_members", ["worker", "--version", ensemble, "--loglevel", "info",
                                                        "--ensemble-mode", "members"], predictions),
        "relay": _Phase("relay", ["relay"], settings.topic(RELAY_OUTPUT)),
        "onnx": _Phase("onnx", ["worker", "--version", version, "--loglevel", "info"], predictions),
        "native": _Phase("native", ["worker", "--version", version, "--engine", "native", "--loglevel", "info"],
                         predictions),
    }


async def _set_shadow(settings: Settings, shadow_version: str) -> None:
    """Send the signed ``shadow`` message and wait until the phase's worker applied it."""
    assert settings.control_secret is not None
    fields = build_message("shadow", {"version": shadow_version}, settings.control_secret.get_secret_value(),
                           datetime.now(UTC), "bench", key_id=settings.control_key_id)
    answer = await send_control_and_wait(settings, fields, _SHADOW_WAIT_S)
    if answer is None or answer.status != "applied":
        raise RuntimeError(f"the worker did not apply shadow {shadow_version}: "
                           f"{'no answer' if answer is None else answer.reason}")


def _run_phase(phase: _Phase, settings: Settings, options: BenchOptions, series: list, warmup: int, log_dir: Path,
               progress: Progress) -> PhaseResult:
    asyncio.run(ensure_topics(settings, extra=(settings.topic(RELAY_OUTPUT),)))
    process = _spawn(phase, settings, log_dir / f"{phase.name}.log", options.config_file)
    try:
        if options.shadow_version and phase.is_worker:  # before the windows fill: the shadow warms up with them
            progress(f"[{phase.name}] shadow {options.shadow_version} by a signed control message")
            asyncio.run(_set_shadow(settings, options.shadow_version))
        shadow = bool(options.shadow_version) and phase.is_worker
        result = asyncio.run(drive(settings, phase.name, phase.output_topic, series, options, warmup, progress, shadow,
                                   _cpu_seconds(process.pid)))
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        asyncio.run(_forget_keys(settings))
        # left behind, every run added a dozen topics for good (1,277 on the local broker after a day of runs)
        asyncio.run(delete_topics_under(settings, settings.topic_prefix))
    return result.model_copy(update={"process_exit_code": process.returncode})


def _phase_plan(settings: Settings, options: BenchOptions, version: str, run_id: str) -> list[tuple[_Phase, Settings]]:
    plan = []
    for name in options.phases:
        checkouts: list[Path | None] = [None]
        if options.compare_with is not None and name != "relay":
            checkouts.append(options.compare_with.resolve())
        for checkout in checkouts:
            label = name if checkout is None else f"{name}{BEFORE_SUFFIX}"
            phase_settings = settings.model_copy(update={
                "topic_prefix": f"{settings.topic_prefix}bench-{run_id}-{label.replace('@', '-')}."})
            phase = _phases(phase_settings, version, options.ensemble_version)[name]
            plan.append((_Phase(label, phase.command, phase.output_topic, checkout), phase_settings))
    return plan


def run_bench(settings: Settings, options: BenchOptions, log_dir: Path, progress: Progress) -> dict[str, object]:
    """Run every phase and return the report (one JSON-able dict)."""
    version = options.version or newest_version(settings.models_dir)
    if {"ensemble", "ensemble_members"} & set(options.phases) and not options.ensemble_version:
        raise ValueError("the ensemble phases need --ensemble-version")
    if options.shadow_version and settings.control_secret is None:
        settings = settings.model_copy(update={"control_secret": SecretStr(secrets.token_hex(32))})
    versions = {v for v in (version, options.ensemble_version, options.shadow_version) if v}
    warmup = max(load_manifest(settings.models_dir / v).min_history for v in versions)
    ticks = max(1, int(options.rate * options.seconds / options.symbols))
    settle = int(options.rate * options.settle_seconds / options.symbols)
    series = bench_symbols(options.data, options.symbols, warmup + settle + ticks + max(1, options.burst_candles // options.symbols))
    log_dir.mkdir(parents=True, exist_ok=True)
    results = {phase.name: _run_phase(phase, phase_settings, options, series, warmup, log_dir, progress)
               for phase, phase_settings in _phase_plan(settings, options, version, uuid.uuid4().hex[:8])}
    progress("timing inference alone on one tick of every symbol")
    inference = inference_per_tick(settings, version, options.ensemble_version, series, warmup)
    return {**_report(options, version, results, inference), "worker_settings": _worker_settings(settings, versions)}


def _worker_settings(settings: Settings, versions: set[str]) -> dict[str, object]:
    """What the phases' workers ran with (the shipped defaults unless ``--config`` changed them)."""
    return {
        "served_model": {v: load_manifest(settings.models_dir / v).served_model for v in sorted(versions)},
        "ensemble_mode": settings.worker.ensemble.mode,
        "outcomes": settings.outcomes.enabled,
        "live_scores_flush_s": settings.live_metrics.flush_s,
        "drift": settings.drift.enabled,
        "challenger": settings.challenger.enabled,
    }


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


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _report(options: BenchOptions, version: str, results: dict[str, PhaseResult],
            inference: dict[str, float]) -> dict[str, object]:
    p99 = {n: r.latency_ms.p99 if r.latency_ms else None for n, r in results.items()}
    p50 = {n: r.latency_ms.p50 if r.latency_ms else None for n, r in results.items()}
    throughput = {n: r.max_throughput_per_s for n, r in results.items()}
    ratios = {
        "p99_onnx_over_relay": _ratio(p99.get("onnx"), p99.get("relay")),
        "p99_native_over_relay": _ratio(p99.get("native"), p99.get("relay")),
        "max_throughput_onnx_over_relay": _ratio(throughput.get("onnx"), throughput.get("relay")),
        "max_throughput_onnx_over_native": _ratio(throughput.get("onnx"), throughput.get("native")),
        "p99_ensemble_over_relay": _ratio(p99.get("ensemble"), p99.get("relay")),
        "p99_ensemble_members_over_relay": _ratio(p99.get("ensemble_members"), p99.get("relay")),
        "inference_ensemble_over_onnx": _ratio(inference.get("ensemble"), inference.get("onnx")),
        "inference_ensemble_members_over_onnx": _ratio(inference.get("ensemble_members"), inference.get("onnx")),
        "inference_ensemble_over_random_forest": _ratio(inference.get("ensemble"), forest_ms(inference)),
        "inference_ensemble_members_over_random_forest": _ratio(inference.get("ensemble_members"), forest_ms(inference)),
    }
    for name in [n for n in results if f"{n}{BEFORE_SUFFIX}" in results]:
        before = f"{name}{BEFORE_SUFFIX}"
        ratios[f"p50_{name}_after_over_before"] = _ratio(p50[name], p50[before])
        ratios[f"p99_{name}_after_over_before"] = _ratio(p99[name], p99[before])
        ratios[f"max_throughput_{name}_after_over_before"] = _ratio(throughput[name], throughput[before])
        ratios[f"processing_p50_{name}_after_over_before"] = _ratio(
            *(r.processing_ms.p50 if r.processing_ms else None for r in (results[name], results[before])))
        ratios[f"worker_cpu_per_candle_{name}_after_over_before"] = _ratio(
            results[name].worker_cpu_ms_per_candle, results[before].worker_cpu_ms_per_candle)
    return {
        "symbols": options.symbols,
        "rate_per_s": options.rate,
        "seconds": options.seconds,
        "settle_seconds": options.settle_seconds,
        "version": version,
        "shadow_version": options.shadow_version,
        "compare_with": str(options.compare_with) if options.compare_with else None,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "phases": {name: r.model_dump() for name, r in results.items()},
        "ratios": ratios,
        "inference_per_tick_ms": inference,
        "errors": {name: r.missing + (0 if r.process_exit_code in (0, -15, None) else 1) for name, r in results.items()},
    }
