"""The daily summary's chart: hit rate beside base rate per target, and the reliability diagram.

matplotlib belongs to the ``train`` extra, not to a serving install: it is
imported here, inside the drawing function, and only when a summary is due.
Without it the summary goes out as text and the log says so once.
"""

from __future__ import annotations

import io
import logging

from bse_predict.alerts.summary_stats import SummaryStats

__all__ = ["summary_chart_png"]

log = logging.getLogger(__name__)

_warned = False


def summary_chart_png(stats: SummaryStats, title: str) -> bytes | None:
    """The chart as PNG bytes, or None when matplotlib is not installed."""
    global _warned
    try:
        from matplotlib.figure import Figure
    except ImportError:
        if not _warned:
            log.warning("matplotlib is not installed: daily summaries go out as text only")
            _warned = True
        return None

    figure = Figure(figsize=(9, 4), dpi=100)
    bars, reliability = figure.subplots(1, 2)
    groups = [*stats.by_target, stats.overall]
    x = range(len(groups))
    bars.bar([i - 0.2 for i in x], [g.hit_rate for g in groups], width=0.4, label="hit rate")
    bars.bar([i + 0.2 for i in x], [g.base_rate for g in groups], width=0.4, label="base rate")
    bars.set_xticks(list(x), [f"{g.name}\nn={g.n}" for g in groups])
    bars.set_ylim(0, 1)
    bars.set_title("Called side first: model vs base")
    bars.legend(loc="upper right")

    reliability.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    reliability.plot([b.mean_forecast for b in stats.reliability], [b.observed for b in stats.reliability],
                     marker="o")
    for b in stats.reliability:
        reliability.annotate(f"n={b.n}", (b.mean_forecast, b.observed), textcoords="offset points", xytext=(4, -10),
                             fontsize=8)
    reliability.set_xlim(0, 1)
    reliability.set_ylim(0, 1)
    reliability.set_xlabel("forecast probability of the called side")
    reliability.set_ylabel("observed frequency")
    reliability.set_title("Calibration")
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
