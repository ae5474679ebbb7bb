"""Out-of-fold predictions: every family and baseline, fold by fold, on the same test rows.

For each fold (:mod:`bse_predict.evaluation.walk_forward`): a family is fit on the fit rows,
a calibrator on its predictions for the calibration slice (the newest
training rows, purged from the fit rows), and both predict the test block.
A family that stops early (``uses_validation``) gets its validation rows
the same way, from inside the fit rows: the newest ``validation_fraction``,
purged by the horizon; it never sees the calibration slice. A family that
calibrates itself (the ensemble: its combiners are fitted by log loss on rows
its members never saw) gets the calibration slice for its combiners instead of
a calibrator, and is scored as it would be served. Baselines are fit
on all of the fold's training rows. A fresh model is built for every fold;
nothing carries over between folds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.progress import Progress, TaskID

from bse_predict.evaluation.baselines import make_baselines
from bse_predict.evaluation.calibration import Calibrator, CalibratorName, make_calibrator
from bse_predict.training.pooling import PooledRows, pool_inputs, prepare_key
from bse_predict.evaluation.walk_forward import Fold, block_mask, calibration_split, training_mask
from bse_predict.training.dataset import SymbolDataset
from bse_predict.errors import BsePredictError
from bse_predict.families import BasePredictor
from bse_predict.labels.first_touch import DOWN, UP

__all__ = ["FoldMasks", "FamilySplit", "OutOfFold", "ModelFactory", "fold_masks", "predict_out_of_fold",
           "train_on_fold", "fit_calibrator", "EvaluationError"]

ModelFactory = Callable[[str, str], BasePredictor]
"""(family, target) -> a new, unfitted predictor."""


class EvaluationError(BsePredictError):
    """The evaluation cannot run soundly on these inputs."""


@dataclass(frozen=True)
class FoldMasks:
    fold: Fold
    train: np.ndarray
    fit: np.ndarray
    calibration: np.ndarray
    test: np.ndarray


@dataclass
class OutOfFold:
    """Test-row predictions of every model, rows in the order of ``test_index``."""

    test_index: np.ndarray
    fold_of_row: np.ndarray
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    uncalibrated: dict[str, np.ndarray] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    fold_fit_seconds: dict[str, list[float]] = field(default_factory=dict)
    feature_importance: dict[str, dict[str, float]] = field(default_factory=dict)
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_models: dict[str, BasePredictor] = field(default_factory=dict)
    """Each family's model of the newest fold, fitted (for diagnostics such as the regime plots)."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """A family with ``variants`` (the ensemble's other strategies and members alone): the names
    ``<family>_<variant>`` scored beside it, each calibrated like a family on the same folds."""


def fold_masks(rows: PooledRows, folds: Sequence[Fold], horizon_ms: int, embargo_ms: int,
               calibration_fraction: float) -> list[FoldMasks]:
    out = []
    for fold in folds:
        train = training_mask(fold, list(folds), rows.open_time_ms, horizon_ms, embargo_ms)
        fit, calibration = calibration_split(train, rows.open_time_ms, calibration_fraction, horizon_ms)
        out.append(FoldMasks(fold, train, fit, calibration, block_mask(fold, rows.open_time_ms)))
    return out


def _check_classes(labels: np.ndarray, what: str) -> None:
    missing = {UP, DOWN} - set(np.unique(labels).tolist())
    if missing:
        raise EvaluationError(f"{what} lack classes {sorted(missing)} (up=0, down=1); give more history or fewer folds")


def _mean_importance(per_fold: list[dict[str, float]]) -> dict[str, float]:
    names = sorted({name for one in per_fold for name in one})
    return {name: float(np.mean([one.get(name, 0.0) for one in per_fold])) for name in names} if per_fold else {}


@dataclass(frozen=True)
class FamilySplit:
    """How a family's rows are used inside a fold."""

    calibrator: CalibratorName
    validation_fraction: float
    """Newest share of the fit rows for early stopping (families with ``uses_validation``)."""
    horizon_ms: int


