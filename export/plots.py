"""PNG plots of an evaluation: reliability curves, per-fold AUC, feature importance.

Drawn with :class:`matplotlib.figure.Figure` directly (no pyplot, no global
backend state), from the :class:`EvaluationReport` alone, so plots can be
redrawn from a ``metrics.json``. The regime plots of the ``hmm_regime``
family have a marked hook, :func:`regime_plots`, for the lead to wire.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from export.evaluation_schema import EvaluationReport, ModelEvaluation
from models.labels import CLASS_NAMES

__all__ = ["write_plots", "regime_plots", "target_slug"]

_TOP_FEATURES = 20
_DPI = 110


def target_slug(target: str) -> str:
    """'2%' -> '2pct', for file names."""
    return target.replace("%", "pct").replace(".", "_")


def _style(model: ModelEvaluation) -> dict[str, Any]:
    return {"linestyle": "-" if model.kind == "family" else "--", "marker": "o", "markersize": 3,
            "linewidth": 1.6 if model.kind == "family" else 1.0}


def _reliability(report: EvaluationReport, target: str, path: Path) -> None:
    from matplotlib.figure import Figure

    models = report.targets[target].models
    fig = Figure(figsize=(13, 4.2))
    axes = fig.subplots(1, 3)
    for ax, klass in zip(axes, CLASS_NAMES, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        for name, model in models.items():
            bins = model.reliability[klass]
            if name == "always_up":
                continue
            x, y = [b.mean_predicted for b in bins], [b.observed for b in bins]
            line = ax.plot(x, y, label=name, **{**_style(model), "marker": None})[0]
            total = max(sum(b.rows for b in bins), 1)
            ax.scatter(x, y, s=[4 + 200 * b.rows / total for b in bins], color=line.get_color(), zorder=3)
        ax.set_title(f"{target}: p({klass})")
        ax.set_xlabel("mean predicted")
        ax.set_ylabel("observed share")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    fig.suptitle("Reliability, out of fold (families calibrated); marker area ∝ rows in the bin")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def _fold_auc(report: EvaluationReport, path: Path) -> None:
    from matplotlib.figure import Figure

    targets = list(report.targets)
    fig = Figure(figsize=(5.2 * len(targets), 4))
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    for ax, target in zip(axes, targets, strict=True):
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        for name, model in report.targets[target].models.items():
            if name in ("climatology", "always_up"):
                continue  # constant scores: AUC 0.5 by construction
            aucs = [g.auc_up_vs_down if g is not None and g.auc_up_vs_down is not None else float("nan")
                    for g in model.by_fold]
            ax.plot(range(len(aucs)), aucs, label=name, **_style(model))
        ax.set_title(f"{target}: AUC up vs down per fold")
        ax.set_xlabel("fold (time order)")
        ax.set_ylabel("ROC AUC")
        ax.set_xticks(range(len(report.targets[target].folds)))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def _importance(report: EvaluationReport, target: str, path: Path) -> bool:
    from matplotlib.figure import Figure

    models = {n: m for n, m in report.targets[target].models.items() if m.feature_importance}
    if not models:
        return False
    fig = Figure(figsize=(5.5 * len(models), 6))
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, (name, model) in zip(axes, models.items(), strict=True):
        top = sorted(model.feature_importance.items(), key=lambda kv: kv[1], reverse=True)[:_TOP_FEATURES][::-1]
        ax.barh([k for k, _ in top], [v for _, v in top], color="tab:blue")
        ax.set_title(f"{name} ({target}): top {len(top)}, mean over folds", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return True


def regime_plots(report: EvaluationReport, out_dir: Path, datasets: Sequence[Any] | None,
                 fitted: Mapping[tuple[str, str], Any] | None) -> tuple[list[str], list[str]]:
    """HOOK(hmm_regime): regime plots, for the lead to wire.

    Runs only when "hmm_regime" was evaluated and ``models.regimes`` exists with a
    ``regime_diagnostics`` function. The intended plots: regimes (forward-filtered,
    never Viterbi) over price per symbol, and the transition matrix. Available here:
    ``datasets``, the :class:`models.dataset.SymbolDataset` of the run (close,
    open times, ``sequences()``), and ``fitted[(target, "hmm_regime")]``, the family
    fitted on the newest fold (its ``regimes_`` is the RegimeModel). Returns (plot
    file names, notes); until wired, only a note that says so.
    """
    families = {name for t in report.targets.values() for name, m in t.models.items() if m.kind == "family"}
    if "hmm_regime" not in families:
        return [], []
    try:
        regimes = importlib.import_module("models.regimes")
    except ModuleNotFoundError:
        return [], ["hmm_regime was evaluated but models.regimes does not exist: no regime plots"]
    if not hasattr(regimes, "regime_diagnostics"):
        return [], ["hmm_regime was evaluated but models.regimes has no regime_diagnostics: no regime plots"]
    # HOOK(hmm_regime): call regimes.regime_diagnostics(...) here and draw "regimes over price"
    # and "transition matrix" PNGs into out_dir; return their names.
    return [], ["HOOK(hmm_regime): regime plots are not wired yet (export/plots.py: regime_plots)"]


def write_plots(report: EvaluationReport, out_dir: Path, datasets: Sequence[Any] | None = None,
                fitted: Mapping[tuple[str, str], Any] | None = None) -> tuple[list[str], list[str]]:
    """Draw every plot into ``out_dir``; return (file names, notes)."""
    names = []
    for target in report.targets:
        slug = target_slug(target)
        _reliability(report, target, out_dir / f"reliability_{slug}.png")
        names.append(f"reliability_{slug}.png")
    _fold_auc(report, out_dir / "fold_auc.png")
    names.append("fold_auc.png")
    for target in report.targets:
        name = f"feature_importance_{target_slug(target)}.png"
        if _importance(report, target, out_dir / name):
            names.append(name)
    regime_names, notes = regime_plots(report, out_dir, datasets, fitted)
    return names + regime_names, notes
