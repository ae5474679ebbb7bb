"""Out-of-fold predictions of one target -> its :class:`TargetEvaluation`.

Every model is scored per fold, per symbol, per symbol and fold, and pooled,
each group beside the climatology on the same rows and with its effective
sample (:mod:`bse_predict.evaluation.effective_sample`); its up-vs-down AUC
pooled, per fold, as the mean of folds and on fold-demeaned scores, each with
a block-bootstrap interval (:mod:`bse_predict.evaluation.robust_auc`); then
every model is compared with the reference family and with climatology (and
each ensemble with its best member, and with itself refitted without each
member when it fitted those) by the paired block bootstrap, and the
verdicts are written out in words. Bootstrap blocks are whole days, at least
the label horizon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bse_predict.evaluation.bootstrap import (NEGLIGIBLE, claim_verdict, comparison_verdict, day_blocks,
                                             paired_bootstrap)
from bse_predict.evaluation.schema import (
    EvaluationOptions,
    FoldBoundary,
    GroupMetrics,
    ModelEvaluation,
    PairedComparison,
    TargetEvaluation,
    Timings,
)
from bse_predict.evaluation.effective_sample import non_overlapping_windows
from bse_predict.evaluation.fold_predictions import FoldMasks, OutOfFold
from bse_predict.evaluation.robust_auc import auc_intervals, symbol_auc_intervals
from bse_predict.training.pooling import PooledRows
from bse_predict.evaluation.scoring import group_metrics, reliability_bins
from bse_predict.families.ensemble import WITHOUT
from bse_predict.labels.first_touch import CLASS_NAMES, NONE
from bse_predict.scoring.probabilities import row_brier, row_log_loss

__all__ = ["score_target", "reference_model", "CLAIM_FAMILY"]

CLAIM_FAMILY = "xgboost"
"""The plan claims this family beats random_forest by 5–10%."""
_LOSSES = {"log_loss": row_log_loss, "brier": row_brier}
_HOUR_MS = 3_600_000


def reference_model(families: Sequence[str], preferred: str) -> str:
    """The model every other is compared with: ``preferred`` when evaluated, else the first family,
    else the logistic baseline."""
    if preferred in families:
        return preferred
    return families[0] if families else "logistic"


def _fold_boundaries(rows: PooledRows, masks: Sequence[FoldMasks]) -> tuple[FoldBoundary, ...]:
    out = []
    for m in masks:
        train_times = rows.open_time_ms[m.train]
        calibration_times = rows.open_time_ms[m.calibration]
        test_times = rows.open_time_ms[m.test]
        out.append(FoldBoundary(
            index=m.fold.index, test_start_ms=m.fold.test_start_ms, test_end_ms=m.fold.test_end_ms,
            train_rows=int(m.train.sum()), fit_rows=int(m.fit.sum()), calibration_rows=int(m.calibration.sum()),
            test_rows=int(m.test.sum()),
            first_test_ms=int(test_times.min()) if len(test_times) else None,
            last_test_ms=int(test_times.max()) if len(test_times) else None,
            newest_train_ms=int(train_times.max()) if len(train_times) else None,
            calibration_start_ms=int(calibration_times.min()) if len(calibration_times) else None))
    return tuple(out)


@dataclass(frozen=True)
class _TestRows:
    """The out-of-fold test rows of one target, the same for every model."""

    labels: np.ndarray
    symbols: np.ndarray
    folds: np.ndarray
    climatology: np.ndarray
    symbol_names: Sequence[str]
    n_folds: int
    blocks: np.ndarray
    block_days: int
    effective: dict[tuple[int | None, int | None], dict[str, int]]
    """(symbol, fold), ``None`` for all -> the effective sample fields of that group."""


def _group_mask(symbols: np.ndarray, folds: np.ndarray, symbol: int | None, fold: int | None) -> np.ndarray:
    """The rows of one symbol and fold; ``None`` for every symbol or every fold."""
    mask = np.ones(len(symbols), dtype=bool)
    if symbol is not None:
        mask &= symbols == symbol
    if fold is not None:
        mask &= folds == fold
    return mask


def _test_rows(rows: PooledRows, oof: OutOfFold, n_folds: int, horizon_hours: int, block_days: int) -> _TestRows:
    labels = rows.labels[oof.test_index]
    symbols = rows.symbol_index[oof.test_index]
    times = rows.open_time_ms[oof.test_index]
    horizon_ms = horizon_hours * _HOUR_MS

    def effective(mask: np.ndarray) -> dict[str, int]:
        touched = mask & (labels != NONE)
        return {"effective_outcomes": non_overlapping_windows(times[mask], symbols[mask], horizon_ms),
                "effective_touched": non_overlapping_windows(times[touched], symbols[touched], horizon_ms)}

    keys = [(s, k) for s in [None, *range(len(rows.symbols))] for k in [None, *range(n_folds)]]
    return _TestRows(labels, symbols, oof.fold_of_row, oof.probabilities["climatology"], rows.symbols, n_folds,
                     day_blocks(times, block_days), block_days,
                     {(s, k): effective(_group_mask(symbols, oof.fold_of_row, s, k)) for s, k in keys})


def _model_evaluation(name: str, p: np.ndarray, uncalibrated: np.ndarray | None, test: _TestRows, oof: OutOfFold,
                      options: EvaluationOptions) -> ModelEvaluation:
    def metrics(symbol: int | None, fold: int | None, probabilities: np.ndarray = p) -> GroupMetrics | None:
        mask = _group_mask(test.symbols, test.folds, symbol, fold)
        if not mask.any():
            return None
        g = group_metrics(probabilities[mask], test.labels[mask], test.climatology[mask], options.thresholds,
                          options.reliability_bins)
        return g.model_copy(update=test.effective[(symbol, fold)])

    by_fold = tuple(metrics(None, k) for k in range(test.n_folds))
    by_symbol = {s: metrics(i, None) for i, s in enumerate(test.symbol_names)}
    fold_aucs = [g.auc_up_vs_down for g in by_fold if g is not None and g.auc_up_vs_down is not None]
    return ModelEvaluation(
        name=name, kind=oof.kinds[name], description=oof.descriptions[name],  # type: ignore[arg-type]
        pooled=metrics(None, None),  # type: ignore[arg-type]
        pooled_uncalibrated=metrics(None, None, uncalibrated) if uncalibrated is not None else None,
        auc_within_fold_mean=float(np.mean(fold_aucs)) if fold_aucs else None,
        auc=auc_intervals(p, test.labels, test.folds, test.n_folds, test.blocks, test.block_days,
                          options.bootstrap_samples, options.confidence_level, options.seed),
        auc_by_symbol=symbol_auc_intervals(p, test.labels, test.folds, test.n_folds, test.symbols, test.symbol_names,
                                           test.blocks, test.block_days, options.bootstrap_samples,
                                           options.confidence_level, options.seed),
        by_fold=by_fold,
        by_symbol={s: g for s, g in by_symbol.items() if g is not None},
        by_symbol_fold={s: tuple(metrics(i, k) for k in range(test.n_folds)) for i, s in enumerate(test.symbol_names)},
        reliability={CLASS_NAMES[k]: reliability_bins(p, test.labels, k, options.reliability_bins) for k in range(3)},
        feature_importance=oof.feature_importance.get(name, {}),
        timings=Timings(**oof.timings.get(name, {})),
        fold_fit_seconds=tuple(oof.fold_fit_seconds.get(name, ())),
    )


def _paired(model: str, against: str, metric: str, test: _TestRows, oof: OutOfFold,
            options: EvaluationOptions) -> PairedComparison:
    loss = _LOSSES[metric]
    difference, improvement = paired_bootstrap(
        loss(oof.probabilities[model], test.labels), loss(oof.probabilities[against], test.labels), test.blocks,
        options.bootstrap_samples, options.confidence_level, options.seed)
    everything = test.effective[(None, None)]
    return PairedComparison(model=model, reference=against, metric=metric,  # type: ignore[arg-type]
                            rows=len(test.labels), effective_outcomes=everything["effective_outcomes"],
                            blocks=int(test.blocks.max()) + 1, block_days=test.block_days,
                            mean_difference=difference, relative_improvement=improvement)


def _comparisons(names: Sequence[str], reference: str, test: _TestRows, oof: OutOfFold,
                 options: EvaluationOptions) -> tuple[PairedComparison, ...]:
    """Every model against the reference, and every model against climatology."""
    pairs = [(name, reference) for name in names if name != reference]
    pairs += [(name, "climatology") for name in names
              if name != "climatology" and (name, "climatology") not in pairs]
    return tuple(_paired(model, against, metric, test, oof, options)
                 for model, against in pairs for metric in _LOSSES)


def _against_best_member(families: Sequence[str], test: _TestRows, oof: OutOfFold,
                         options: EvaluationOptions) -> tuple[PairedComparison, ...]:
    """Each ensemble strategy against its best member (lowest pooled log loss): the members alone
    (``<ensemble>_member_*``, trained on the same rows) when scored, else the other families."""
    out: list[PairedComparison] = []
    for ensemble, variants in oof.variants.items():
        if not variants:  # a plain family has no strategies and no members to beat
            continue
        members = [v for v in variants if v.startswith(f"{ensemble}_member_")]
        members = members or [f for f in families if f != ensemble and f not in variants]
        if not members:
            continue
        best = min(members, key=lambda n: float(np.mean(row_log_loss(oof.probabilities[n], test.labels))))
        strategies = [v for v in variants if v not in members and not v.startswith(f"{ensemble}_{WITHOUT}")]
        out += [_paired(model, best, "log_loss", test, oof, options) for model in [ensemble, *strategies]]
    return tuple(out)


def _against_each_member_left_out(test: _TestRows, oof: OutOfFold,
                                  options: EvaluationOptions) -> tuple[PairedComparison, ...]:
    """Each ensemble against its weighted mixture refitted without one member (``<ensemble>_weighted_without_*``,
    fitted with ``member_ablation``): a positive improvement is what that member earns."""
    return tuple(_paired(ensemble, variant, "log_loss", test, oof, options)
                 for ensemble, variants in oof.variants.items()
                 for variant in variants if variant.startswith(f"{ensemble}_{WITHOUT}"))


def _member_earns(c: PairedComparison) -> str:
    """The verdict in words, with the log loss difference in nats: members with weight 0 differ by far less
    than 0.01%."""
    member = c.reference.removeprefix(f"{c.model}_{WITHOUT}")
    ri, nats = c.relative_improvement, c.mean_difference
    outcome = {"better": f"{member} earns its place in {c.model}",
               "worse": f"{c.model} is better without {member}",
               "negligible": f"{member} changes {c.model} negligibly (within ±{NEGLIGIBLE:.2%})"}.get(
        comparison_verdict(ri), f"{member} makes no significant difference to {c.model}")
    return (f"{outcome} (log loss with it against the weighted mixture refitted without it): "
            f"{nats.estimate:+.6f} [{nats.lower:+.6f}, {nats.upper:+.6f}] nats, relative improvement "
            f"{ri.estimate:+.3%} [{ri.lower:+.3%}, {ri.upper:+.3%}]")


def _beats_best_member(c: PairedComparison, margin: float = 0.03) -> str:
    """The plan's hope, "more than 3% better than the best member", against the interval."""
    ri = c.relative_improvement
    ci = f"{ri.estimate:+.2%} [{ri.lower:+.2%}, {ri.upper:+.2%}]"
    verdict = ("supported" if ri.lower > margin else "rejected" if ri.upper < margin else "inconclusive")
    return (f"claim \"{c.model} is more than {margin:.0%} better than its best member {c.reference}\" "
            f"(log loss): {verdict}, relative improvement {ci}")


