"""When the scheduler retrains: a cron schedule and triggers from ``control.events``.

Pure: the time is passed in. The cron expression (five fields, UTC) is read by
``croniter`` (docs/dependencies.md). Triggers, by name (``retrain.triggers``):

- ``drift``: a feature's PSI crossed its threshold (:mod:`bse_predict.monitoring.drift_monitor`);
- ``live_regression``: the challenger test found the *live* version worse than
  the older one shadowed beside it (a promotion that went wrong; the decision
  also rolls it back when ``challenger.auto_promote`` is on);
- ``challenger_worse``: the test dropped a shadowed challenger as worse.

The retrain's own records (``retrain_*``) never trigger one. The minimum
interval between retrains is held in Redis (:mod:`bse_predict.retrain.ledger`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

__all__ = ["next_run_at", "trigger_of"]


def next_run_at(schedule: str | None, after: datetime) -> datetime | None:
    """The first scheduled time strictly after ``after`` (aware, UTC); None without a schedule."""
    if schedule is None:
        return None
    if after.tzinfo is None:
        raise ValueError("pass an aware datetime")
    found = croniter(schedule, after.astimezone(UTC)).get_next(datetime)
    return found.astimezone(UTC)


def trigger_of(event: Mapping[str, Any], triggers: Collection[str]) -> str | None:
    """The trigger a ``control.events`` record is (one of ``triggers``), with what it says; None otherwise."""
    status = event.get("status")
    if status == "drift" and "drift" in triggers:
        return f"drift: {event.get('reason', '')}"
    if status == "challenger_decision" and event.get("verdict") == "challenger_worse":
        kind = "live_regression" if event.get("challenger_stream") == "live" else "challenger_worse"
        if kind in triggers:
            return f"{kind}: {event.get('reason', '')}"
    return None

