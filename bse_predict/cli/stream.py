"""``bse-predict worker``, ``relay``, ``replay``, ``bench`` and ``demo``: the commands that run or feed the
stream."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from bse_predict.cli.shared import (ConfigOption, DataOption, comma_separated, command_settings, console, errors,
                                    one_line_errors)

__all__ = ["bench", "demo", "relay", "replay", "worker"]


@one_line_errors
def worker(
    config: ConfigOption = None,
    version: Annotated[str | None, typer.Option("--version", help="Serve this version (default: newest).")] = None,
    engine: Annotated[str, typer.Option("--engine", help="onnx (production) or native (scikit-learn reference).")] = "onnx",
    loglevel: Annotated[str, typer.Option("--loglevel", help="crit, error, warn, info or debug.")] = "info",
    ensemble_mode: Annotated[str | None, typer.Option(
        "--ensemble-mode", help="graph or members: how an ensemble is served (default: worker.ensemble.mode).")] = None,
) -> None:
    """The streaming worker (a Faust app); run several for one consumer group."""
    from bse_predict.stream.run import run_worker

    if engine not in ("onnx", "native"):
        raise ValueError(f"--engine must be onnx or native, got {engine!r}")
    settings = command_settings(config)
    if ensemble_mode is not None:
        serving = settings.worker.ensemble.model_validate({**settings.worker.ensemble.model_dump(), "mode": ensemble_mode})
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"ensemble": serving})})
    run_worker(settings, version, engine, loglevel)  # type: ignore[arg-type]


@one_line_errors
def relay(
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="crit, error, warn, info or debug.")] = "warn",
) -> None:
    """The benchmark's floor: forward every candle to the relay.out topic, nothing else."""
    from bse_predict.stream.run import run_relay

    run_relay(command_settings(config), loglevel)


@one_line_errors
def replay(
    data: DataOption,
    config: ConfigOption = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Closed candles per second (default: as fast as possible).")] = None,
    updates: Annotated[int, typer.Option("--updates", help="In-progress updates sent before each closed candle.")] = 0,
    last_hours: Annotated[int | None, typer.Option("--last-hours", help="Only the newest N candles of each file.")] = None,
) -> None:
    """Produce candles from files to the candles topic."""
    from rich.progress import Progress

    from bse_predict.candles.files import read_candle_files
    from bse_predict.connections.clients import explained_kafka_errors
    from bse_predict.stream.replay import candle_records, replay as run_replay

    settings = command_settings(config)
    if updates < 0 or (rate is not None and rate <= 0):
        raise ValueError("--updates must be >= 0 and --rate > 0")
    series = read_candle_files(data, settings.market.timeframe)
    if last_hours:
        series = [s.tail(last_hours) for s in series]
    records = list(candle_records(series, updates))
    with explained_kafka_errors(settings), Progress(console=errors) as progress:
        task = progress.add_task("replaying candles", total=len(records))
        report = asyncio.run(run_replay(settings, records, rate, on_sent=lambda *_: progress.advance(task)))
    console.print(f"sent {report.closed} closed candles and {report.updates} updates in {report.seconds:.1f} s")


DEFAULT_DATA = (Path("../shared/data/candles/binance-futures"), Path("../shared/data/candles/binance-spot"))


@one_line_errors
def bench(
    config: ConfigOption = None,
    symbols: Annotated[int, typer.Option("--symbols", help="Distinct symbols in the stream.")] = 100,
    rate: Annotated[float, typer.Option("--rate", help="Closed candles per second, sent in ticks of one per symbol.")] = 1000.0,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of the timed phase.")] = 30.0,
    burst: Annotated[int, typer.Option("--burst", help="Candles sent at once to measure maximum throughput.")] = 20000,
    phases: Annotated[str | None, typer.Option("--phases", help="Comma-separated: relay, onnx, native, ensemble, ensemble_members (default: relay,onnx, the worker as shipped; with --ensemble-version also ensemble_members).")] = None,
    data: Annotated[list[Path] | None, typer.Option("--data", help="Candle files or directories.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Model version (default: newest).")] = None,
    ensemble_version: Annotated[str | None, typer.Option("--ensemble-version", help="A version serving an ensemble, for the ensemble phase.")] = None,
    shadow_version: Annotated[str | None, typer.Option("--shadow-version", help="Every worker phase also serves this version in shadow (set by a signed control message).")] = None,
    compare_with: Annotated[Path | None, typer.Option("--compare-with", help="A checkout of another commit with its own .venv: each worker phase runs again with its worker, as PHASE@before.")] = None,
) -> None:
    """End-to-end benchmark of the worker as shipped on the real stack against a bare relay; prints one JSON object."""
    import json
    from datetime import UTC, datetime

    from bse_predict.stream.bench import BenchOptions, run_bench

    phases = phases or ("relay,onnx,ensemble_members" if ensemble_version else "relay,onnx")
    chosen = comma_separated(phases)
    unknown = set(chosen) - {"relay", "onnx", "native", "ensemble", "ensemble_members"}
    if unknown or symbols < 1 or rate <= 0 or seconds <= 0:
        raise ValueError(f"bad bench options: phases {sorted(unknown) or chosen}, symbols {symbols}, rate {rate}, seconds {seconds}")
    if compare_with is not None and not (compare_with / ".venv" / "bin" / "python").is_file():
        raise ValueError(f"--compare-with {compare_with}: no .venv/bin/python there (run `make setup` in that checkout)")
    options = BenchOptions(symbols=symbols, rate=rate, seconds=seconds, burst_candles=burst,
                           data=tuple(data or DEFAULT_DATA), version=version, ensemble_version=ensemble_version,
                           shadow_version=shadow_version, compare_with=compare_with, phases=chosen, config_file=config)
    log_dir = Path("var") / "bench" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    _quiet_kafka_retries()
    report = run_bench(command_settings(config), options, log_dir, progress=lambda m: errors.print(m, markup=False))
    print(json.dumps(report, indent=2))


def _quiet_kafka_retries() -> None:
    """The command shows its own progress; its Kafka clients' retries while fresh topics elect their leaders
    ("Failed fetch offsets ... NotLeaderForPartitionError") are not for the screen. A real failure still ends
    the command with its own message, and the workers' logs keep every line."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@one_line_errors
def demo(
    config: ConfigOption = None,
    rate: Annotated[float, typer.Option("--rate", help="Closed candles per second in the replay.")] = 20.0,
    live: Annotated[bool, typer.Option(
        "--live", help="Candles from an exchange instead of a file: the exchange simulator, bse-predict ingest, a "
                       "worker (`make demo-live`; runs from the repository).")] = False,
    hour_seconds: Annotated[float, typer.Option(
        "--hour-seconds", help="--live: real seconds per exchange hour.", min=0.2)] = 2.0,
    predictions: Annotated[int, typer.Option(
        "--predictions", help="--live: stop after this many predictions (Ctrl-C stops sooner).", min=1)] = 30,
) -> None:
    """The all-in-one first run behind `make demo`: services, a small model, a worker, a replay, predictions."""
    from bse_predict.cli.demo import run_demo, run_live_demo

    _quiet_kafka_retries()
    settings = command_settings(config, families=True)

    def progress(message: str) -> None:
        errors.print(message, markup=False)

    shown = (run_live_demo(settings, hour_seconds, predictions, progress) if live
             else run_demo(settings, rate, progress=progress))
    if shown == 0:
        raise typer.Exit(1)
