"""``bse-predict train``, ``evaluate`` and ``backtest``: the offline commands over candle files. The
training and evaluation modules (scikit-learn, pandas) are imported inside each command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bse_predict.cli.shared import (ConfigOption, DataOption, HorizonOption, TargetsOption, check_version_name,
                                    comma_separated, command_settings, console, errors, one_line_errors)

if TYPE_CHECKING:
    from configs.settings import Settings
    from bse_predict.evaluation.schema import EvaluationReport

__all__ = ["backtest", "evaluate", "train"]


@one_line_errors
def train(
    data: DataOption,
    version: Annotated[str, typer.Option("--version", help="Version name to write, e.g. 2026-11-21a.")],
    config: ConfigOption = None,
    targets: TargetsOption = None,
    horizon_hours: HorizonOption = None,
    max_rows: Annotated[int | None, typer.Option("--max-rows", help="Train on the newest N rows per symbol.")] = None,
    pooled_data: Annotated[list[Path] | None, typer.Option(
        "--pooled-data", help="More candle files or directories (repeatable) that only add training rows, up to "
                              "the served symbols' holdout; see docs/models/context.md.")] = None,
) -> None:
    """Train the model set on candle files and write ONNX models and a manifest to BSE_MODELS_DIR/VERSION."""
    from bse_predict.training.train import train_version
    from bse_predict.candles.files import read_candle_files

    settings = command_settings(config, targets, horizon_hours, families=True)
    if max_rows is not None:
        settings = settings.model_copy(update={"training": settings.training.model_copy(
            update={"max_rows_per_symbol": max_rows})})
    check_version_name(version)
    series = read_candle_files(data, settings.market.timeframe)
    pooled = read_candle_files(pooled_data, settings.market.timeframe) if pooled_data else []
    folder = train_version(series, settings, version, pooled=pooled)
    console.print(f"version {version} written to {folder}")
    _print_servable(folder, settings)


def _print_servable(folder: Path, settings: Settings) -> None:
    """The served model's servable verdict per target, then every entry training refused to mark servable."""
    from bse_predict.serving.manifest import load_manifest
    from bse_predict.training.servable_gate import describe, refused

    manifest = load_manifest(folder, settings.model_signing_secret)
    for entry in manifest.models:
        if entry.name == manifest.served_model:
            console.print(describe(entry), markup=False, highlight=False)
    bad = refused(manifest.models)
    if not bad:
        console.print("every model is servable: none is significantly worse than climatology on the holdout")
        return
    console.print(f"[bold red]{len(bad)} of {len(manifest.models)} models are NOT SERVABLE[/] (significantly "
                  f"worse than climatology on the holdout; marked in {folder.name}/manifest.json):")
    for entry in bad:
        console.print(f"  {describe(entry)}", markup=False, highlight=False)


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

    The report is written in every case, with the leakage verdict at its top.

    Exits 2 with a one-line reason on bad input, and when leakage is suspected (the report is written first).

    Leakage: an up-vs-down AUC whose block-bootstrap interval lies beyond what hourly data allows."""
    from bse_predict.evaluation.calibration import CALIBRATORS
    from bse_predict.evaluation.evaluate import LeakageSuspected, evaluate as run_evaluation
    from bse_predict.evaluation.schema import EvaluationOptions
    from bse_predict.candles.files import read_candle_files

    if calibrator is not None and calibrator not in CALIBRATORS:
        raise ValueError(f"--calibrator must be one of {', '.join(CALIBRATORS)}, got {calibrator!r}")
    settings = command_settings(config, targets, horizon_hours, families=True)
    chosen = comma_separated(families) if families else None
    options = EvaluationOptions(families=chosen, folds=folds, max_rows_per_symbol=max_rows, seed=seed,
                                **({"calibrator": calibrator} if calibrator else {}))
    series = read_candle_files(data, settings.market.timeframe)
    try:
        report = run_evaluation(series, settings, out, options)
    except LeakageSuspected as suspected:
        _print_evaluation(suspected.report, out)
        raise
    _print_evaluation(report, out)


def _print_evaluation(report: EvaluationReport, out: Path) -> None:
    """The verdicts of every target, the leakage verdict and where the outputs are."""
    from bse_predict.evaluation.leakage import leakage_verdict

    for result in report.targets.values():
        for verdict in result.verdicts:
            console.print(f"{result.target}: {verdict}", markup=False, highlight=False)
    console.print(leakage_verdict(report.leakage, report.options.confidence_level), markup=False, highlight=False)
    console.print(f"evaluation written to {out}: metrics.json, report.md and {len(report.plots)} plots")


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

    settings = command_settings(config, targets, horizon_hours)
    start_ms = None
    if start is not None:
        try:
            start_ms = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            raise ValueError(f"--start must be a date like 2025-12-01, got {start!r}") from None
    names = comma_separated(models) if models else ()
    request = BacktestRequest(version, names, compare, start_ms,
                              tuple(target_label(p) for p in settings.market.targets_pct))
    series = read_candle_files(data, settings.market.timeframe)
    with errors.status("backtest: replaying") as status:
        report = run_backtest(settings, series, request, out,
                              lambda label, ticks: status.update(f"backtest {label}: {ticks} hours replayed"))
    console.print(f"backtest written to {report.parent}: report.md, equity.png, metrics.json")
