"""The backtest report: per model and target, the trade statistics, equity and drawdown plots,
and a side-by-side comparison of two models with a paired significance test.

The comparison pairs the two models' daily P&L (percent, each trade booked on
its exit day) over the same days and draws moving blocks of ``block_days``
days with replacement: a trade lasts up to the horizon and symbols move
together, so days are not independent. The p-value is two-sided, from the
bootstrap distribution of the mean daily difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bse_predict.backtest.trading import Trade, TradeStats, daily_pnl, equity_curve, trade_stats

__all__ = ["ModelBacktest", "build_backtest", "compare_daily", "write_report"]

_DPI = 110


@dataclass(frozen=True)
class ModelBacktest:
    """One served model replayed over the backtest period."""

    label: str  # e.g. "V/ensemble_stacking"
    trades: dict[str, list[Trade]]
    stats: dict[str, TradeStats]
    daily: dict[str, np.ndarray]
    predictions: int
    degraded: int


def build_backtest(label: str, trades: dict[str, list[Trade]], targets: Sequence[str], cost_pct: float,
                   start_ms: int, end_ms: int, symbol_hours: float, predictions: int, degraded: int) -> ModelBacktest:
    from bse_predict.serving.signals import target_pct

    everything = [t for target in targets for t in trades.get(target, [])]
    per = {target: trades.get(target, []) for target in targets}
    stats = {target: trade_stats(per[target], target_pct(target), cost_pct, start_ms, end_ms, symbol_hours)
             for target in targets}
    daily = {target: daily_pnl(per[target], start_ms, end_ms) for target in targets}
    daily["all"] = daily_pnl(everything, start_ms, end_ms)
    return ModelBacktest(label, per, stats, daily, predictions, degraded)


def compare_daily(a: np.ndarray, b: np.ndarray, block_days: int = 7, samples: int = 4000,
                  seed: int = 0) -> dict[str, float]:
    """Mean daily P&L difference a − b with a 95 % moving-block bootstrap interval and p-value."""
    diff = np.asarray(a) - np.asarray(b)
    n = len(diff)
    block = max(1, min(block_days, n))
    starts = np.random.default_rng(seed).integers(0, n - block + 1, size=(samples, -(-n // block)))
    index = (starts[..., None] + np.arange(block)).reshape(samples, -1)[:, :n]
    means = diff[index].mean(axis=1)
    centred = means - means.mean()
    estimate = float(diff.mean())
    p_value = float(np.mean(np.abs(centred) >= abs(estimate))) if np.any(centred) else 1.0
    lower, upper = np.quantile(means, [0.025, 0.975])
    return {"mean_daily_difference_pct": estimate, "lower": float(lower), "upper": float(upper),
            "p_value": p_value, "days": float(n)}


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _table(results: Sequence[ModelBacktest], target: str) -> list[str]:
    lines = ["| model | trades | long/short | hit rate | break-even | win rate | mean net % | total net % | "
             "exposure | Sharpe (±SE) | max DD % |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r.stats[target]
        sharpe = "–" if s.sharpe_annual is None else f"{s.sharpe_annual:.2f} ± {s.sharpe_se:.2f}"
        lines.append(f"| {r.label} | {s.trades} | {s.long}/{s.short} | {_fmt(s.hit_rate)} | "
                     f"{s.break_even_hit_rate:.3f} | {_fmt(s.win_rate)} | {_fmt(s.mean_net_pct)} | "
                     f"{s.total_net_pct:.2f} | {s.exposure:.3f} | {sharpe} | {s.max_drawdown_pct:.2f} |")
    return lines


def _plot(results: Sequence[ModelBacktest], targets: Sequence[str], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(targets), 7))
    axes = fig.subplots(2, len(targets), squeeze=False, sharex="col")
    for col, target in enumerate(targets):
        for r in results:
            times, equity = equity_curve(r.trades[target])
            if not len(times):
                continue
            dates = [datetime.fromtimestamp(t / 1000, UTC) for t in times]
            axes[0, col].plot(dates, equity, linewidth=1.2, drawstyle="steps-post", label=r.label)
            peak = np.maximum.accumulate(np.r_[0.0, equity])[1:]
            axes[1, col].fill_between(dates, equity - peak, 0, alpha=0.3, step="post", label=r.label)
        axes[0, col].set_title(f"target {target}: equity (cumulative net %)")
        axes[1, col].set_title("drawdown (%)")
        axes[0, col].axhline(0, color="grey", linewidth=0.6)
        axes[0, col].legend(fontsize=7)
        for label in axes[1, col].get_xticklabels():
            label.set_rotation(30)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def write_report(out: Path, results: Sequence[ModelBacktest], targets: Sequence[str], meta: dict[str, object],
                 compare: tuple[int, int] | None = None) -> Path:
    """Write ``report.md``, ``equity.png`` and ``metrics.json`` to ``out``; return the report path."""
    out.mkdir(parents=True, exist_ok=True)
    _plot(results, targets, out / "equity.png")
    lines = ["# Backtest", "", *(f"- {k}: {v}" for k, v in meta.items()), "",
             "Hit rate = take profits / (take profits + stops); break-even = 0.5 + cost / 2X. Sharpe: daily "
             "net P&L (zero days included) × √365, ± Lo's standard error √((1 + SR²/2)/T).", ""]
    for target in targets:
        lines += [f"## Target {target}", "", *_table(results, target), ""]
    lines += ["![equity and drawdown](equity.png)", ""]
    comparison = None
    if compare is not None:
        a, b = results[compare[0]], results[compare[1]]
        comparison = {key: compare_daily(a.daily[key], b.daily[key]) for key in [*targets, "all"]}
        lines += [f"## {a.label} against {b.label}", "",
                  "Paired daily net P&L, 7-day moving-block bootstrap (4,000 draws), two-sided p-value.", "",
                  "| target | mean daily difference % | 95% interval | p-value | days |", "|---|---|---|---|---|"]
        for key, c in comparison.items():
            lines.append(f"| {key} | {c['mean_daily_difference_pct']:+.4f} | [{c['lower']:+.4f}, {c['upper']:+.4f}] "
                         f"| {c['p_value']:.3f} | {int(c['days'])} |")
        lines.append("")
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    metrics = {"meta": meta, "models": {r.label: {"predictions": r.predictions, "degraded": r.degraded,
                                                  "targets": {t: asdict(r.stats[t]) for t in targets}}
                                        for r in results},
               "comparison": comparison}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
    return report
