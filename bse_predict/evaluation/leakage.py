"""The leakage guard: an up-vs-down AUC that no honest hourly model reaches, told apart from small-sample noise.

Honest hourly crypto AUC is 0.50 to 0.56; a model that ranks up against down
better than the limit (0.65 by default) is leaking until proven otherwise (a
label read into the inputs, a purge that does not hold). The guard reads the
fold-demeaned AUC (:mod:`bse_predict.evaluation.robust_auc`), which a score
tracking each fold's base rate cannot inflate, and fires only when its whole
block-bootstrap interval lies beyond the limit: the lower bound above
``limit``, or the upper bound below ``1 - limit``. On a small market the
point AUC swings widely from fold to fold over a handful of independent
72-hour episodes; the interval says how far that goes.

Each finding names the model, the target and the folds whose own interval
lies beyond the limit (or, when none does alone, the fold farthest from 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping

from bse_predict.evaluation.fold_predictions import EvaluationError
from bse_predict.evaluation.schema import (
    EvaluationReport,
    Interval,
    LeakageCheck,
    LeakageFinding,
    ModelEvaluation,
    TargetEvaluation,
)

__all__ = ["GUARD_STATISTIC", "LeakageSuspected", "check_leakage", "leakage_verdict"]

GUARD_STATISTIC = "fold-demeaned up-vs-down AUC, block-bootstrap interval"


class LeakageSuspected(EvaluationError):
    """An AUC interval beyond the guard's limit; ``report`` is the evaluation, already written."""

    def __init__(self, message: str, report: EvaluationReport) -> None:
        super().__init__(message)
        self.report = report


def _beyond(interval: Interval | None, limit: float) -> bool:
    return interval is not None and (interval.lower > limit or interval.upper < 1.0 - limit)


def _ci(interval: Interval | None) -> str:
    return "–" if interval is None else f"{interval.estimate:.3f} [{interval.lower:.3f}, {interval.upper:.3f}]"


def _finding(name: str, target: str, model: ModelEvaluation, limit: float) -> LeakageFinding | None:
    auc = model.auc
    if auc is None or auc.fold_demeaned is None or not _beyond(auc.fold_demeaned, limit):
        return None
    folds = tuple(k for k, interval in enumerate(auc.by_fold) if _beyond(interval, limit))
    if not folds:
        scored = [(abs(i.estimate - 0.5), k) for k, i in enumerate(auc.by_fold) if i is not None]
        folds = (max(scored)[1],) if scored else ()
    return LeakageFinding(model=name, target=target, auc=auc.fold_demeaned, folds=folds)


def _describe(finding: LeakageFinding, model: ModelEvaluation, limit: float) -> str:
    by_fold = model.auc.by_fold if model.auc is not None else ()
    side = f"above {limit:.2f}" if finding.auc.lower > limit else f"below {1 - limit:.2f}"
    return (f"{finding.model} on target {finding.target}, fold {', '.join(map(str, finding.folds)) or '–'}: "
            f"fold-demeaned AUC {_ci(finding.auc)} lies wholly {side} "
            f"(per fold: {'; '.join(f'{k}: {_ci(i)}' for k, i in enumerate(by_fold))})")


def check_leakage(targets: Mapping[str, TargetEvaluation], limit: float | None) -> LeakageCheck:
    """The guard over every model of every target; ``limit`` ``None`` turns it off."""
    if limit is None:
        return LeakageCheck(auc_limit=None, passed=True)
    findings, lines = [], []
    for target, result in targets.items():
        for name, model in result.models.items():
            if (finding := _finding(name, target, model, limit)) is not None:
                findings.append(finding)
                lines.append(_describe(finding, model, limit))
    return LeakageCheck(auc_limit=limit, passed=not findings, failures=tuple(lines), statistic=GUARD_STATISTIC,
                        findings=tuple(findings))


def leakage_verdict(check: LeakageCheck, confidence_level: float) -> str:
    """One sentence: what the guard concluded."""
    if check.auc_limit is None:
        return "Leakage guard turned off."
    band = f"[{1 - check.auc_limit:.2f}, {check.auc_limit:.2f}]"
    if check.passed:
        return (f"No leakage suspected: the {confidence_level:.0%} interval of every model's fold-demeaned "
                f"up-vs-down AUC reaches into {band}.")
    named = ", ".join(f"{f.model} at {f.target} (fold {', '.join(map(str, f.folds)) or '–'})" for f in check.findings)
    return (f"LEAKAGE SUSPECTED: the {confidence_level:.0%} interval of the fold-demeaned up-vs-down AUC lies "
            f"wholly outside {band} for {named}. Honest hourly AUC is 0.50-0.56.")
