"""The report in a few lines: printed by the command and written atop the config block."""

from __future__ import annotations

from bse_predict.evaluation.schema import Interval
from bse_predict.tuning.schema import TuneReport

__all__ = ["summary_lines"]


def _interval(value: Interval) -> str:
    return f"{value.estimate:+.4f} [{value.lower:+.4f}, {value.upper:+.4f}]"


def summary_lines(report: TuneReport) -> list[str]:
    configured = report.default_inner_log_loss
    lines = [
        f"study {report.study_name} ({report.study_file}): {report.trials_total} trials ({report.trials_complete} "
        f"complete, {report.trials_pruned} pruned); best #{report.best_trial} {report.best_params}",
        f"inner folds (searched): best log loss {report.best_inner_log_loss:.4f}, configured "
        f"{'n/a' if configured is None else f'{configured:.4f}'}, climatology {report.climatology_inner_log_loss:.4f}",
        f"outer folds (never searched), log loss per row, differences with "
        f"{report.options.confidence_level:.0%} block-bootstrap intervals:",
    ]
    lines += [f"  {o.target}: tuned {o.log_loss_tuned:.4f}, configured {o.log_loss_default:.4f}, climatology "
              f"{o.log_loss_climatology:.4f}; tuned - configured {_interval(o.tuned_minus_default)}, "
              f"tuned - climatology {_interval(o.tuned_minus_climatology)} ({o.rows} rows, {o.effective_rows} "
              "independent)" for o in report.outer]
    return lines