def predict_out_of_fold(rows: PooledRows, datasets: Sequence[SymbolDataset], masks: Sequence[FoldMasks],
                        families: Sequence[str], factory: ModelFactory, split: FamilySplit,
                        always_up_confidence: float, progress: Progress, task: TaskID) -> OutOfFold:
    test_index = np.concatenate([np.flatnonzero(m.test) for m in masks])
    fold_of_row = np.concatenate([np.full(int(m.test.sum()), m.fold.index) for m in masks])
    oof = OutOfFold(test_index, fold_of_row)
    for m in masks:
        _check_classes(rows.labels[m.fit], f"target {rows.target} fold {m.fold.index}: the fit rows")
    _baselines(rows, masks, always_up_confidence, oof, progress, task)
    inputs: dict[Any, np.ndarray] = {}
    for family in families:
        _family(rows, datasets, masks, family, factory, split, inputs, oof, progress, task)
    return oof


def _baselines(rows: PooledRows, masks: Sequence[FoldMasks], always_up_confidence: float, oof: OutOfFold,
               progress: Progress, task: TaskID) -> None:
    parts: dict[str, list[np.ndarray]] = {}
    for m in masks:
        progress.update(task, description=f"{rows.target} baselines: fold {m.fold.index + 1}/{len(masks)}")
        for baseline in make_baselines(always_up_confidence):
            started = time.perf_counter()
            baseline.fit(rows.features[m.train], rows.return_24h[m.train], rows.labels[m.train])
            fitted = time.perf_counter()
            p = baseline.predict_proba(rows.features[m.test], rows.return_24h[m.test])
            parts.setdefault(baseline.name, []).append(p)
            timing = oof.timings.setdefault(baseline.name, {"fit_seconds": 0.0, "predict_seconds": 0.0})
            timing["fit_seconds"] += fitted - started
            timing["predict_seconds"] += time.perf_counter() - fitted
            oof.descriptions[baseline.name], oof.kinds[baseline.name] = baseline.description, "baseline"
        progress.advance(task)
    for name, chunks in parts.items():
        oof.probabilities[name] = np.concatenate(chunks)


def _family(rows: PooledRows, datasets: Sequence[SymbolDataset], masks: Sequence[FoldMasks], family: str,
            factory: ModelFactory, split: FamilySplit, inputs: dict[Any, np.ndarray], oof: OutOfFold,
            progress: Progress, task: TaskID) -> None:
    timing = {"prepare_seconds": 0.0, "fit_seconds": 0.0, "calibrate_seconds": 0.0, "predict_seconds": 0.0}
    model = factory(family, rows.target)
    key = prepare_key(model, family)
    started = time.perf_counter()
    if key not in inputs:
        inputs[key] = pool_inputs(model, datasets, rows)
    X = inputs[key]
    timing["prepare_seconds"] = time.perf_counter() - started
    calibrated, raw, importances, fold_seconds = [], [], [], []
    variant_parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for m in masks:
        progress.update(task, description=f"{rows.target} {family}: fold {m.fold.index + 1}/{len(masks)}")
        model = factory(family, rows.target)
        t0 = time.perf_counter()
        train_on_fold(model, X, rows, m, family, split)
        t1 = time.perf_counter()
        calibrator = fit_calibrator(_calibrator_of(model, split, family), m, rows.labels,
                                     lambda rows_of, fitted=model: fitted.predict_proba(X[rows_of]))
        t2 = time.perf_counter()
        p_raw = model.predict_proba(X[m.test])
        raw.append(p_raw)
        calibrated.append(calibrator.transform(p_raw))
        t3 = time.perf_counter()
        _predict_variants(model, X, rows, m, family, split, variant_parts)
        timing["fit_seconds"] += t1 - t0
        timing["calibrate_seconds"] += t2 - t1
        timing["predict_seconds"] += t3 - t2
        fold_seconds.append(t1 - t0)
        importances.append(model.get_feature_importance())
        progress.advance(task)
    oof.probabilities[family] = np.concatenate(calibrated)
    oof.uncalibrated[family] = np.concatenate(raw)
    oof.descriptions[family] = f"{type(model).__name__}, {_calibrator_of(model, split, family)} calibration"
    oof.kinds[family] = "family"
    oof.timings[family] = timing
    oof.fold_fit_seconds[family] = fold_seconds
    oof.feature_importance[family] = _mean_importance([i for i in importances if i])
    oof.hyperparameters[family] = model.get_hyperparameters()
    oof.last_models[family] = model
    _record_variants(oof, family, type(model).__name__, model, split, variant_parts)