def _verdicts(comparisons: Sequence[PairedComparison], reference: str, families: Sequence[str],
              level: float) -> tuple[str, ...]:
    lines = []
    for c in comparisons:
        left_out = WITHOUT in c.model or WITHOUT in c.reference  # worded once, by _member_earns
        if c.metric == "log_loss" and (c.reference == reference or c.model in families) and not left_out:
            ri = c.relative_improvement
            outcome = {"better": f"{c.model} beats {c.reference}", "worse": f"{c.model} loses to {c.reference}",
                       "negligible": f"{c.model} and {c.reference} differ negligibly (within ±{NEGLIGIBLE:.2%})"}.get(
                comparison_verdict(ri), f"no significant difference between {c.model} and {c.reference}")
            lines.append(f"{outcome} on log loss at {level:.0%}: relative improvement of {c.model} "
                         f"{ri.estimate:+.2%} [{ri.lower:+.2%}, {ri.upper:+.2%}]")
    claim = [c for c in comparisons if c.model == CLAIM_FAMILY and c.reference == "random_forest"]
    if claim:
        for c in claim:
            lines.append(f"claim \"XGBoost beats RandomForest by 5–10%\" ({c.metric}): "
                         f"{claim_verdict(c.relative_improvement)}")
    else:
        lines.append("claim \"XGBoost beats RandomForest by 5–10%\": not tested here (needs both xgboost and "
                     "random_forest among the evaluated families)")
    return tuple(lines)


