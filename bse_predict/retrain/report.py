"""What a retrain says about each step: the ``control.events`` record and the short operations note.

Statuses, in order: ``retrain_started``, ``retrain_trained``, ``retrain_gated``
(``passed`` true or false), ``retrain_shadowed`` (the workers applied the signed
``shadow``), ``retrain_pruned``; or ``retrain_failed`` with the ``step`` and the
reason (a refused gate included: ``step`` "gate"), after which the fleet is as it
was. The scheduler adds ``retrain_skipped`` (a due run inside the minimum
interval). Pure: the time is passed in.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from bse_predict.control.messages import format_issued_at

__all__ = ["STATUSES", "retrain_event", "ops_note"]

STATUSES = ("retrain_started", "retrain_trained", "retrain_gated", "retrain_shadowed", "retrain_pruned",
            "retrain_failed", "retrain_skipped", "retrain_scheduler_started")

_NOTE_CHARS = 600


def retrain_event(status: str, reason: str, now: datetime, run_id: str, version: str | None,
                  **fields: Any) -> dict[str, Any]:
    """One ``control.events`` record (keyed ``retrain``): status, reason, time, the run and its version."""
    if status not in STATUSES:
        raise ValueError(f"unknown retrain status {status!r}")
    return {"status": status, "reason": reason, "at": format_issued_at(now), "run_id": run_id, "version": version,
            **fields}


def ops_note(event: dict[str, Any]) -> str:
    """A short HTML note for the operations chat: the step, the version, the reason."""
    step = event["status"].removeprefix("retrain_")
    mark = "✅" if step in ("shadowed", "pruned") else ("⛔" if step == "failed" else "🔄")
    version = f" <code>{html.escape(str(event['version']))}</code>" if event.get("version") else ""
    reason = str(event.get("reason", ""))
    if len(reason) > _NOTE_CHARS:
        reason = reason[:_NOTE_CHARS - 1] + "…"
    return f"{mark} retrain{version}: <b>{html.escape(step)}</b>\n{html.escape(reason)}"
