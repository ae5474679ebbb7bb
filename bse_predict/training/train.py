"""Offline training: candle files in, a versioned, verified ONNX model set out.

Every enabled family (``models.families`` in the config) per target, pooled
across symbols (a version answers for any symbol). The newest share of the hours is held out, at one calendar time
for every symbol, with a purge of the label horizon, for the metrics and the ONNX parity check in the manifest; the
boundary is the same for every target and family. The (family, target) fits run in ``training.workers`` processes
(:mod:`bse_predict.training.fit_pool`) and share their regime-model fits (:mod:`bse_predict.families.regime_cache`).
The version folder is written under a temporary name and renamed at the end,
so a crash never leaves a half version that the worker could pick up. With
``BSE_MODEL_SIGNING_SECRET`` set the manifest is signed (:mod:`bse_predict.serving.manifest_signing`).
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
from rich.progress import Progress, TimeElapsedColumn

from configs.settings import Settings
from bse_predict.training.dataset import SymbolDataset, build_dataset
from bse_predict.training.time_split import split_series
from bse_predict.evaluation.holdout_metrics import holdout_metrics
from bse_predict.training.onnx_parity import check_parity
from bse_predict.training.servable_gate import gate_block_days, servable_verdict
from bse_predict.candles.files import CandleSeries
from bse_predict.monitoring.drift import training_bins
from bse_predict.errors import BsePredictError
from bse_predict.features.definitions import FEATURE_NAMES, FEATURE_SPEC_HASH
from bse_predict.features.inputs import InputRows, concat_rows, min_history
from bse_predict.families import BasePredictor, get_model
from bse_predict.labels.first_touch import DOWN, UNKNOWN, UP
from bse_predict.serving.manifest import DataSpan, Manifest, ModelEntry, ParityReport, sha256_of
from bse_predict.serving.parity_check import record_parity_sample
from bse_predict.serving.signals import target_label
from bse_predict.families.regime_cache import shared_regime_fits
from bse_predict.training.fit_pool import FIT_STAGES, FitTask, run_fits
from bse_predict.training.version_folder import partial_version, publish_version

__all__ = ["TrainingError", "train_version"]

_LIBRARIES = ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime")


class TrainingError(BsePredictError):
    """Training cannot produce a sound version from these inputs."""


@dataclass(frozen=True)
class _Split:
    x_train: np.ndarray | InputRows
    y_train: np.ndarray
    x_holdout: np.ndarray | InputRows
    y_holdout: np.ndarray
    x_validation: np.ndarray | InputRows
    y_validation: np.ndarray
    t_holdout: np.ndarray
    """Open times of the holdout rows (the servable gate's bootstrap blocks)."""
    t_validation: np.ndarray


def _pooled_split(datasets: list[SymbolDataset], model: BasePredictor, target: str, settings: Settings,
                  extra: list[SymbolDataset]) -> _Split:
    """The family's own inputs (``prepare_data``), pooled over symbols and cut at calendar times
    shared by every served symbol (:mod:`bse_predict.training.time_split`): the newest share of
    the hours is held out, and a family that stops early also gets the newest share of what is left
    as validation; every boundary is purged by the label horizon. ``extra`` symbols (``train
    --pooled-data``) only add fit rows, purged before the first held-out or validation hour:
    their hours move with the served ones (spot BTC with futures BTC), so a later row would leak
    the holdout's outcomes into training."""
    horizon_ms = settings.market.horizon_hours * 3_600_000
    validation_fraction = settings.training.validation_fraction if model.uses_validation else 0.0
    parts: dict[str, list] = {k: [] for k in ("xt", "yt", "xh", "yh", "xv", "yv", "th", "tv")}
    splits = split_series([data.open_time_ms for data in datasets], settings.training.holdout_fraction,
                          validation_fraction, horizon_ms)
    first_unseen_ms = np.iinfo(np.int64).max
    for data, split in zip(datasets, splits, strict=True):
        x, y = model.prepare_data(data, target)
        known = data.labels[target] != UNKNOWN
        train, holdout, validation = split.train[known], split.holdout[known], split.validation[known]
        for name, rows in (("t", train), ("h", holdout), ("v", validation)):
            parts[f"x{name}"].append(x[rows])
            parts[f"y{name}"].append(y[rows])
        times = data.open_time_ms[known]
        parts["th"].append(times[holdout])
        parts["tv"].append(times[validation])
        unseen = np.concatenate([times[holdout], times[validation]])
        if len(unseen):
            first_unseen_ms = min(first_unseen_ms, int(unseen.min()))
    for data in extra:
        x, y = model.prepare_data(data, target)
        times = data.open_time_ms[data.labels[target] != UNKNOWN]
        rows = np.flatnonzero(times + horizon_ms < first_unseen_ms)
        parts["xt"].append(x[rows])
        parts["yt"].append(y[rows])
    split = _Split(*(concat_rows(parts[k]) for k in ("xt", "yt", "xh", "yh", "xv", "yv", "th", "tv")))
    missing = {UP, DOWN} - set(np.unique(split.y_train).tolist())
    if missing:
        raise TrainingError(f"target {target}: training rows lack classes {sorted(missing)}; give more history")
    return split


@dataclass(frozen=True)
class _FitInputs:
    """What every fit of a version reads (sent once to each worker process)."""
    datasets: list[SymbolDataset]
    extra: list[SymbolDataset]
    """Series that only add training rows (``train --pooled-data``)."""
    settings: Settings
    work_dir: Path
    regime_dir: Path


def _fit(inputs: _FitInputs, task: FitTask, report: Callable[[str], None],
         ) -> list[tuple[ModelEntry, dict[str, float], ParityReport]]:
    with shared_regime_fits(inputs.regime_dir):
        return _train_family(task.family, task.target, inputs.datasets, inputs.settings, inputs.work_dir, report,
                             inputs.extra)


def _train_family(family: str, target: str, datasets: list[SymbolDataset], settings: Settings,
                  work_dir: Path, report: Callable[[str], None], extra: list[SymbolDataset],
                  ) -> list[tuple[ModelEntry, dict[str, float], ParityReport]]:
    """Fit one family on one target, export it, prove the export, measure it on the holdout and
    judge whether it is servable. A family with ``variants`` (the ensemble's other strategies)
    adds one entry per variant."""
    model = get_model(family, **settings.models.params_for(family, target))
    split = _pooled_split(datasets, model, target, settings, extra)
    report(FIT_STAGES[0])
    started, cpu_started = time.perf_counter(), time.process_time()
    validation = (split.x_validation, split.y_validation) if model.uses_validation else None
    times = {"validation_open_time_ms": split.t_validation} if model.uses_validation_times else {}
    model.train(split.x_train, split.y_train, validation_data=validation, **times)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    stem = f"{family}_{target.rstrip('%')}pct"
    report(FIT_STAGES[1])
    check_rows = split.x_holdout if len(split.x_holdout) else split.x_train[-2000:]
    feed = model.onnx_feed(check_rows)
    combiner = getattr(model, "combiner_record", None)
    entry, metrics, parity = _exported_entry(
        model, None, split, settings, work_dir, check_rows, feed,
        ModelEntry(name=family, family=family, target=target, file=f"{stem}.onnx", inputs=model.input_kinds,
                   native_file=f"native/{stem}.joblib",
                   combiner=combiner(model.strategy, family) if combiner else None))
    model.save(work_dir / "native" / f"{stem}.joblib")
    # CPU seconds beside wall seconds: on a shared machine the wall clock measures the neighbours too
    metrics.update(train_rows=float(len(split.y_train)), train_seconds=round(seconds, 3),
                   train_cpu_seconds=round(cpu_seconds, 3))
    results = [(entry, metrics, parity)]
    for variant in getattr(model, "variants", tuple)():
        results.append(_exported_entry(
            model, variant, split, settings, work_dir, check_rows, feed,
            ModelEntry(name=f"{family}_{variant}", family=family, target=target,
                       file=f"{family}_{variant}_{target.rstrip('%')}pct.onnx", inputs=model.variant_input_kinds(variant),
                       native_file=f"native/{stem}.joblib", combiner=combiner(variant, family) if combiner else None)))
    return results


def _exported_entry(model: BasePredictor, variant: str | None, split: _Split, settings: Settings, work_dir: Path,
                    check_rows: np.ndarray | InputRows, feed: dict[str, np.ndarray],
                    entry: ModelEntry) -> tuple[ModelEntry, dict[str, float], ParityReport]:
    """Export ``entry`` (the model itself, or its ``variant``), check its parity on ``check_rows``
    (a few rows recorded for promote to re-run), score it on the holdout and add the servable verdict."""
    def predict(rows: np.ndarray | InputRows) -> np.ndarray:
        return model.predict_proba(rows) if variant is None else model.predict_strategy(rows, variant)  # type: ignore[attr-defined]

    if variant is None:
        model.export_onnx(work_dir / entry.file)
    else:
        model.export_strategy(work_dir / entry.file, variant)  # type: ignore[attr-defined]
    entry_feed = {k: v for k, v in feed.items() if k in entry.inputs}
    native = predict(check_rows)
    parity = record_parity_sample(check_parity(native, work_dir / entry.file, entry_feed), work_dir,
                                  entry.file.removesuffix(".onnx"), entry_feed, native)
    if not len(split.y_holdout):
        holdout = np.empty((0, 3))
    else:  # the parity rows are the holdout whenever there is one: predicted once (an ensemble's members are slow)
        holdout = native if check_rows is split.x_holdout else predict(split.x_holdout)
    metrics = holdout_metrics(holdout, split.y_holdout, split.y_train) if len(split.y_holdout) else {}
    gate = settings.training.servable_gate
    verdict = servable_verdict(holdout, split.y_holdout, split.y_train, split.t_holdout, gate,
                               gate_block_days(gate, settings.market.horizon_hours))
    return entry.model_copy(update={"servable": verdict}), metrics, parity


def _library_versions() -> dict[str, str]:
    versions = {name: package_version(name) for name in _LIBRARIES}
    versions["python"] = platform.python_version()
    return versions


def train_version(series: list[CandleSeries], settings: Settings, version: str, *, show_progress: bool = True,
                  pooled: Sequence[CandleSeries] = ()) -> Path:
    """Train, export, verify and register ``version``; return its folder. ``pooled`` series add
    training rows only (see :func:`_pooled_split`); the holdout is the served ``series``'."""
    models_dir = settings.models_dir
    final_dir = models_dir / version
    if final_dir.exists():
        raise TrainingError(f"version {version} already exists in {models_dir}; versions are immutable, pick a new one")
    if not series:
        raise TrainingError("no candle series to train on")
    families = settings.models.enabled()
    if settings.models.served not in families:
        raise TrainingError(f"the served family {settings.models.served!r} is not enabled in models.families")
    started = time.perf_counter()
    with partial_version(models_dir, version, "native") as work_dir, \
            tempfile.TemporaryDirectory(prefix="bse-regimes-") as regime_dir:
        with Progress(*Progress.get_default_columns()[:-1], TimeElapsedColumn(), disable=not show_progress,
                      transient=False) as progress:
            datasets = _datasets([*series, *pooled], settings, progress)
            served, extra = datasets[:len(series)], datasets[len(series):]
            tasks = [FitTask(family, target_label(pct)) for pct in settings.market.targets_pct for family in families]
            results = run_fits(_fit, _FitInputs(served, extra, settings, work_dir, Path(regime_dir)), tasks,
                               settings.training.worker_count(), progress, _longest_first(tasks, settings))
        entries, metrics, parity = [], {}, {}
        for task, fitted in zip(tasks, results, strict=True):
            for entry, entry_metrics, entry_parity in fitted:
                key = f"{entry.name}/{task.target}"
                metrics[key], parity[key] = entry_metrics, entry_parity
                entries.append(entry)
        manifest = _manifest(version, [*series, *pooled], datasets, entries, metrics, parity, settings, work_dir,
                             time.perf_counter() - started, len(series))
        publish_version(manifest, work_dir, final_dir, settings)
    return final_dir


def _longest_first(tasks: list[FitTask], settings: Settings) -> list[int]:
    """Fits that train other families inside them (ensembles: more members, longer) start first."""
    def members(task: FitTask) -> int:
        return len(settings.models.params_for(task.family, task.target).get("members", ()))

    return sorted(range(len(tasks)), key=lambda i: -members(tasks[i]))


def _datasets(series: Sequence[CandleSeries], settings: Settings, progress: Progress) -> list[SymbolDataset]:
    market = settings.market
    features_task = progress.add_task("features and labels", total=len(series))
    datasets = []
    for one in series:
        progress.update(features_task, description=f"features and labels: {one.symbol}")
        datasets.append(build_dataset(one, market.targets_pct, market.horizon_candles,
                                      settings.training.max_rows_per_symbol))
        progress.advance(features_task)
    return datasets


def _data_spans(series: list[CandleSeries], datasets: list[SymbolDataset], served_count: int) -> dict[str, DataSpan]:
    """Hours per series, keyed ``SYMBOL@FILE``; series that only added training rows (``pooled``)
    are prefixed ``pooled:`` (spot and futures files of one symbol share a name)."""
    return {
        f"{'pooled:' if i >= served_count else ''}{one.symbol}@{one.source.name}": DataSpan(
            start_ms=int(d.open_time_ms[0]), end_ms=int(d.open_time_ms[-1]), rows=len(d.open_time_ms))
        for i, (one, d) in enumerate(zip(series, datasets, strict=True)) if len(d.open_time_ms)
    }


def _manifest(version: str, series: list[CandleSeries], datasets: list[SymbolDataset], entries: list[ModelEntry],
              metrics: dict[str, dict[str, float]], parity: dict[str, ParityReport], settings: Settings,
              work_dir: Path, seconds: float, served_count: int) -> Manifest:
    files = sorted(p for p in work_dir.rglob("*") if p.is_file())
    return Manifest(
        version=version,
        created_at=datetime.now(UTC),
        timeframe=settings.market.timeframe,
        horizon_hours=settings.market.horizon_hours,
        targets_pct=settings.market.targets_pct,
        feature_names=FEATURE_NAMES,
        feature_spec_hash=FEATURE_SPEC_HASH,
        min_history=min_history({kind for e in entries if e.name == settings.models.served for kind in e.inputs}),
        data_span=_data_spans(series, datasets, served_count),
        models=tuple(entries),
        served_model=settings.models.served,
        metrics=metrics,
        parity=parity,
        files_sha256={str(p.relative_to(work_dir)): sha256_of(p) for p in files},
        library_versions=_library_versions(),
        training_seconds=round(seconds, 3),
        feature_bins=training_bins(np.vstack([d.features for d in datasets[:served_count]]), FEATURE_NAMES),
    )
