"""PNG plots of an evaluation: reliability curves, per-fold AUC, feature importance.

Drawn with :class:`matplotlib.figure.Figure` directly (no pyplot, no global
backend state), from the :class:`EvaluationReport` alone, so plots can be
redrawn from a ``metrics.json``. The regime plots of the ``hmm_regime``
family come from the model fitted on the newest fold (:func:`regime_plots`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bse_predict.evaluation.schema import EvaluationReport, Interval, ModelEvaluation
from bse_predict.labels.first_touch import CLASS_NAMES

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


def _fold_points(ax: Any, name: str, model: ModelEvaluation, intervals: Sequence[Interval | None]) -> None:
    """One model's per-fold AUC, with its interval as an error bar where there is one (a percentile bound
    on the wrong side of the estimate is drawn at it)."""
    nan = float("nan")
    aucs = [g.auc_up_vs_down if g is not None and g.auc_up_vs_down is not None else nan for g in model.by_fold]
    below = [max(0.0, a - i.lower) if i is not None else nan for a, i in zip(aucs, intervals, strict=True)]
    above = [max(0.0, i.upper - a) if i is not None else nan for a, i in zip(aucs, intervals, strict=True)]
    ax.errorbar(range(len(aucs)), aucs, yerr=[below, above], label=name, capsize=2, **_style(model))


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
            intervals = model.auc.by_fold if model.auc is not None else (None,) * len(model.by_fold)
            _fold_points(ax, name, model, intervals)
        ax.set_title(f"{target}: AUC up vs down per fold, block-bootstrap interval")
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
    """Regimes of the ``hmm_regime`` family fitted on the newest fold: forward-filtered (never
    Viterbi) regimes over each symbol's price, the transition matrix, and the diagnostics
    (persistence, separation of forward returns and volatility) as notes."""
    families = {name for t in report.targets.values() for name, m in t.models.items() if m.kind == "family"}
    fitted_hmm = [(target, model) for (target, family), model in (fitted or {}).items() if family == "hmm_regime"]
    if "hmm_regime" not in families or not fitted_hmm or not datasets:
        return [], []
    from matplotlib.figure import Figure

    from bse_predict.families.regime_diagnostics import regime_diagnostics
    from bse_predict.families.regime_model import history_fields

    target, family_model = fitted_hmm[0]
    regimes = family_model.regimes_
    names, notes = [], []
    fig = Figure(figsize=(10, 2.6 * len(datasets)))
    axes = fig.subplots(len(datasets), 1, squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets, strict=True):
        states = np.argmax(regimes.current_probabilities(dataset.sequences()), axis=1)
        times = dataset.open_time_ms.astype("datetime64[ms]")
        ax.plot(times, dataset.close, color="0.6", linewidth=0.6)
        for index, state in enumerate(regimes.state_names_):
            chosen = states == index
            ax.scatter(times[chosen], dataset.close[chosen], s=1.5, label=state)
        ax.set_title(f"{dataset.symbol}: forward-filtered regime at each hour", fontsize=9)
        ax.set_yscale("log")
        ax.legend(fontsize=7, markerscale=5, loc="upper left")
        diagnostics = regime_diagnostics(regimes, history_fields(dataset.grid_ohlcv))
        notes.append(f"{dataset.symbol} regimes ({target} model): occupancy "
                     + ", ".join(f"{k} {v:.0%}" for k, v in diagnostics["occupancy"].items())
                     + "; mean dwell h " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                     diagnostics["persistence"]["mean_dwell_hours"].items())
                     + f"; forward 24 h volatility differs between regimes p={diagnostics['forward_volatility_24h']['kruskal_p']:.1e}"
                     + f", forward 24 h return p={diagnostics['forward_return_24h']['kruskal_p']:.2g}")
    fig.tight_layout()
    fig.savefig(out_dir / "regimes_over_price.png", dpi=_DPI)
    names.append("regimes_over_price.png")
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    image = ax.imshow(regimes.transmat_, cmap="Blues", vmin=0, vmax=1)
    labels = list(regimes.state_names_)
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for (i, j), value in np.ndenumerate(regimes.transmat_):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("HMM transition matrix (from row to column)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(out_dir / "transition_matrix.png", dpi=_DPI)
    names.append("transition_matrix.png")
    return names, notes


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
