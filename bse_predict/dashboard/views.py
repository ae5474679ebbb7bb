"""What each page shows, from the board: plain values for the templates and the chart, no IO."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bse_predict.candles.schema import Prediction
from bse_predict.dashboard.board import Board, Call, SymbolState

__all__ = ["TARGETS_SHOWN", "utc_text", "market_rows", "chart_data", "call_rows", "call_targets", "dead_letter_counts"]

TARGETS_SHOWN = ("1%", "2%", "5%")

_MARKER = {"STRONG_BUY": ("belowBar", "arrowUp", "#0a7d32"), "LONG": ("belowBar", "arrowUp", "#3fae5a"),
           "NEUTRAL": ("aboveBar", "circle", "#8a8f98"), "SHORT": ("aboveBar", "arrowDown", "#d35b4a"),
           "STRONG_SELL": ("aboveBar", "arrowDown", "#a31d12")}


def utc_text(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _row(symbol: str, newest: Prediction) -> dict[str, Any]:
    return {"symbol": symbol, "time": utc_text(newest.open_time), "close": newest.close,
            "version": newest.model.version, "variant": newest.variant, "degraded": newest.degraded,
            "regime": None if newest.regime is None else f"{newest.regime.state} {newest.regime.p:.2f}",
            "targets": {t: newest.targets.get(t) for t in TARGETS_SHOWN}}


def market_rows(board: Board, since_revision: int = -1) -> list[dict[str, Any]]:
    """Every symbol's newest call, by symbol; with ``since_revision``, only those changed after it."""
    return [_row(symbol, state.newest) for symbol, state in sorted(board.symbols.items())
            if state.newest is not None and state.changed_at > since_revision]


def _outcome_mark(call_direction: str, outcome: str | None) -> str:
    if outcome is None:
        return "pending"
    if outcome == "none":
        return "none"
    return "hit" if outcome == call_direction else "miss"


def _target_row(call: Call, target: str) -> dict[str, Any] | None:
    p = call.prediction.targets.get(target)
    if p is None:
        return None
    outcome = call.outcomes.get(target)
    return {"target": target, "time": utc_text(call.prediction.open_time), "open_time": call.prediction.open_time,
            "close": call.prediction.close, "p": p, "version": call.prediction.model.version,
            "degraded": call.prediction.degraded, "outcome": None if outcome is None else outcome.outcome,
            "resolved": None if outcome is None else utc_text(outcome.resolved_at),
            "mark": _outcome_mark(p.direction, None if outcome is None else outcome.outcome)}


def call_rows(state: SymbolState, target: str) -> list[dict[str, Any]]:
    """The symbol's calls, newest first, each with its outcome for ``target`` and, under ``shadow``, the
    shadow version's answer for the same candle (None when it gave none)."""
    shadows = {call.prediction.open_time: call for call in state.shadow_calls}
    rows = []
    for call in reversed(state.calls):
        row = _target_row(call, target)
        if row is not None:
            shadow = shadows.get(call.prediction.open_time)
            rows.append({**row, "shadow": None if shadow is None else _target_row(shadow, target)})
    return rows


def call_targets(call: Call | None) -> list[dict[str, Any]]:
    """One call's answer for each target shown, with its outcome once known; none without a call."""
    if call is None:
        return []
    return [row for target in TARGETS_SHOWN if (row := _target_row(call, target)) is not None]


def chart_data(state: SymbolState, target: str) -> dict[str, Any]:
    """Candles and one marker per call (lightweight-charts' shapes): the call's signal, and its outcome
    once resolved (``hit``: the called side touched first; ``miss``: the other; ``none``: neither)."""
    candles = [{"time": c.open_time // 1000, "open": c.open, "high": c.high, "low": c.low, "close": c.close}
               for c in state.candles]
    markers = []
    for call in state.calls:
        p = call.prediction.targets.get(target)
        if p is None:
            continue
        position, shape, colour = _MARKER[p.signal]
        outcome = call.outcomes.get(target)
        mark = _outcome_mark(p.direction, None if outcome is None else outcome.outcome)
        text = p.signal if outcome is None else f"{p.signal} {outcome.outcome} ({mark})"
        markers.append({"time": call.prediction.open_time // 1000, "position": position, "shape": shape,
                        "color": colour, "text": text, "outcome": None if outcome is None else outcome.outcome})
    return {"candles": candles, "markers": markers,
            "calls": [{"time": c.prediction.open_time // 1000, "close": c.prediction.close} for c in state.calls]}


def dead_letter_counts(board: Board) -> list[tuple[str, int]]:
    return board.dead_letter_counts.most_common()
