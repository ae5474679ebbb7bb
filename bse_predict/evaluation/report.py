"""``report.md``: the evaluation as tables a quant would accept, from the report alone.

Every table shows the baselines in the same columns as the families, on the
same out-of-fold rows; every score has its reference beside it (climatology
for log loss, Brier and ECE; the base rate for accuracy; 0.5 for AUC; the
break-even hit rate for precision).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bse_predict.evaluation.schema import EvaluationReport, GroupMetrics, Interval, TargetEvaluation

__all__ = ["write_report", "render_report", "main_table"]


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _ci(interval: Interval, percent: bool = False) -> str:
    fmt = (lambda x: f"{x:+.2%}") if percent else (lambda x: f"{x:+.5f}")
    return f"{fmt(interval.estimate)} [{fmt(interval.lower)}, {fmt(interval.upper)}]"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _thresholds(g: GroupMetrics) -> list[str]:
    return [f"{_pct(t.precision_touched)} / {_pct(t.coverage)} ({t.calls})" for t in g.thresholds]


def main_table(result: TargetEvaluation) -> list[str]:
    """Pooled out-of-fold metrics of every model, the references in the header row."""
    first = next(iter(result.models.values())).pooled
    header = ["model", "kind", "log loss", "Δ vs clim", "Brier", "BSS", "AUC ↑/↓", "accuracy", "ECE",
              *[f"hit / cov (calls) @{t.threshold:.2f}" for t in first.thresholds]]
    reference = ["*reference*", "", f"clim {first.log_loss_climatology:.4f}", "0",
                 f"clim {first.brier_climatology:.4f}",
                 "0", "0.5", f"base {first.accuracy_base_rate:.3f}", f"clim {first.ece_climatology:.4f}",
                 *[f"break-even {result.break_even_hit_rate:.1%}"] * len(first.thresholds)]
    rows = [reference]
    for name, m in result.models.items():
        g = m.pooled
        rows.append([name, m.kind, _f(g.log_loss), f"{g.log_loss - g.log_loss_climatology:+.4f}", _f(g.brier),
                     f"{g.brier_skill:+.4f}", _f(g.auc_up_vs_down, 3), _f(g.accuracy, 3), _f(g.ece), *_thresholds(g)])
    return _table(header, rows)


def _folds_table(result: TargetEvaluation) -> list[str]:
    return _table(
        ["fold", "first test row", "last test row", "newest train row", "train", "fit", "calibration", "test"],
        [[str(f.index), _when(f.first_test_ms) if f.first_test_ms is not None else "–",
          _when(f.last_test_ms) if f.last_test_ms is not None else "–",
          _when(f.newest_train_ms) if f.newest_train_ms is not None else "–",
          str(f.train_rows), str(f.fit_rows), str(f.calibration_rows), str(f.test_rows)] for f in result.folds])


def _calibration_table(result: TargetEvaluation) -> list[str]:
    rows = []
    for name, m in result.models.items():
        raw, cal = m.pooled_uncalibrated, m.pooled
        if raw is not None:
            rows.append([name, f"{_f(raw.log_loss)} → {_f(cal.log_loss)}", f"{_f(raw.ece)} → {_f(cal.ece)}",
                         f"{_f(raw.auc_up_vs_down, 3)} → {_f(cal.auc_up_vs_down, 3)}",
                         f"{_f(raw.brier_skill)} → {_f(cal.brier_skill)}"])
    return _table(["family", "log loss raw → calibrated", "ECE", "AUC", "BSS"], rows) if rows else []


def _bootstrap_table(result: TargetEvaluation, level: float) -> list[str]:
    rows = [[c.model, c.reference, c.metric, _ci(c.mean_difference), _ci(c.relative_improvement, percent=True)]
            for c in result.comparisons]
    if not rows:
        return []
    block = result.comparisons[0]
    return [f"Paired block bootstrap over {block.blocks} blocks of {block.block_days} days, {level:.0%} "
            "intervals; a negative difference (positive improvement) means the model has the lower loss.", "",
            *_table(["model", "against", "loss", "mean difference per row", "relative improvement"], rows)]


def _per_fold_table(result: TargetEvaluation) -> list[str]:
    header = ["model", *[f"fold {f.index}" for f in result.folds], "mean of folds", "pooled"]
    rows = [[name, *[_f(g.auc_up_vs_down, 3) if g else "–" for g in m.by_fold], _f(m.auc_within_fold_mean, 3),
             _f(m.pooled.auc_up_vs_down, 3)] for name, m in result.models.items()]
    return ["The pooled AUC also rewards a score whose level follows each fold's base rate (climatology's "
            "pooled AUC is not 0.5); the mean of the folds does not.", "", *_table(header, rows)]


def _per_symbol_table(result: TargetEvaluation) -> list[str]:
    symbols = sorted({s for m in result.models.values() for s in m.by_symbol})
    header = ["model", *[f"{s} AUC / BSS" for s in symbols]]
    rows = [[name, *[f"{_f(m.by_symbol[s].auc_up_vs_down, 3)} / {m.by_symbol[s].brier_skill:+.4f}"
                     if s in m.by_symbol else "–" for s in symbols]] for name, m in result.models.items()]
    return _table(header, rows)


def _timings_table(result: TargetEvaluation) -> list[str]:
    rows = [[name, _f(t.prepare_seconds, 2), _f(t.fit_seconds, 2), _f(t.calibrate_seconds, 2),
             _f(t.predict_seconds, 2), _f(t.total_seconds, 2)]
            for name, m in result.models.items() for t in [m.timings]]
    return _table(["model", "prepare s", "fit s (all folds)", "calibrate s", "predict s", "total s"], rows)


def _target_section(result: TargetEvaluation, level: float) -> list[str]:
    shares = ", ".join(f"{n} {s:.1%}" for n, s in zip(("up", "down", "none"), result.label_shares, strict=True))
    lines = [f"## Target {result.target}", "",
             f"Out-of-fold test rows: {next(iter(result.models.values())).pooled.rows}; label shares: {shares}. "
             f"Break-even hit rate of a ±{result.target} bracket after costs: {result.break_even_hit_rate:.1%}.", "",
             "### Pooled out-of-fold metrics", "",
             "AUC: up against down on touched rows, score p_up / (p_up + p_down). BSS: Brier skill against "
             "climatology. hit / cov (calls): precision among touched calls / share of rows called at confidence ≥ t "
             "(confidence = max(p_up, p_down) / (p_up + p_down)).", "",
             *main_table(result), "### Verdicts", "", *[f"- {v}" for v in result.verdicts], ""]
    lines += ["### Folds", "", *_folds_table(result)]
    if calibration := _calibration_table(result):
        lines += ["### Calibration (families, out of fold)", "", *calibration]
    lines += ["### Paired bootstrap", "", *_bootstrap_table(result, level)]
    lines += ["### AUC per fold", "", *_per_fold_table(result)]
    lines += ["### Per symbol", "", *_per_symbol_table(result)]
    lines += ["### Timings", "", *_timings_table(result)]
    return lines


def render_report(report: EvaluationReport) -> str:
    o = report.options
    leak = report.leakage
    lines = [
        "# Walk-forward evaluation", "",
        f"Created {report.created_at:%Y-%m-%d %H:%M} UTC in {report.total_seconds:.1f} s. Horizon "
        f"{report.market['horizon_hours']} h; {o.folds} expanding folds after an initial training share of "
        f"{o.initial_train_fraction:.0%}; purge = horizon; embargo {o.embargo_hours} h after each test block; "
        f"calibrator `{o.calibrator}` fit on the newest {o.calibration_fraction:.0%} of each fold's training rows; "
        f"bootstrap {o.bootstrap_samples} replicates, seed {o.seed}.", "",
        "## Leakage check", "",
        ("**LEAKAGE SUSPECTED**: " + "; ".join(leak.failures)) if not leak.passed else
        (f"Passed: every pooled AUC lies within [{1 - leak.auc_limit:.2f}, {leak.auc_limit:.2f}]."
         if leak.auc_limit is not None else "Turned off."), "",
        "## Data", "",
        *_table(["symbol", "source", "first row", "last row", "rows"],
                [[d.symbol, d.source, _when(d.start_ms), _when(d.end_ms), str(d.rows)] for d in report.data]),
    ]
    for result in report.targets.values():
        lines += _target_section(result, o.confidence_level)
    if report.plots:
        lines += ["## Plots", "", *[f"![{name}]({name})" for name in report.plots], ""]
    if report.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    return "\n".join(lines)


def write_report(report: EvaluationReport, path: Path) -> None:
    path.write_text(render_report(report), encoding="utf-8")
