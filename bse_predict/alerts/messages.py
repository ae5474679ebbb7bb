"""The words of every Telegram message: alert, follow-up, catch-up note, digest, daily summary (HTML).

Each function returns Telegram HTML where every value from a message is
escaped and every line closes the tags it opens, so
:func:`bse_predict.alerts.telegram_text.split_message` may cut between any two lines.
Times are UTC and come from the messages, never from the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from bse_predict.alerts.rules import AlertCall, target_sort_key
from bse_predict.alerts.summary_stats import GroupStats, SummaryStats
from bse_predict.candles.schema import Outcome, Prediction
from bse_predict.alerts.telegram_text import escape_html
from bse_predict.explain.explanation import Explanation, explanation_line

__all__ = ["format_alert", "format_followup", "format_catchup", "format_digest", "format_summary", "summary_caption",
           "format_price", "format_utc"]

_ARROW = {"up": "⬆️", "down": "⬇️"}
_SIGNAL_MARK = {"STRONG_BUY": "🟢", "LONG": "🟢", "NEUTRAL": "⚪", "SHORT": "🔴", "STRONG_SELL": "🔴"}


def format_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_price(price: float) -> str:
    """Enough digits to be useful at any price: 93576.0 -> 93,576.00; 0.3217 -> 0.321700."""
    if price >= 100:
        return f"{price:,.2f}"
    if price >= 1:
        return f"{price:,.4f}"
    return f"{price:.6g}" if price < 1e-4 else f"{price:.6f}"


def _pct(p: float) -> str:
    return f"{100 * p:.0f}%"


def _barrier(target: str, direction: str) -> str:
    return f"{'+' if direction == 'up' else '-'}{target}"


def _hours(ms: int) -> str:
    hours = ms / 3_600_000
    return f"{hours:.0f} h" if hours >= 1 and hours == int(hours) else f"{hours:.1f} h"


def format_alert(call: AlertCall, explanation: Explanation | None = None) -> str:
    """The alert: which barrier first, how sure, at what price, what pushed the call (when explained), from
    which model."""
    e = escape_html
    lines = [
        f"{_SIGNAL_MARK[call.signal]} <b>{e(call.symbol)} {e(_barrier(call.target, call.direction))} first</b>"
        f" · {e(call.signal)}",
        f"p(+{e(call.target)} first) {_pct(call.p_up)} · p(-{e(call.target)} first) {_pct(call.p_down)}"
        f" · neither {_pct(call.p_none)}",
        f"confidence {_pct(call.confidence)} · price {e(format_price(call.close))}",
        f"candle {e(format_utc(call.open_time))} · horizon {call.horizon_hours} h",
    ]
    line = None if explanation is None else explanation_line(explanation)
    if line is not None:
        lines.append(f"🔎 {e(line)}")
    lines.append(f"model <code>{e(call.model_name)}</code> {e(call.model_version)} · {e(call.variant)}")
    if call.degraded:
        lines.append("⚠️ <i>degraded: a fallback model answered</i>")
    return "\n".join(lines)


def _what_happened(call: AlertCall, outcome: Outcome) -> str:
    """"✅ +2% first, after 5 h", "❌ -2% first, after 1 h" or "⏸ neither ±2% within 72 h"."""
    e = escape_html
    if outcome.outcome == "none":
        return f"⏸ neither ±{e(call.target)} within {call.horizon_hours} h"
    mark = "✅" if outcome.outcome == call.direction else "❌"
    took = _hours(outcome.resolved_at - call.decided_at_ms)
    return f"{mark} {e(_barrier(call.target, outcome.outcome))} first, after {took}"


def format_followup(call: AlertCall, outcome: Outcome, caught_up: bool = False) -> str:
    """The reply to an alert once its answer is known: what happened and after how long.

    ``caught_up``: the call went out in a catch-up note, not as an alert of its own, so the
    reply names the call's candle (the note lists several calls).
    """
    e = escape_html
    lines = [
        f"{_what_happened(call, outcome)} · <b>{e(call.symbol)}</b>",
        f"called {e(call.direction)} at {_pct(call.probability)} · resolved {e(format_utc(outcome.resolved_at))}",
    ]
    if caught_up:
        lines.append(f"<i>from the catch-up note: candle {e(format_utc(call.open_time))}</i>")
    return "\n".join(lines)


def format_catchup(calls: Sequence[tuple[AlertCall, Outcome | None]], stale_after_hours: float) -> str:
    """One note for calls that were too old to be sent as alerts: one line per call, oldest first.

    A call whose outcome is already known says what happened; the others get
    their follow-up later, as a reply to this note.
    """
    if not calls:
        raise ValueError("a catch-up note needs at least one call")
    e = escape_html
    ordered = sorted(calls, key=lambda c: (c[0].open_time, c[0].symbol, target_sort_key(c[0].target)))
    first, last = ordered[0][0].open_time, ordered[-1][0].open_time
    noun = "call" if len(ordered) == 1 else "calls"
    lines = [
        f"⏪ <b>Catch-up</b> · {len(ordered)} {noun} not sent as alerts",
        f"candles {e(format_utc(first))} to {e(format_utc(last))}",
        f"<i>each was more than {e(_hours(round(stale_after_hours * 3_600_000)))} old when it could be sent;"
        " outcomes still open are answered in replies</i>",
        "",
    ]
    for call, outcome in ordered:
        result = f" → {_what_happened(call, outcome)}" if outcome is not None else ""
        lines.append(
            f"{_SIGNAL_MARK[call.signal]} <b>{e(call.symbol)}</b> {e(_barrier(call.target, call.direction))}"
            f" · {e(call.signal)} {_pct(call.probability)} · {e(format_utc(call.open_time)[5:16])}"
            f" · {e(format_price(call.close))}{result}")
    return "\n".join(lines)


def format_digest(period_start_ms: int, every_hours: int, predictions: Sequence[Prediction],
                  alerted: Iterable[tuple[str, str]]) -> str:
    """Every symbol and target of one period, the newest prediction of each symbol.

    ``alerted`` holds (prediction id, target) pairs that were alerted: they get a bell.
    """
    e = escape_html
    bells = set(alerted)
    versions = sorted({f"{p.model.name} {p.model.version}" for p in predictions})
    span = "hour" if every_hours == 1 else f"{every_hours} h"
    lines = [
        f"🕐 <b>Digest</b> · {span} from {e(format_utc(period_start_ms))}",
        f"{len(predictions)} symbols · model {e(', '.join(versions))}",
    ]
    for p in sorted(predictions, key=lambda p: p.symbol):
        flags = " ⚠️ degraded" if p.degraded else ""
        lines.append("")
        lines.append(f"<b>{e(p.symbol)}</b> {e(format_price(p.close))} · {e(format_utc(p.open_time)[11:])}{flags}")
        for target in sorted(p.targets, key=target_sort_key):
            part = p.targets[target]
            bell = " 🔔" if (p.id, target) in bells else ""
            lines.append(
                f"  {e(target):>3} {_SIGNAL_MARK[part.signal]} {e(part.signal)} {_ARROW[part.direction]}"
                f" up {_pct(part.p_up)} · down {_pct(part.p_down)} · none {_pct(part.p_none)}"
                f" · conf {_pct(part.confidence)}{bell}")
    return "\n".join(lines)


def _stats_line(g: GroupStats) -> str:
    alerts = (f" · alerts {g.alerts} hit {_pct(g.alert_hit_rate)}" if g.alert_hit_rate is not None
              else " · no alerts")
    return (f"{escape_html(g.name)}: hit {_pct(g.hit_rate)} vs base {_pct(g.base_rate)}"
            f" ({g.edge * 100:+.1f} pts) · Brier {g.brier:.3f} vs {g.brier_base:.3f} · n {g.n}{alerts}")


def format_summary(day_start_ms: int, stats: SummaryStats | None, window_days: int) -> str:
    """The daily summary: live scores of the outcomes resolved in the trailing window."""
    e = escape_html
    head = f"📊 <b>Daily summary</b> · {e(format_utc(day_start_ms)[:10])}"
    if stats is None:
        return "\n".join([head, f"no prediction resolved in the last {window_days} days"])
    lines = [
        head,
        f"outcomes resolved {e(format_utc(stats.start_ms))} to {e(format_utc(stats.end_ms))}",
        "<i>hit = the called side touched first; base = always calling the more frequent side</i>",
        "",
        f"<b>{_stats_line(stats.overall)}</b>",
        "",
        "<b>By target</b>",
        *(f"  {_stats_line(g)}" for g in stats.by_target),
        "",
        "<b>By symbol</b>",
        *(f"  {_stats_line(g)}" for g in stats.by_symbol),
        "",
        "<b>Calibration</b> (called side: forecast → observed)",
        *(f"  {b.lower:.1f}–{b.upper:.1f}: {_pct(b.mean_forecast)} → {_pct(b.observed)} · n {b.n}"
          for b in stats.reliability),
    ]
    lines.append("")
    for label, side in (("🏆 best", "best"), ("🪫 worst", "worst")):
        named = [(kind, getattr(stats.ranking[kind], side)) for kind in ("symbol", "target", "pair")]
        shown = [f"{kind} {escape_html(g.name)} ({g.edge * 100:+.1f} pts, n {g.n})" for kind, g in named if g is not None]
        if shown:
            lines.append(f"{label}: " + " · ".join(shown))
    if stats.ranking["pair"].best is None:
        lines.append("too few outcomes per symbol and target to rank them")
    return "\n".join(lines)


def summary_caption(day_start_ms: int, stats: SummaryStats) -> str:
    """The chart's caption (Telegram allows 1024 characters there)."""
    o = stats.overall
    return (f"📊 {escape_html(format_utc(day_start_ms)[:10])}: hit {_pct(o.hit_rate)} vs base {_pct(o.base_rate)},"
            f" Brier {o.brier:.3f} vs {o.brier_base:.3f}, n {o.n}")
