"""The ``bse-predict`` command. Heavy modules are imported inside each command,
so ``--help`` is instant and a serving install never imports training code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from configs.settings import Settings, load_settings
from bse_predict.errors import BsePredictError

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
    """Expected failures (bad input, a Kafka or Redis that is down or refuses us) end the command with one
    line on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from aiokafka.errors import KafkaError
        from redis.exceptions import RedisError

        from bse_predict.services.stack import ServicesError

        try:
            return command(*args, **kwargs)
        except (BsePredictError, ServicesError, ValueError, OSError, KafkaError, RedisError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                message = f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
            errors.print(f"error: {message}", markup=False, highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _settings(config: Path | None, targets: str | None = None, horizon_hours: int | None = None,
              families: bool = False) -> Settings:
    """The settings of a command; ``families``: the command builds model families (train, evaluate, demo),
    so their parameters are checked against the families' constructors now, before any work."""
    market: dict[str, Any] = {}
    if targets:
        try:
            market["targets_pct"] = [float(x) for x in targets.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--targets must be numbers separated by commas, got {targets!r}") from None
    if horizon_hours is not None:
        market["horizon_hours"] = horizon_hours
    settings = load_settings(config, **({"market": market} if market else {}))
    if families:  # the train extra: scikit-learn and the families, never loaded by a serving command
        from bse_predict.families.base import check_family_params

        check_family_params(settings)
    return settings


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


SecureOption = Annotated[bool, typer.Option(
    "--secure", help="The secure stack instead, beside the plain one: Kafka SASL_SSL (SCRAM-SHA-512) on 9098, "
                     "Redis TLS with an ACL user on 6380, in var/services/secure (docs/services.md).")]


@services_app.command("up")
@one_line_errors
def services_up_command(
    config: ConfigOption = None,
    brokers: Annotated[int, typer.Option(
        "--brokers", help="1: one Kafka node; 3: a three-broker KRaft cluster (replication 3, min.insync.replicas 2), "
                          "brokers at the bootstrap port, +2 and +4, each controller one port above (docs/services.md).")] = 1,
    secure: SecureOption = False,
) -> None:
    """Start Kafka and Redis (idempotent); returns when all answer. With --secure, prints the client's settings."""
    progress = lambda m: errors.print(m, markup=False)  # noqa: E731
    if secure:
        from bse_predict.services.local_secure import secure_environment, secure_stack, secure_up

        if brokers != 1:
            raise ValueError("--secure runs one Kafka node; leave out --brokers")
        stack = secure_stack()
        _print_report(secure_up(stack, progress=progress))
        errors.print(f"the client's settings (also in {stack.env_path}, for `. {stack.env_path}`):", markup=False)
        for name, value in secure_environment(stack).items():
            console.print(f"{name}={value}", markup=False, highlight=False)
        return
    from bse_predict.services.stack import services_up

    report = services_up(_settings(config), brokers=brokers, progress=progress)
    _print_report(report)
    if len(report.kafka_brokers) > 1:
        errors.print(f"clients of the cluster: BSE_KAFKA_BOOTSTRAP={report.kafka.address}", markup=False)


@services_app.command("down")
@one_line_errors
def services_down_command(config: ConfigOption = None, secure: SecureOption = False) -> None:
    """Stop the local Kafka (every broker) and Redis started by `services up` (with --secure: the secure stack)."""
    progress = lambda m: errors.print(m, markup=False)  # noqa: E731
    if secure:
        from bse_predict.services.local_secure import secure_down, secure_stack

        _print_report(secure_down(secure_stack(), progress=progress))
        return
    from bse_predict.services.stack import services_down

    _print_report(services_down(_settings(config), progress=progress))


@services_app.command("status")
@one_line_errors
def services_status_command(config: ConfigOption = None, secure: SecureOption = False) -> None:
    """Report Kafka (each broker of a cluster) and Redis; exit code 1 unless all answer."""
    if secure:
        from bse_predict.services.local_secure import secure_stack, secure_status

        report = secure_status(secure_stack())
    else:
        from bse_predict.services.stack import services_status

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
    from bse_predict.training.train import train_version
    from bse_predict.candles.files import read_candle_files

    settings = _settings(config, targets, horizon_hours, families=True)
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
    from bse_predict.evaluation.calibration import CALIBRATORS
    from bse_predict.evaluation.evaluate import evaluate as run_evaluation
    from bse_predict.evaluation.schema import EvaluationOptions
    from bse_predict.candles.files import read_candle_files

    if calibrator is not None and calibrator not in CALIBRATORS:
        raise ValueError(f"--calibrator must be one of {', '.join(CALIBRATORS)}, got {calibrator!r}")
    settings = _settings(config, targets, horizon_hours, families=True)
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

    from bse_predict.backtest.command import BacktestRequest, run_backtest
    from bse_predict.candles.files import read_candle_files
    from bse_predict.serving.signals import target_label

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
    from bse_predict.stream.run import run_worker

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
    from bse_predict.alerts.run import run_alerts

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
    from bse_predict.stream.run import run_relay

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

    from bse_predict.candles.files import read_candle_files
    from bse_predict.connections.clients import explained_kafka_errors
    from bse_predict.stream.replay import candle_records, replay as run_replay

    settings = _settings(config)
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

    from bse_predict.stream.bench import BenchOptions, run_bench

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
    from bse_predict.cli.demo import run_demo

    shown = run_demo(_settings(config, families=True), rate, progress=lambda m: errors.print(m, markup=False))
    if shown == 0:
        raise typer.Exit(1)


# ---------------------------------------------------------------- registry

@models_app.command("list")
@one_line_errors
def models_list(config: ConfigOption = None) -> None:
    """Every version in BSE_MODELS_DIR, oldest first."""
    from bse_predict.serving.manifest import list_versions

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
    from bse_predict.serving.manifest import load_manifest

    from bse_predict.serving.changelog import changelog_lines

    settings = _settings(config)
    manifest = load_manifest(settings.models_dir / version)
    console.print_json(manifest.model_dump_json(exclude={"changelog"}))
    for line in changelog_lines(manifest.changelog):
        console.print(line, markup=False, highlight=False)


@models_app.command("sign")
@one_line_errors
def models_sign(version: str, config: ConfigOption = None) -> None:
    """Sign a version's manifest with BSE_MODEL_SIGNING_SECRET (HMAC-SHA256), once its files check out."""
    from bse_predict.serving.manifest import sign_version

    settings = _settings(config)
    if settings.model_signing_secret is None:
        raise ValueError("BSE_MODEL_SIGNING_SECRET is not set: there is no secret to sign with")
    _check_version_name(version)
    sign_version(settings.models_dir / version, settings.model_signing_secret)
    console.print(f"signed {version} (HMAC-SHA256 of its manifest)", markup=False, highlight=False)


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
    from bse_predict.training.migrate import migrate_legacy

    settings = _settings(config)
    done = migrate_legacy(path, settings, version, serve, progress=lambda m: errors.print(m, markup=False))
    console.print(f"migrated {path} to {done}", markup=False, highlight=False)


# ---------------------------------------------------------------- control

IssuedByOption = Annotated[str, typer.Option("--issued-by", help="Who sends it (recorded on control.events).")]
WaitOption = Annotated[float, typer.Option(
    "--wait-s", min=0.0, help="Seconds to wait for a worker's answer on control.events (exit 1: refused, "
                              "3: no answer in time).")]
NoWaitOption = Annotated[bool, typer.Option("--no-wait", help="Send and exit 0 without waiting for the answer.")]
_REFUSED_EXIT = 1
_NO_ANSWER_EXIT = 3


def _send_control(config: Path | None, command: str, args: dict[str, Any], issued_by: str, wait_s: float = 30.0,
                  no_wait: bool = False) -> None:
    """Build, sign with BSE_CONTROL_SECRET (its id BSE_CONTROL_KEY_ID) and send one control message; print
    its id, then wait for a worker's answer: applied (exit 0), refused (exit 1, the reason on stderr), none
    within ``wait_s`` (exit 3)."""
    from datetime import UTC, datetime

    from bse_predict.control.messages import build_message
    from bse_predict.connections.clients import explained_kafka_errors
    from bse_predict.control.sender import send_control, send_control_and_wait

    settings = _settings(config)
    if settings.control_secret is None or not settings.control_secret.get_secret_value():
        raise ValueError("BSE_CONTROL_SECRET is not set: control messages cannot be signed")
    fields = build_message(command, args, settings.control_secret.get_secret_value(), datetime.now(UTC), issued_by,
                           key_id=settings.control_key_id)
    where = f"{command} {fields['args']} id={fields['id']} to {settings.topic('control')}"
    with explained_kafka_errors(settings):
        if no_wait:
            asyncio.run(send_control(settings, fields))
            console.print(f"sent {where}; the outcome appears on {settings.topic('control.events')}",
                          markup=False, highlight=False)
            return

        def waiting() -> None:
            errors.print(f"sent {where}; waiting up to {wait_s:g} s for a worker's answer on "
                         f"{settings.topic('control.events')}", markup=False, highlight=False)

        answer = asyncio.run(send_control_and_wait(settings, fields, wait_s, waiting))
    if answer is None:
        errors.print(f"error: no worker answered within {wait_s:g} s (is a worker running on "
                     f"{settings.kafka_bootstrap}, topic prefix {settings.topic_prefix!r}?); message {fields['id']} "
                     f"was sent and is refused as stale if no worker reads it within {settings.control.max_age_s:g} s",
                     markup=False, highlight=False)
        raise typer.Exit(_NO_ANSWER_EXIT)
    if answer.status == "refused":
        errors.print(f"error: refused {command} id={fields['id']}: {answer.reason}", markup=False, highlight=False)
        raise typer.Exit(_REFUSED_EXIT)
    live = "" if answer.state is None else f" (revision {answer.state.get('revision')}, live {answer.state.get('live')})"
    console.print(f"applied {command} id={fields['id']}: {answer.reason}{live}", markup=False, highlight=False)


def _version_or_off(value: str) -> str | None:
    return None if value.lower() == "off" else value


@control_app.command("promote")
@one_line_errors
def control_promote(version: str, config: ConfigOption = None, issued_by: IssuedByOption = "ops",
                    wait_s: WaitOption = 30.0, no_wait: NoWaitOption = False) -> None:
    """Make VERSION live for every symbol, after a load, hash check and warm-up on current windows."""
    _send_control(config, "promote", {"version": version}, issued_by, wait_s, no_wait)


@control_app.command("rollback")
@one_line_errors
def control_rollback(config: ConfigOption = None, issued_by: IssuedByOption = "ops", wait_s: WaitOption = 30.0,
                     no_wait: NoWaitOption = False) -> None:
    """Make the previous live version live again, at once."""
    _send_control(config, "rollback", {}, issued_by, wait_s, no_wait)


@control_app.command("ab")
@one_line_errors
def control_ab(
    variants: Annotated[list[str], typer.Argument(help="VERSION=WEIGHT pairs, e.g. v1=0.9 v2=0.1.")],
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
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
    _send_control(config, "ab", {"variants": weights}, issued_by, wait_s, no_wait)


@control_app.command("shadow")
@one_line_errors
def control_shadow(
    version: Annotated[str, typer.Argument(help="A version, or off.")],
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
) -> None:
    """Run VERSION on every candle and publish it to predictions.shadow only; ``off`` stops it."""
    _send_control(config, "shadow", {"version": _version_or_off(version)}, issued_by, wait_s, no_wait)


@control_app.command("fallback")
@one_line_errors
def control_fallback(
    version: Annotated[str, typer.Argument(help="A version, or off.")],
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
) -> None:
    """The version that answers (degraded: true) while a served model's circuit breaker is open."""
    _send_control(config, "fallback", {"version": _version_or_off(version)}, issued_by, wait_s, no_wait)


@control_app.command("ramp")
@one_line_errors
def control_ramp(
    version: str,
    shares: Annotated[str, typer.Option("--shares", help="Rising shares ending at 1; 0 = shadow only.")] = "0,0.05,0.25,0.5,1",
    every_s: Annotated[float | None, typer.Option("--every-s", help="Seconds per step; omit to advance on gates only.")] = None,
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
) -> None:
    """Warm VERSION up: shadow, then growing shares of symbols, then live; stops at the first failed gate."""
    try:
        steps = [float(x) for x in shares.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--shares must be numbers separated by commas, got {shares!r}") from None
    _send_control(config, "ramp", {"version": version, "shares": steps, "every_s": every_s}, issued_by, wait_s,
                  no_wait)


@control_app.command("gate")
@one_line_errors
def control_gate(
    version: str,
    passed: Annotated[bool, typer.Option("--pass/--fail", help="The gate's verdict on the ramping VERSION.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for control.events.")] = "",
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
) -> None:
    """A gate's verdict on a ramping version: --pass moves it to the next share, --fail stops the ramp."""
    _send_control(config, "gate", {"version": version, "passed": passed, "reason": reason}, issued_by, wait_s,
                  no_wait)


@control_app.command("rotate")
@one_line_errors
def control_rotate(
    key_id: Annotated[str | None, typer.Option("--key-id", help="The new key's id (default: key-YYYYMMDD, today).")] = None,
    config: ConfigOption = None,
) -> None:
    """Make a new random control key: the secret alone on stdout, the rotation steps on stderr (docs/operations.md)."""
    import re
    import secrets
    from datetime import UTC, datetime

    from configs.settings import CONTROL_KEY_ID_PATTERN

    try:
        settings = _settings(config)
        old_id, has_key = settings.control_key_id, settings.control_secret is not None
    except ValidationError:  # a BSE_CONTROL_SECRET too short to start with is a reason to be here
        old_id, has_key = "<BSE_CONTROL_KEY_ID, default primary>", True
    new_id = key_id or f"key-{datetime.now(UTC):%Y%m%d}"
    if not re.fullmatch(CONTROL_KEY_ID_PATTERN, new_id):
        raise ValueError(f"--key-id {new_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if has_key and new_id == old_id:
        raise ValueError(f"--key-id {new_id!r} is the current key's id; name the new key differently")
    secret = secrets.token_hex(32)  # 256 random bits as 64 hex digits: nothing to quote, no ',' or '='
    if not has_key:
        steps = f"""new control key {new_id}: the secret is the one line on stdout.
No BSE_CONTROL_SECRET is set here: give every worker and sender the same
  BSE_CONTROL_SECRET='<new secret>'  BSE_CONTROL_KEY_ID={new_id}"""
    else:
        steps = f"""new control key {new_id}: the secret is the one line on stdout; keep it like the current one.
Rotate without refusing a message on the way (every worker restarted one at a time at each step):
  1. every worker accepts it too:  BSE_CONTROL_KEYS='{new_id}=<new secret>'
     (comma-separated after any keys already listed there)
  2. every sender signs with it: operator machines and the workers (challenger decisions, control.state):
       BSE_CONTROL_SECRET='<new secret>'  BSE_CONTROL_KEY_ID={new_id}
     and the workers keep accepting the old key:  BSE_CONTROL_KEYS='{old_id}=<old secret>'
  3. once no sender uses the old key (control.events names each message's key_id) and
     control.max_age_s has passed: remove the old key from BSE_CONTROL_KEYS everywhere."""
    errors.print(steps, markup=False, highlight=False)
    console.print(secret, markup=False, highlight=False)


def main() -> None:
    app(prog_name="bse-predict")

