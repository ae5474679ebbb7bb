"""Offline training: candle files in, a versioned, verified ONNX model set out.

One RandomForest per target, pooled across symbols (a version answers for any
symbol). The newest share of each symbol is held out, with a purge of the
label horizon, for the metrics and the ONNX parity check in the manifest.
The version folder is written under a temporary name and renamed at the end,
so a crash never leaves a half version that the worker could pick up.
"""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path

import joblib
import numpy as np
from rich.progress import Progress
from sklearn.ensemble import RandomForestClassifier

from configs.settings import Settings
from export.dataset import SymbolDataset, build_dataset, holdout_split
from export.holdout_metrics import holdout_metrics
from export.onnx_export import check_parity, export_random_forest
from models.candle_files import CandleSeries
from models.errors import BsePredictError
from models.features import FEATURE_NAMES, FEATURE_SPEC_HASH, LOOKBACK_CANDLES
from models.labels import CLASS_NAMES, DOWN, UNKNOWN, UP, expand_classes
from models.manifest import MANIFEST_NAME, DataSpan, Manifest, ModelEntry, ParityReport, sha256_of
from models.signals import target_label

__all__ = ["TrainingError", "train_version", "MODEL_NAME"]

MODEL_NAME = "random_forest"
_LIBRARIES = ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime")


class TrainingError(BsePredictError):
    """Training cannot produce a sound version from these inputs."""


@dataclass(frozen=True)
class _Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray


def _pooled_split(datasets: list[SymbolDataset], target: str, holdout_fraction: float, horizon_ms: int) -> _Split:
    parts: dict[str, list[np.ndarray]] = {"xt": [], "yt": [], "xh": [], "yh": []}
    for data in datasets:
        labels = data.labels[target]
        train, holdout = holdout_split(data.open_time_ms, holdout_fraction, horizon_ms)
        known = labels != UNKNOWN
        parts["xt"].append(data.features[train & known])
        parts["yt"].append(labels[train & known])
        parts["xh"].append(data.features[holdout & known])
        parts["yh"].append(labels[holdout & known])
    split = _Split(*(np.concatenate(parts[k]) for k in ("xt", "yt", "xh", "yh")))
    missing = {UP, DOWN} - set(np.unique(split.y_train).tolist())
    if missing:
        raise TrainingError(f"target {target}: training rows lack classes {sorted(missing)}; give more history")
    return split


def _forest(settings: Settings) -> RandomForestClassifier:
    rf = settings.training.random_forest
    return RandomForestClassifier(
        n_estimators=rf.n_estimators,
        max_depth=rf.max_depth,
        min_samples_leaf=rf.min_samples_leaf,
        max_features=rf.max_features,
        class_weight=rf.class_weight,
        random_state=rf.seed,
        n_jobs=-1,
    )


def _library_versions() -> dict[str, str]:
    versions = {name: package_version(name) for name in _LIBRARIES}
    versions["python"] = platform.python_version()
    return versions


def train_version(series: list[CandleSeries], settings: Settings, version: str, *, show_progress: bool = True) -> Path:
    """Train, export, verify and register ``version``; return its folder."""
    models_dir = settings.models_dir
    final_dir = models_dir / version
    if final_dir.exists():
        raise TrainingError(f"version {version} already exists in {models_dir}; versions are immutable, pick a new one")
    if not series:
        raise TrainingError("no candle series to train on")
    started = time.perf_counter()
    market = settings.market
    horizon_ms = market.horizon_hours * 3_600_000
    work_dir = models_dir / f".{version}.partial"
    shutil.rmtree(work_dir, ignore_errors=True)
    (work_dir / "native").mkdir(parents=True)
    try:
        with Progress(disable=not show_progress, transient=False) as progress:
            features_task = progress.add_task("features and labels", total=len(series))
            datasets = []
            for one in series:
                progress.update(features_task, description=f"features and labels: {one.symbol}")
                datasets.append(build_dataset(one, market.targets_pct, market.horizon_candles,
                                              settings.training.max_rows_per_symbol))
                progress.advance(features_task)
            targets = [target_label(pct) for pct in market.targets_pct]
            fit_task = progress.add_task("random forest", total=len(targets))
            entries, metrics, parity = [], {}, {}
            for target in targets:
                progress.update(fit_task, description=f"random forest: target {target}")
                split = _pooled_split(datasets, target, settings.training.holdout_fraction, horizon_ms)
                forest = _forest(settings).fit(split.x_train.astype(np.float32), split.y_train)
                stem = f"{MODEL_NAME}_{target.rstrip('%')}pct"
                export_random_forest(forest, len(FEATURE_NAMES), work_dir / f"{stem}.onnx")
                joblib.dump(forest, work_dir / "native" / f"{stem}.joblib")
                check_rows = split.x_holdout if len(split.x_holdout) else split.x_train[-2000:]
                native = forest.predict_proba(check_rows.astype(np.float32))
                parity[target] = check_parity(native, work_dir / f"{stem}.onnx", check_rows)
                if len(split.y_holdout):
                    metrics[target] = holdout_metrics(expand_classes(native, forest.classes_), split.y_holdout,
                                                      split.y_train)
                metrics.setdefault(target, {})["train_rows"] = float(len(split.y_train))
                entries.append(ModelEntry(name=MODEL_NAME, family="random_forest", target=target,
                                          file=f"{stem}.onnx", native_file=f"native/{stem}.joblib",
                                          classes=tuple(CLASS_NAMES[c] for c in forest.classes_)))
                progress.advance(fit_task)
        manifest = _manifest(version, series, datasets, entries, metrics, parity, settings, work_dir,
                             time.perf_counter() - started)
        (work_dir / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        work_dir.rename(final_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return final_dir


def _manifest(version: str, series: list[CandleSeries], datasets: list[SymbolDataset], entries: list[ModelEntry],
              metrics: dict[str, dict[str, float]], parity: dict[str, ParityReport], settings: Settings,
              work_dir: Path, seconds: float) -> Manifest:
    files = sorted(p for p in work_dir.rglob("*") if p.is_file())
    return Manifest(
        version=version,
        created_at=datetime.now(UTC),
        timeframe=settings.market.timeframe,
        horizon_hours=settings.market.horizon_hours,
        targets_pct=settings.market.targets_pct,
        feature_names=FEATURE_NAMES,
        feature_spec_hash=FEATURE_SPEC_HASH,
        min_history=LOOKBACK_CANDLES,
        data_span={
            f"{one.symbol}@{one.source.name}": DataSpan(start_ms=int(d.open_time_ms[0]), end_ms=int(d.open_time_ms[-1]),
                                                       rows=len(d.open_time_ms))
            for one, d in zip(series, datasets, strict=True) if len(d.open_time_ms)
        },
        models=tuple(entries),
        served_model=MODEL_NAME,
        metrics=metrics,
        parity=parity,
        files_sha256={str(p.relative_to(work_dir)): sha256_of(p) for p in files},
        library_versions=_library_versions(),
        training_seconds=round(seconds, 3),
    )
