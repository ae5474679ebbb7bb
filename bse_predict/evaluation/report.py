"""``report.md``: the evaluation as tables a quant would accept, from the report alone.

Every table shows the baselines in the same columns as the families, on the
same out-of-fold rows; every score has its reference beside it (climatology
for log loss, Brier and ECE; the base rate for accuracy; 0.5 for AUC; the
break-even hit rate for precision), every AUC and log-loss difference its
block-bootstrap interval, and every group its effective sample (``n_eff``:
label windows that share no candle). The leakage verdict comes first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bse_predict.evaluation.leakage import leakage_verdict
from bse_predict.evaluation.schema import (
    AucIntervals,
    EvaluationReport,
    GroupMetrics,
    Interval,
    PairedComparison,
    TargetEvaluation,
)

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


def _auc(interval: Interval | None) -> str:
    return "–" if interval is None else f"{interval.estimate:.3f} [{interval.lower:.3f}, {interval.upper:.3f}]"


def _n(rows: int, effective: int | None) -> str:
    return f"{rows} ({effective})" if effective is not None else str(rows)


def _against_climatology(result: TargetEvaluation, name: str) -> PairedComparison | None:
    return next((c for c in result.comparisons
                 if c.model == name and c.reference == "climatology" and c.metric == "log_loss"), None)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _thresholds(g: GroupMetrics) -> list[str]:
    return [f"{_pct(t.precision_touched)} / {_pct(t.coverage)} ({t.calls})" for t in g.thresholds]


def main_table(result: TargetEvaluation) -> list[str]:
    """Pooled out-of-fold metrics of every model, the references in the header row."""
    first = next(iter(result.models.values())).pooled
    header = ["model", "kind", "rows (n_eff)", "log loss", "Δ vs clim [95%]", "Brier", "BSS", "touched (n_eff)",
              "AUC ↑/↓ pooled", "AUC fold-demeaned [95%]", "accuracy", "ECE",
              *[f"hit / cov (calls) @{t.threshold:.2f}" for t in first.thresholds]]
    reference = ["*reference*", "", _n(first.rows, first.effective_outcomes), f"clim {first.log_loss_climatology:.4f}",
                 "0", f"clim {first.brier_climatology:.4f}", "0", _n(first.touched_rows, first.effective_touched),
                 "0.5", "0.5", f"base {first.accuracy_base_rate:.3f}", f"clim {first.ece_climatology:.4f}",
                 *[f"break-even {result.break_even_hit_rate:.1%}"] * len(first.thresholds)]
    rows = [reference]
    for name, m in result.models.items():
        g = m.pooled
        versus = _against_climatology(result, name)
        rows.append([name, m.kind, _n(g.rows, g.effective_outcomes), _f(g.log_loss),
                     _ci(versus.mean_difference) if versus else f"{g.log_loss - g.log_loss_climatology:+.4f}",
                     _f(g.brier), f"{g.brier_skill:+.4f}", _n(g.touched_rows, g.effective_touched),
                     _f(g.auc_up_vs_down, 3), _auc(m.auc.fold_demeaned) if m.auc else "–", _f(g.accuracy, 3),
                     _f(g.ece), *_thresholds(g)])
    return _table(header, rows)


def _folds_table(result: TargetEvaluation) -> list[str]:
    groups = next(iter(result.models.values())).by_fold
    return _table(
        ["fold", "first test row", "last test row", "newest train row", "train", "fit", "calibration",
         "test (n_eff)", "touched (n_eff)"],
        [[str(f.index), _when(f.first_test_ms) if f.first_test_ms is not None else "–",
          _when(f.last_test_ms) if f.last_test_ms is not None else "–",
          _when(f.newest_train_ms) if f.newest_train_ms is not None else "–",
          str(f.train_rows), str(f.fit_rows), str(f.calibration_rows),
          _n(f.test_rows, g.effective_outcomes if g else None),
          _n(g.touched_rows, g.effective_touched) if g else "–"] for f, g in zip(result.folds, groups, strict=True)])


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
    rows = [[c.model, c.reference, c.metric, _n(c.rows, c.effective_outcomes), _ci(c.mean_difference),
             _ci(c.relative_improvement, percent=True)] for c in result.comparisons]
    if not rows:
        return []
    block = result.comparisons[0]
    return [f"Paired block bootstrap over {block.blocks} blocks of {block.block_days} days, {level:.0%} "
            "intervals; a negative difference (positive improvement) means the model has the lower loss.", "",
            *_table(["model", "against", "loss", "rows (n_eff)", "mean difference per row", "relative improvement"],
                    rows)]


def _per_fold_table(result: TargetEvaluation, level: float) -> list[str]:
    groups = next(iter(result.models.values())).by_fold
    header = ["model", *[f"fold {f.index}, touched {_n(g.touched_rows, g.effective_touched) if g else 0}"
                         for f, g in zip(result.folds, groups, strict=True)],
              "mean of folds", "fold-demeaned", "pooled"]
    rows = []
    for name, m in result.models.items():
        if m.auc is None:
            continue
        rows.append([name, *[_auc(i) for i in m.auc.by_fold], _auc(m.auc.within_fold_mean),
                     _auc(m.auc.fold_demeaned), _auc(m.auc.pooled)])
    blocks = next((m.auc for m in result.models.values() if m.auc), None)
    note = f" over {blocks.blocks} blocks of {blocks.block_days} days" if blocks else ""
    return ["Up-vs-down AUC with block-bootstrap intervals" + note + f" ({level:.0%}). The pooled AUC also "
            "rewards a score whose level follows each fold's base rate (climatology's pooled AUC is not 0.5); "
            "the mean of the folds and the fold-demeaned AUC (each fold's mean score subtracted, then pooled) do "
            "not. The leakage guard reads the fold-demeaned interval. n_eff: non-overlapping label windows.", "",
            *_table(header, rows)]


def _symbol_cell(g: GroupMetrics | None, auc: AucIntervals | None) -> str:
    if g is None:
        return "–"
    aucs = (f"{_auc(auc.pooled)} · {_auc(auc.fold_demeaned)}" if auc is not None
            else _f(g.auc_up_vs_down, 3))
    return f"{aucs} / {g.brier_skill:+.4f} ({g.effective_touched} / {g.effective_outcomes})"


def _per_symbol_table(result: TargetEvaluation, level: float) -> list[str]:
    symbols = sorted({s for m in result.models.values() for s in m.by_symbol})
    header = ["model", *[f"{s} AUC pooled · fold-demeaned [{level:.0%}] / BSS (n_eff touched / all)"
                         for s in symbols]]
    rows = [[name, *[_symbol_cell(m.by_symbol.get(s), m.auc_by_symbol.get(s)) for s in symbols]]
            for name, m in result.models.items()]
    return ["Each symbol's rows alone: its AUCs with block-bootstrap intervals over the blocks that symbol "
            "occupies, Brier skill against climatology, and n_eff.", "", *_table(header, rows)]


def _timings_table(result: TargetEvaluation) -> list[str]:
    rows = [[name, _f(t.prepare_seconds, 2), _f(t.fit_seconds, 2), _f(t.calibrate_seconds, 2),
             _f(t.predict_seconds, 2), _f(t.total_seconds, 2)]
            for name, m in result.models.items() for t in [m.timings]]
    return _table(["model", "prepare s", "fit s (all folds)", "calibrate s", "predict s", "total s"], rows)


def _rows_line(g: GroupMetrics) -> str:
    return (f"{g.rows}, touched {g.touched_rows}; effective sample {g.effective_outcomes} non-overlapping label "
            f"windows, {g.effective_touched} touched" if g.effective_outcomes is not None else str(g.rows))


def _leakage_section(report: EvaluationReport) -> list[str]:
    leak = report.leakage
    if leak.auc_limit is None:
        return ["Turned off.", ""]
    if leak.passed:
        return [f"Passed: the {report.options.confidence_level:.0%} interval of every fold-demeaned AUC reaches "
                f"into [{1 - leak.auc_limit:.2f}, {leak.auc_limit:.2f}].", ""]
    return ["**LEAKAGE SUSPECTED**:", "", *[f"- {line}" for line in leak.failures], ""]


def _target_section(result: TargetEvaluation, level: float) -> list[str]:
    shares = ", ".join(f"{n} {s:.1%}" for n, s in zip(("up", "down", "none"), result.label_shares, strict=True))
    lines = [f"## Target {result.target}", "",
             f"Out-of-fold test rows: {_rows_line(next(iter(result.models.values())).pooled)}; label shares: {shares}. "
             f"Break-even hit rate of a ±{result.target} bracket after costs: {result.break_even_hit_rate:.1%}.", "",
             "### Pooled out-of-fold metrics", "",
             "AUC: up against down on touched rows, score p_up / (p_up + p_down); fold-demeaned: each fold's mean "
             "score subtracted first. Δ vs clim: log loss minus climatology's, with its paired block-bootstrap "
             "interval. n_eff: label windows that share no candle. BSS: Brier skill against "
             "climatology. hit / cov (calls): precision among touched calls / share of rows called at confidence ≥ t "
             "(confidence = max(p_up, p_down) / (p_up + p_down)).", "",
             *main_table(result), "### Verdicts", "", *[f"- {v}" for v in result.verdicts], ""]
    lines += ["### Folds", "", *_folds_table(result)]
    if calibration := _calibration_table(result):
        lines += ["### Calibration (families, out of fold)", "", *calibration]
    lines += ["### Paired bootstrap", "", *_bootstrap_table(result, level)]
    lines += ["### AUC per fold", "", *_per_fold_table(result, level)]
    lines += ["### Per symbol", "", *_per_symbol_table(result, level)]
    lines += ["### Timings", "", *_timings_table(result)]
    return lines


def render_report(report: EvaluationReport) -> str:
    o = report.options
    leak = report.leakage
    lines = [
        "# Walk-forward evaluation", "",
        f"**Verdict: {leakage_verdict(leak, o.confidence_level)}**", "",
        f"Created {report.created_at:%Y-%m-%d %H:%M} UTC in {report.total_seconds:.1f} s. Horizon "
        f"{report.market['horizon_hours']} h; {o.folds} expanding folds after an initial training share of "
        f"{o.initial_train_fraction:.0%}; purge = horizon; embargo {o.embargo_hours} h after each test block; "
        f"calibrator `{o.calibrator}` fit on the newest {o.calibration_fraction:.0%} of each fold's training rows; "
        f"bootstrap {o.bootstrap_samples} replicates, seed {o.seed}.", "",
        "## Leakage check", "", *_leakage_section(report),
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
