"""``bse-predict evaluate``: purged walk-forward evaluation of every family against the baselines.

Candle series -> per-symbol datasets -> per target: pooled rows, expanding
walk-forward folds (:mod:`bse_predict.evaluation.walk_forward`), out-of-fold predictions
with out-of-fold calibration (:mod:`bse_predict.evaluation.fold_predictions`), scores and
paired bootstrap (:mod:`bse_predict.evaluation.target_scores`) -> ``metrics.json``
(:class:`EvaluationReport`), ``report.md`` and PNG plots in the output folder.

The leakage guard (:mod:`bse_predict.evaluation.leakage`) runs last, after
every output is written, so the report exists whatever it concludes: its
verdict heads ``report.md``, and a suspected leak then raises
:class:`LeakageSuspected`, which carries the report.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from configs.settings import Settings
from bse_predict.evaluation.schema import DataSpan, EvaluationOptions, EvaluationReport, TargetEvaluation
from bse_predict.evaluation.fold_predictions import EvaluationError, FamilySplit, ModelFactory, fold_masks, predict_out_of_fold
from bse_predict.evaluation.leakage import LeakageSuspected, check_leakage
from bse_predict.evaluation.plots import write_plots
from bse_predict.training.pooling import pool_rows
from bse_predict.evaluation.report import write_report
from bse_predict.evaluation.target_scores import score_target
from bse_predict.evaluation.walk_forward import make_folds
from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import SymbolDataset, build_dataset
from bse_predict.families import get_model, list_models
from bse_predict.serving.signals import target_label

__all__ = ["evaluate", "EvaluationError", "LeakageSuspected", "METRICS_FILE", "REPORT_FILE", "default_factory"]

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
_LIBRARIES = ("numpy", "scipy", "scikit-learn", "matplotlib", "pydantic")


def default_factory(settings: Settings) -> ModelFactory:
    """Families built from the registry with the configured parameters (none for an unconfigured family)."""

    def build(family: str, target: str) -> Any:
        params = settings.models.params_for(family, target) if family in settings.models.families else {}
        return get_model(family, **params)

    return build


def _families(settings: Settings, options: EvaluationOptions, check_registry: bool) -> list[str]:
    families = list(options.families) if options.families is not None else settings.models.enabled()
    if check_registry:
        unknown = [f for f in families if f not in list_models()]
        if unknown:
            raise EvaluationError(f"unknown model families {unknown}; known: {', '.join(list_models())}")
    if len(set(families)) != len(families):
        raise EvaluationError(f"families listed twice: {families}")
    return families


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:
            pass
    return versions


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=repr))


def evaluate(series: Sequence[CandleSeries], settings: Settings, out_dir: Path,
             options: EvaluationOptions | None = None, *, model_factory: ModelFactory | None = None,
             show_progress: bool = True) -> EvaluationReport:
    """Run the evaluation, write ``metrics.json``, ``report.md`` and plots to ``out_dir``; return the report.

    ``model_factory`` builds a new, unfitted predictor from (family, target); by default the
    registry with ``settings.models.params_for``. Raises :class:`LeakageSuspected` (after
    writing the outputs) when an AUC interval fails the guard.
    """
    options = options or EvaluationOptions()
    started = time.perf_counter()
    if not series:
        raise EvaluationError("no candle series to evaluate")
    families = _families(settings, options, check_registry=model_factory is None)
    factory = model_factory or default_factory(settings)
    market = settings.market
    horizon_ms = market.horizon_hours * 3_600_000
    max_rows = options.max_rows_per_symbol or settings.training.max_rows_per_symbol
    targets = [(pct, target_label(pct)) for pct in market.targets_pct]
    split = FamilySplit(options.calibrator, settings.training.validation_fraction, horizon_ms)
    results: dict[str, TargetEvaluation] = {}
    params: dict[str, dict[str, dict[str, Any]]] = {f: {} for f in families}
    fitted: dict[tuple[str, str], Any] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not show_progress) as progress:
        datasets = _build_datasets(series, settings, max_rows, progress)
        fit_task = progress.add_task("walk-forward", total=len(targets) * (len(families) + 1) * options.folds)
        for pct, target in targets:
            rows = pool_rows(datasets, target, market.timeframe_ms)
            if len(rows) == 0:
                raise EvaluationError(f"target {target}: no labelled rows")
            folds = make_folds(rows.open_time_ms, options.folds, options.initial_train_fraction)
            masks = fold_masks(rows, folds, horizon_ms, options.embargo_hours * 3_600_000,
                               options.calibration_fraction)
            oof = predict_out_of_fold(rows, datasets, masks, families, factory, split,
                                      options.always_up_confidence, progress, fit_task)
            results[target] = score_target(rows, masks, oof, families, pct, market.horizon_hours, options)
            for family in families:
                params[family][target] = _json_safe(oof.hyperparameters[family])
                fitted[(target, family)] = oof.last_models[family]
    leakage = check_leakage(results, options.leakage_auc_limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    draft = EvaluationReport(
        created_at=datetime.now(UTC), options=options, market=market.model_dump(mode="json"),
        family_params=params, data=_data_spans(series, datasets), targets=results, leakage=leakage,
        library_versions=_library_versions(), total_seconds=0.0)
    report = _write_outputs(draft, out_dir, datasets, fitted, started)
    if not leakage.passed:
        raise LeakageSuspected(f"leakage suspected: {'; '.join(leakage.failures)} (honest hourly AUC is 0.50-0.56; "
                               f"report written to {out_dir})", report)
    return report


def _build_datasets(series: Sequence[CandleSeries], settings: Settings, max_rows: int | None,
                    progress: Progress) -> list[SymbolDataset]:
    """Features and labels of every series, one progress step each."""
    market = settings.market
    build_task = progress.add_task("features and labels", total=len(series))
    datasets = []
    for one in series:
        progress.update(build_task, description=f"features and labels: {one.symbol}")
        datasets.append(build_dataset(one, market.targets_pct, market.horizon_candles, max_rows))
        progress.advance(build_task)
    return datasets


def _data_spans(series: Sequence[CandleSeries], datasets: Sequence[SymbolDataset]) -> tuple[DataSpan, ...]:
    """The hours each symbol contributed (symbols without rows left out)."""
    return tuple(DataSpan(symbol=d.symbol, source=s.source.name, start_ms=int(d.open_time_ms[0]),
                          end_ms=int(d.open_time_ms[-1]), rows=len(d.open_time_ms))
                 for s, d in zip(series, datasets, strict=True) if len(d.open_time_ms))


def _write_outputs(draft: EvaluationReport, out_dir: Path, datasets: Sequence[SymbolDataset],
                   fitted: dict[tuple[str, str], Any], started: float) -> EvaluationReport:
    """Plots, ``metrics.json`` and ``report.md`` in ``out_dir``; the report with its plots, notes
    and the seconds since ``started``."""
    plots, notes = write_plots(draft, out_dir, datasets, fitted)
    report = draft.model_copy(update={"plots": tuple(plots), "notes": tuple(notes),
                                      "total_seconds": round(time.perf_counter() - started, 3)})
    (out_dir / METRICS_FILE).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    write_report(report, out_dir / REPORT_FILE)
    return report
