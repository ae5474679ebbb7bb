"""What the track record page shows of the board over one period: plain values for the template, no IO.

Per series the scores (:mod:`bse_predict.dashboard.track_record`) with the dots of its reliability diagram
(:mod:`bse_predict.dashboard.charts`), and per live series the equity of its signals
(:mod:`bse_predict.dashboard.equity`) with its curve; the period's span and what bounds it.
"""

from __future__ import annotations

from typing import Any

from bse_predict.dashboard.board import Board
from bse_predict.dashboard.charts import equity_chart, reliability_dots
from bse_predict.dashboard.periods import Period, shown_periods
from bse_predict.dashboard.track_record import BINS
from bse_predict.dashboard.views import utc_text

__all__ = ["RELIABILITY_SIZE", "EQUITY_WIDTH", "EQUITY_HEIGHT", "section"]

RELIABILITY_SIZE = 220
EQUITY_WIDTH, EQUITY_HEIGHT = 440, 160


def section(board: Board, period: Period) -> dict[str, Any]:
    """The track record section's values for ``period``."""
    track = board.track_record
    start_ms, end_ms = track.span_ms(period.hours)
    records = track.records(period.hours)
    equity = board.equity.series(start_ms, end_ms)
    return {
        "period": period.name, "periods": shown_periods(track.keep_hours),
        "span": None if start_ms is None or end_ms is None else (utc_text(start_ms), utc_text(end_ms)),
        "lookback_hours": board.config.lookback_hours,
        "cost_pct": board.equity.cost_pct, "bins": BINS, "reliability_size": RELIABILITY_SIZE,
        "equity_size": (EQUITY_WIDTH, EQUITY_HEIGHT),
        "records": records,
        "reliability": {key: reliability_dots(r.calibration, BINS, RELIABILITY_SIZE) for key, r in records.items()},
        "equity": equity, "waiting": board.waiting_trades(start_ms, end_ms),
        "equity_charts": {key: equity_chart(e.curve, EQUITY_WIDTH, EQUITY_HEIGHT) for key, e in equity.items()},
    }