def train_on_fold(model: BasePredictor, X: np.ndarray, rows: PooledRows, m: FoldMasks, family: str,
                   split: FamilySplit) -> None:
    """Fit ``model`` on the fold's fit rows; one that stops early validates on their newest,
    purged share (:class:`FamilySplit`), and one that calibrates itself fits its combiners on the
    calibration slice, the rows another family's calibrator gets."""
    if getattr(model, "calibrates_itself", False):
        _check_classes(rows.labels[m.fit], f"target {rows.target} fold {m.fold.index}: {family}'s fit rows")
        times = {"validation_open_time_ms": rows.open_time_ms[m.calibration]} if model.uses_validation_times else {}
        model.train(X[m.fit], rows.labels[m.fit], validation_data=(X[m.calibration], rows.labels[m.calibration]),
                    **times)
    elif getattr(model, "uses_validation", False):
        fit, validation = calibration_split(m.fit, rows.open_time_ms, split.validation_fraction, split.horizon_ms)
        _check_classes(rows.labels[fit], f"target {rows.target} fold {m.fold.index}: {family}'s fit rows")
        model.train(X[fit], rows.labels[fit],
                    validation_data=(X[validation], rows.labels[validation]) if validation.any() else None)
    else:
        model.train(X[m.fit], rows.labels[m.fit])


def _calibrator_of(model: BasePredictor, split: FamilySplit, variant: str) -> CalibratorName:
    """The calibrator of a family or variant: ``none`` for one that calibrates itself (a member alone,
    ``member_*``, is calibrated like a family)."""
    alone = variant.startswith("member_")
    return "none" if getattr(model, "calibrates_itself", False) and not alone else split.calibrator


def fit_calibrator(name: CalibratorName, m: FoldMasks, labels: np.ndarray,
                    predict: Callable[[np.ndarray], np.ndarray]) -> Calibrator:
    """A calibrator fitted on ``predict``'s answers for the fold's calibration rows (given as a
    mask); ``none`` when the fold has no calibration rows."""
    calibrator = make_calibrator(name if m.calibration.any() else "none")
    calibrator.fit(predict(m.calibration) if m.calibration.any() else np.empty((0, 3)), labels[m.calibration])
    return calibrator


def _predict_variants(model: BasePredictor, X: np.ndarray, rows: PooledRows, m: FoldMasks, family: str,
                      split: FamilySplit, variant_parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]]) -> None:
    """The fold's test rows by each of the model's ``variants`` (and ``adaptive`` when it re-weights
    as outcomes arrive, never before they are known), each calibrated like the family:
    appended to ``variant_parts[<family>_<variant>]`` as (calibrated, raw)."""
    predictors: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        variant: (lambda rows_of, variant=variant: model.predict_strategy(X[rows_of], variant))
        for variant in getattr(model, "variants", tuple)()}
    if hasattr(model, "predict_adaptive"):
        predictors["adaptive"] = lambda rows_of: model.predict_adaptive(
            X[rows_of], rows.labels[rows_of], rows.open_time_ms[rows_of], split.horizon_ms)
    for variant, predict in predictors.items():
        calibrator = fit_calibrator(_calibrator_of(model, split, variant), m, rows.labels, predict)
        p_raw = predict(m.test)
        parts = variant_parts.setdefault(f"{family}_{variant}", ([], []))
        parts[0].append(calibrator.transform(p_raw))
        parts[1].append(p_raw)


def _record_variants(oof: OutOfFold, family: str, model_name: str, model: BasePredictor, split: FamilySplit,
                     variant_parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]]) -> None:
    """Score each variant beside its family: its probabilities, and the family's hyperparameters
    (its fits are the family's, so its own timings are zero)."""
    for name, (variant_calibrated, variant_raw) in variant_parts.items():
        variant = name.removeprefix(family + "_")
        oof.probabilities[name] = np.concatenate(variant_calibrated)
        oof.uncalibrated[name] = np.concatenate(variant_raw)
        oof.descriptions[name] = f"{model_name} {variant}, {_calibrator_of(model, split, variant)} calibration"
        oof.kinds[name] = "family"
        oof.timings[name] = {k: 0.0 for k in oof.timings[family]}
        oof.fold_fit_seconds[name] = [0.0] * len(oof.fold_fit_seconds[family])
        oof.feature_importance[name] = {}
        oof.hyperparameters[name] = oof.hyperparameters[family]
    oof.variants[family] = list(variant_parts)
