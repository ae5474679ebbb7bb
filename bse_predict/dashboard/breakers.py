"""Each served version's circuit breaker, as the workers report it on ``control.events`` (core, no IO).

A worker's router keeps one breaker per version it serves (:mod:`bse_predict.serving.breaker`); every
change of one (closed → open, open → half-open, half-open → closed or open again) is reported by that
worker's control plane as a ``{"status": "breaker", "version", "breaker", "worker", "at", "reason"}``
event. :class:`BreakerBook` keeps the newest report per (version, worker), a bounded number of them;
:func:`breaker_rows` lines them up with the versions the control state serves. A version with no report
in the lookback has had a closed breaker in every worker since then (breakers start closed).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from bse_predict.control.state_machine import ControlState

__all__ = ["BREAKER_EVENT", "BreakerReport", "BreakerBook", "served_roles", "breaker_rows"]

BREAKER_EVENT = "breaker"
"""The ``status`` of a breaker change on ``control.events``."""

_STATUSES = frozenset({"closed", "open", "half_open"})


class BreakerReport(NamedTuple):
    version: str
    worker: str
    status: str  # closed | open | half_open
    since: str  # the event's ``at``: when the worker reported the change (UTC ISO-8601)
    reason: str | None  # why it opened; None for the other changes


class BreakerBook:
    """The newest :class:`BreakerReport` per (version, worker); past ``max_keys`` the one reported longest
    ago is dropped (a restarted worker is a new key: its predecessor's reports age out)."""

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._reports: OrderedDict[tuple[str, str], BreakerReport] = OrderedDict()

    def add(self, event: Mapping[str, Any]) -> bool:
        """Keep ``event`` if it is a breaker change; whether it was one."""
        version, status = event.get("version"), event.get("breaker")
        if event.get("status") != BREAKER_EVENT or not isinstance(version, str) or status not in _STATUSES:
            return False
        worker = str(event.get("worker") or "unknown")
        reason = event.get("reason")
        self._reports[(version, worker)] = BreakerReport(version, worker, str(status), str(event.get("at", "")),
                                                         str(reason) if status == "open" and reason else None)
        self._reports.move_to_end((version, worker))
        while len(self._reports) > self._max_keys:
            self._reports.popitem(last=False)
        return True

    def reports(self) -> list[BreakerReport]:
        return list(self._reports.values())


def served_roles(state: ControlState | None, default_live: str | None) -> dict[str, list[str]]:
    """version -> what it is in ``state``: live, an A/B arm, ramping, shadow, fallback. Without a state (none
    stored yet) the workers serve ``default_live``, the newest version in the models folder."""
    roles: dict[str, list[str]] = {}

    def add(version: str | None, role: str) -> None:
        if version is not None:
            roles.setdefault(version, []).append(role)

    if state is None:
        add(default_live, "live (newest in the models folder)")
        return roles
    add(state.live or default_live, "live")
    for arm in state.arms:
        add(arm.version, f"arm {arm.variant} × {arm.weight:g}")
    if state.ramp is not None:
        add(state.ramp.version, "ramping")
    add(state.shadow, "shadow")
    add(state.fallback, "fallback")
    return roles


def _probe_from(report: BreakerReport, open_s: float) -> str | None:
    """When an open breaker lets the next call through as a probe (it turns half-open on that call)."""
    try:
        opened = datetime.fromisoformat(report.since.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (opened + timedelta(seconds=open_s)).strftime("%Y-%m-%d %H:%M:%S")


def breaker_rows(roles: Mapping[str, list[str]], reports: list[BreakerReport], open_s: float) -> list[dict[str, Any]]:
    """One row per served version and worker that reported a change of its breaker; a served version with
    no report gets one row, closed. Without roles (the control state unreadable) every reported version."""
    by_version: dict[str, list[BreakerReport]] = {}
    for report in reports:
        by_version.setdefault(report.version, []).append(report)
    versions = dict(roles) if roles else {version: [] for version in by_version}
    rows = []
    for version in sorted(versions):
        role = ", ".join(versions[version]) or "not known (no control state)"
        kept = sorted(by_version.get(version, []), key=lambda r: r.worker)
        if not kept:
            rows.append({"version": version, "role": role, "status": "closed", "worker": None, "since": None,
                         "reason": None, "probe_from": None})
        for report in kept:
            rows.append({"version": version, "role": role, "status": report.status, "worker": report.worker,
                         "since": report.since, "reason": report.reason,
                         "probe_from": _probe_from(report, open_s) if report.status == "open" else None})
    return rows
