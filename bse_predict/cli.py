"""The ``bse-predict`` command. Heavy modules are imported inside each command,
so ``--help`` is instant and a serving install never imports training code."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from configs.settings import Settings, load_settings
from models.errors import BsePredictError

__all__ = ["main", "app"]

app = typer.Typer(help="Streaming first-touch barrier predictions for crypto candles.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
services_app = typer.Typer(help="Local Kafka (KRaft: one node, or a three-broker cluster) and Redis, without Docker.",
                           no_args_is_help=True)
models_app = typer.Typer(help="The model registry in BSE_MODELS_DIR.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(models_app, name="models")
control_app = typer.Typer(help="Signed control messages to the running workers (docs/operations.md).",
                          no_args_is_help=True)
app.add_typer(control_app, name="control")

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML file layered over configs/default.yaml.")]
DataOption = Annotated[list[Path], typer.Option("--data", help="Candle files or directories (repeatable).")]
TargetsOption = Annotated[str | None, typer.Option("--targets", help="Targets in percent, e.g. 1,2,5.")]
HorizonOption = Annotated[int | None, typer.Option("--horizon-hours", help="Label horizon in hours (default 72).")]

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(command: F) -> F:
    """Expected failures end the command with one line on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from bse_predict.services import ServicesError

        try:
            return command(*args, **kwargs)
        except (BsePredictError, ServicesError, ValueError, OSError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                message = f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
            errors.print(f"error: {message}", markup=False, highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _settings(config: Path | None, targets: str | None = None, horizon_hours: int | None = None) -> Settings:
    market: dict[str, Any] = {}
    if targets:
        try:
            market["targets_pct"] = [float(x) for x in targets.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--targets must be numbers separated by commas, got {targets!r}") from None
    if horizon_hours is not None:
        market["horizon_hours"] = horizon_hours
    return load_settings(config, **({"market": market} if market else {}))


# ---------------------------------------------------------------- services

def _print_report(report: Any) -> None:
    def line(state: Any, indent: str = "") -> None:
        mark = "[green]up[/green]" if state.healthy else ("[yellow]starting[/yellow]" if state.running else "[red]down[/red]")
        pid = "" if state.log_path is None else f"  pid={state.pid or '-'}  log={state.log_path}"
        console.print(f"{indent}{state.name:<6} {mark}  {state.address}{pid}  {state.detail}")

    line(report.kafka)
    if len(report.kafka_brokers) > 1:
        for broker in report.kafka_brokers:
            line(broker, indent="  ")
    line(report.redis)


@services_app.command("up")
@one_line_errors
def services_up_command(
    config: ConfigOption = None,
    brokers: Annotated[int, typer.Option(
        "--brokers", help="1: one Kafka node; 3: a three-broker KRaft cluster (replication 3, min.insync.replicas 2), "
                          "brokers at the bootstrap port, +2 and +4, each controller one port above (docs/services.md).")] = 1,
) -> None:
    """Start Kafka and Redis (idempotent); returns when all answer."""
    from bse_predict.services import services_up

    report = services_up(_settings(config), brokers=brokers, progress=lambda m: errors.print(m, markup=False))
    _print_report(report)
    if len(report.kafka_brokers) > 1:
        errors.print(f"clients of the cluster: BSE_KAFKA_BOOTSTRAP={report.kafka.address}", markup=False)


@services_app.command("down")
@one_line_errors
def services_down_command(config: ConfigOption = None) -> None:
    """Stop the local Kafka (every broker) and Redis started by `services up`."""
    from bse_predict.services import services_down

    _print_report(services_down(_settings(config), progress=lambda m: errors.print(m, markup=False)))


@services_app.command("status")
@one_line_errors
def services_status_command(config: ConfigOption = None) -> None:
    """Report Kafka (each broker of a cluster) and Redis; exit code 1 unless all answer."""
    from bse_predict.services import services_status

    report = services_status(_settings(config))
    _print_report(report)
    if not (report.kafka.healthy and report.redis.healthy):
        raise typer.Exit(1)


# ---------------------------------------------------------------- training

@app.command()
@one_line_errors
def train(
    data: DataOption,
    version: Annotated[str, typer.Option("--version", help="Version name to write, e.g. 2026-11-21a.")],
    config: ConfigOption = None,
    targets: TargetsOption = None,
    horizon_hours: HorizonOption = None,
    max_rows: Annotated[int | None, typer.Option("--max-rows", help="Train on the newest N rows per symbol.")] = None,
) -> None:
    """Train the model set on candle files and write ONNX models and a manifest to BSE_MODELS_DIR/VERSION."""
    from export.train import train_version
    from models.candle_files import read_candle_files

    settings = _settings(config, targets, horizon_hours)
    if max_rows is not None:
        settings = settings.model_copy(update={"training": settings.training.model_copy(
            update={"max_rows_per_symbol": max_rows})})
    _check_version_name(version)
    series = read_candle_files(data, settings.market.timeframe)
    folder = train_version(series, settings, version)
    console.print(f"version {version} written to {folder}")


@app.command()
@one_line_errors
def evaluate(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, report.md and the plots.")],
    config: ConfigOption = None,
    targets: TargetsOption = None,
    horizon_hours: HorizonOption = None,
    families: Annotated[str | None, typer.Option("--families", help="Comma-separated families (default: the enabled ones).")] = None,
    folds: Annotated[int, typer.Option("--folds", help="Expanding walk-forward test blocks.")] = 5,
    max_rows: Annotated[int | None, typer.Option("--max-rows", help="Evaluate on the newest N rows per symbol.")] = None,
    calibrator: Annotated[str | None, typer.Option("--calibrator", help="temperature (default), platt, isotonic or none.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
) -> None:
    """Purged walk-forward evaluation of the families against baselines: metrics.json, report.md and plots in OUT.

    Exits non-zero when a pooled AUC is implausible for hourly data (a leak until proven otherwise)."""
    from export.calibration import CALIBRATORS
    from export.evaluate import evaluate as run_evaluation
    from export.evaluation_schema import EvaluationOptions
    from models.candle_files import read_candle_files

    if calibrator is not None and calibrator not in CALIBRATORS:
        raise ValueError(f"--calibrator must be one of {', '.join(CALIBRATORS)}, got {calibrator!r}")
    settings = _settings(config, targets, horizon_hours)
    chosen = tuple(f.strip() for f in families.split(",") if f.strip()) if families else None
    options = EvaluationOptions(families=chosen, folds=folds, max_rows_per_symbol=max_rows, seed=seed,
                                **({"calibrator": calibrator} if calibrator else {}))
    series = read_candle_files(data, settings.market.timeframe)
    report = run_evaluation(series, settings, out, options)
    for result in report.targets.values():
        for verdict in result.verdicts:
            console.print(f"{result.target}: {verdict}", markup=False, highlight=False)
    console.print(f"evaluation written to {out}: metrics.json, report.md and {len(report.plots)} plots")


@app.command()
@one_line_errors
def backtest(
    data: DataOption,
    version: Annotated[str, typer.Option("--version", help="The model version to replay.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, equity.png and metrics.json.")],
    config: ConfigOption = None,
    targets: TargetsOption = None,
    horizon_hours: HorizonOption = None,
    models: Annotated[str | None, typer.Option("--models", help="Model names of the version, comma-separated, or 'all' (default: its served model).")] = None,
    compare: Annotated[str | None, typer.Option("--compare", help="A second version: its served model side by side, with a paired significance test.")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First traded candle, UTC date (default: after the versions' training data).")] = None,
) -> None:
    """Replay candles through the worker's own path, trade the signals as ±X% brackets with fees; report with equity curve."""
    from datetime import UTC, datetime

    from bse_predict.backtest import BacktestRequest, run_backtest
    from models.candle_files import read_candle_files
    from models.signals import target_label

    settings = _settings(config, targets, horizon_hours)
    start_ms = None
    if start is not None:
        try:
            start_ms = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            raise ValueError(f"--start must be a date like 2025-12-01, got {start!r}") from None
    names = tuple(m.strip() for m in models.split(",") if m.strip()) if models else ()
    request = BacktestRequest(version, names, compare, start_ms,
                              tuple(target_label(p) for p in settings.market.targets_pct))
    series = read_candle_files(data, settings.market.timeframe)
    with errors.status("backtest: replaying") as status:
        report = run_backtest(settings, series, request, out,
                              lambda label, ticks: status.update(f"backtest {label}: {ticks} hours replayed"))
    console.print(f"backtest written to {report.parent}: report.md, equity.png, metrics.json")


def _check_version_name(version: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", version):
        raise ValueError(f"version {version!r} must be 1-64 letters, digits, '.', '_' or '-'")


# ---------------------------------------------------------------- streaming

@app.command()
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
    from workers.run import run_worker

    if engine not in ("onnx", "native"):
        raise ValueError(f"--engine must be onnx or native, got {engine!r}")
    settings = _settings(config)
    if ensemble_mode is not None:
        serving = settings.worker.ensemble.model_validate({**settings.worker.ensemble.model_dump(), "mode": ensemble_mode})
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"ensemble": serving})})
    run_worker(settings, version, engine, loglevel)  # type: ignore[arg-type]


@app.command()
@one_line_errors
def alerts(
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Telegram alerts, follow-ups, digests and daily summaries from the predictions and outcomes topics.

    Needs TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID (several chats: comma-separated); see docs/alerts.md."""
    from workers.alerts.run import run_alerts

    if loglevel.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise ValueError(f"--loglevel must be critical, error, warning, info or debug, got {loglevel!r}")
    run_alerts(_settings(config), loglevel)


@app.command()
@one_line_errors
def relay(
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="crit, error, warn, info or debug.")] = "warn",
) -> None:
    """The benchmark's floor: forward every candle to the relay.out topic, nothing else."""
    from workers.run import run_relay

    run_relay(_settings(config), loglevel)


@app.command()
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

    from models.candle_files import read_candle_files
    from workers.replay import candle_records, replay as run_replay

    settings = _settings(config)
    if updates < 0 or (rate is not None and rate <= 0):
        raise ValueError("--updates must be >= 0 and --rate > 0")
    series = read_candle_files(data, settings.market.timeframe)
    if last_hours:
        series = [s.tail(last_hours) for s in series]
    records = list(candle_records(series, updates))
    with Progress(console=errors) as progress:
        task = progress.add_task("replaying candles", total=len(records))
        report = asyncio.run(run_replay(settings, records, rate, on_sent=lambda *_: progress.advance(task)))
    console.print(f"sent {report.closed} closed candles and {report.updates} updates in {report.seconds:.1f} s")


DEFAULT_DATA = (Path("../shared/data/candles/binance-futures"), Path("../shared/data/candles/binance-spot"))


@app.command()
@one_line_errors
def bench(
    config: ConfigOption = None,
    symbols: Annotated[int, typer.Option("--symbols", help="Distinct symbols in the stream.")] = 100,
    rate: Annotated[float, typer.Option("--rate", help="Closed candles per second, sent in ticks of one per symbol.")] = 1000.0,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of the timed phase.")] = 30.0,
    burst: Annotated[int, typer.Option("--burst", help="Candles sent at once to measure maximum throughput.")] = 20000,
    phases: Annotated[str | None, typer.Option("--phases", help="Comma-separated: relay, onnx, native, ensemble, ensemble_members (default: all but the ensembles; with --ensemble-version all).")] = None,
    data: Annotated[list[Path] | None, typer.Option("--data", help="Candle files or directories.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Model version (default: newest).")] = None,
    ensemble_version: Annotated[str | None, typer.Option("--ensemble-version", help="A version serving an ensemble, for the ensemble phase.")] = None,
) -> None:
    """End-to-end benchmark on the real stack against a bare relay and native predict; prints one JSON object."""
    import json
    from datetime import UTC, datetime

    from workers.bench import BenchOptions, run_bench

    phases = phases or ("relay,onnx,native,ensemble,ensemble_members" if ensemble_version else "relay,onnx,native")
    chosen = tuple(p.strip() for p in phases.split(",") if p.strip())
    unknown = set(chosen) - {"relay", "onnx", "native", "ensemble", "ensemble_members"}
    if unknown or symbols < 1 or rate <= 0 or seconds <= 0:
        raise ValueError(f"bad bench options: phases {sorted(unknown) or chosen}, symbols {symbols}, rate {rate}, seconds {seconds}")
    options = BenchOptions(symbols=symbols, rate=rate, seconds=seconds, burst_candles=burst,
                           data=tuple(data or DEFAULT_DATA), version=version, ensemble_version=ensemble_version,
                           phases=chosen, config_file=config)
    log_dir = Path("var") / "bench" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = run_bench(_settings(config), options, log_dir, progress=lambda m: errors.print(m, markup=False))
    print(json.dumps(report, indent=2))


@app.command()
@one_line_errors
def demo(
    config: ConfigOption = None,
    rate: Annotated[float, typer.Option("--rate", help="Closed candles per second in the replay.")] = 20.0,
) -> None:
    """The all-in-one first run behind `make demo`: services, a small model, a worker, a replay, predictions."""
    from bse_predict.demo import run_demo

    shown = run_demo(_settings(config), rate, progress=lambda m: errors.print(m, markup=False))
    if shown == 0:
        raise typer.Exit(1)


# ---------------------------------------------------------------- registry

@models_app.command("list")
@one_line_errors
def models_list(config: ConfigOption = None) -> None:
    """Every version in BSE_MODELS_DIR, oldest first."""
    from models.manifest import list_versions

    settings = _settings(config)
    versions = list_versions(settings.models_dir)
    if not versions:
        console.print(f"no versions in {settings.models_dir}")
    for m in versions:
        console.print(f"{m.version:<24} {m.created_at:%Y-%m-%d %H:%M}  {m.served_model:<16} targets {','.join(f'{t:g}%' for t in m.targets_pct)}")


@models_app.command("show")
@one_line_errors
def models_show(version: str, config: ConfigOption = None) -> None:
    """The manifest of one version."""
    from models.manifest import load_manifest

    from export.changelog import changelog_lines

    settings = _settings(config)
    manifest = load_manifest(settings.models_dir / version)
    console.print_json(manifest.model_dump_json(exclude={"changelog"}))
    for line in changelog_lines(manifest.changelog):
        console.print(line, markup=False, highlight=False)


@models_app.command("migrate")
@one_line_errors
def models_migrate(
    path: Annotated[Path, typer.Argument(help="A folder of legacy rf_{SYMBOL}_{pct:.3f}_model.pkl files, or one file.")],
    version: Annotated[str | None, typer.Option("--version", help="The new version's name (default legacy-<time>).")] = None,
    serve: Annotated[str | None, typer.Option("--serve", help="The symbol whose models serve every symbol "
                                                             "(default BTCUSDT when present).")] = None,
    config: ConfigOption = None,
) -> None:
    """Convert the previous system's pickled forests into a registry version (ONNX, verified, originals kept)."""
    from export.migrate import migrate_legacy

    settings = _settings(config)
    done = migrate_legacy(path, settings, version, serve, progress=lambda m: errors.print(m, markup=False))
    console.print(f"migrated {path} to {done}", markup=False, highlight=False)


# ---------------------------------------------------------------- control

IssuedByOption = Annotated[str, typer.Option("--issued-by", help="Who sends it (recorded on control.events).")]


def _send_control(config: Path | None, command: str, args: dict[str, Any], issued_by: str) -> None:
    """Build, sign with BSE_CONTROL_SECRET and send one control message; print its id."""
    from datetime import UTC, datetime

    from models.control_message import build_message
    from workers.control import send_control

    settings = _settings(config)
    if settings.control_secret is None or not settings.control_secret.get_secret_value():
        raise ValueError("BSE_CONTROL_SECRET is not set: control messages cannot be signed")
    fields = build_message(command, args, settings.control_secret.get_secret_value(), datetime.now(UTC), issued_by)
    asyncio.run(send_control(settings, fields))
    console.print(f"sent {command} {fields['args']} id={fields['id']} to {settings.topic('control')}; "
                  f"the outcome appears on {settings.topic('control.events')}", markup=False, highlight=False)


def _version_or_off(value: str) -> str | None:
    return None if value.lower() == "off" else value


@control_app.command("promote")
@one_line_errors
def control_promote(version: str, config: ConfigOption = None, issued_by: IssuedByOption = "ops") -> None:
    """Make VERSION live for every symbol, after a load, hash check and warm-up on current windows."""
    _send_control(config, "promote", {"version": version}, issued_by)


@control_app.command("rollback")
@one_line_errors
def control_rollback(config: ConfigOption = None, issued_by: IssuedByOption = "ops") -> None:
    """Make the previous live version live again, at once."""
    _send_control(config, "rollback", {}, issued_by)


@control_app.command("ab")
@one_line_errors
def control_ab(
    variants: Annotated[list[str], typer.Argument(help="VERSION=WEIGHT pairs, e.g. v1=0.9 v2=0.1.")],
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
) -> None:
    """Split symbols between versions by weight (sticky by symbol); ``variant`` in predictions names the arm."""
    weights: dict[str, float] = {}
    for pair in variants:
        name, sep, weight = pair.partition("=")
        try:
            weights[name] = float(weight)
        except ValueError:
            raise ValueError(f"expected VERSION=WEIGHT, got {pair!r}") from None
        if not sep or not name:
            raise ValueError(f"expected VERSION=WEIGHT, got {pair!r}")
    _send_control(config, "ab", {"variants": weights}, issued_by)


@control_app.command("shadow")
@one_line_errors
def control_shadow(
    version: Annotated[str, typer.Argument(help="A version, or off.")],
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
) -> None:
    """Run VERSION on every candle and publish it to predictions.shadow only; ``off`` stops it."""
    _send_control(config, "shadow", {"version": _version_or_off(version)}, issued_by)


@control_app.command("fallback")
@one_line_errors
def control_fallback(
    version: Annotated[str, typer.Argument(help="A version, or off.")],
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
) -> None:
    """The version that answers (degraded: true) while a served model's circuit breaker is open."""
    _send_control(config, "fallback", {"version": _version_or_off(version)}, issued_by)


@control_app.command("ramp")
@one_line_errors
def control_ramp(
    version: str,
    shares: Annotated[str, typer.Option("--shares", help="Rising shares ending at 1; 0 = shadow only.")] = "0,0.05,0.25,0.5,1",
    every_s: Annotated[float | None, typer.Option("--every-s", help="Seconds per step; omit to advance on gates only.")] = None,
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
) -> None:
    """Warm VERSION up: shadow, then growing shares of symbols, then live; stops at the first failed gate."""
    try:
        steps = [float(x) for x in shares.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--shares must be numbers separated by commas, got {shares!r}") from None
    _send_control(config, "ramp", {"version": version, "shares": steps, "every_s": every_s}, issued_by)


@control_app.command("gate")
@one_line_errors
def control_gate(
    version: str,
    passed: Annotated[bool, typer.Option("--pass/--fail", help="The gate's verdict on the ramping VERSION.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for control.events.")] = "",
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
) -> None:
    """A gate's verdict on a ramping version: --pass moves it to the next share, --fail stops the ramp."""
    _send_control(config, "gate", {"version": version, "passed": passed, "reason": reason}, issued_by)


def main() -> None:
    app(prog_name="bse-predict")


if __name__ == "__main__":
    sys.exit(main())