def score_target(rows: PooledRows, masks: Sequence[FoldMasks], oof: OutOfFold, families: Sequence[str],
                 target_pct: float, horizon_hours: int, options: EvaluationOptions) -> TargetEvaluation:
    block_days = options.bootstrap_block_days or max(1, math.ceil(horizon_hours / 24))
    test = _test_rows(rows, oof, len(masks), horizon_hours, block_days)
    families = list(families) + [v for f in families for v in oof.variants.get(f, [])]
    names = list(families) + [n for n in oof.probabilities if oof.kinds[n] == "baseline"]
    models = {name: _model_evaluation(name, oof.probabilities[name], oof.uncalibrated.get(name), test, oof, options)
              for name in names}
    reference = reference_model(families, options.reference_family)
    against_best = _against_best_member(families, test, oof, options)
    left_out = _against_each_member_left_out(test, oof, options)
    comparisons = _comparisons(names, reference, test, oof, options) + against_best + left_out
    return TargetEvaluation(
        target=rows.target,
        label_shares=tuple(np.bincount(test.labels, minlength=3) / len(test.labels)),  # type: ignore[arg-type]
        break_even_hit_rate=0.5 + options.round_trip_cost_pct / (2 * target_pct),
        folds=_fold_boundaries(rows, masks),
        models=models,
        reference=reference,
        comparisons=comparisons,
        verdicts=_verdicts(comparisons, reference, families, options.confidence_level)
        + tuple(_beats_best_member(c) for c in against_best) + tuple(_member_earns(c) for c in left_out),
    )
