"""What the operations page shows beside the control state and the events: each served version's circuit
breaker, the worker group's lag per partition of ``candles`` and each served version's drift per feature
family. The reads come in as callables (given to :class:`OperationsSection` by :mod:`~bse_predict.dashboard.run`);
each one that raises :class:`~bse_predict.dashboard.errors.SourceUnavailable` leaves its part saying why,
and the rest is shown.

- Breakers: from the board (``control.events``), lined up with the versions the control state serves
  (:mod:`~bse_predict.dashboard.breakers`).
- Lag: read from Kafka on each render (:class:`~bse_predict.dashboard.consumer_lag.KafkaLag`).
- Drift: the drift monitor's counts in Redis over the ``drift.window_days`` days ending with the newest
  call the board holds (candle time, as the monitor counts them; the clock's day when it holds none), each
  feature's PSI against the version's training bins, grouped by family (:mod:`~bse_predict.dashboard.drift_groups`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from configs.settings import Settings
from bse_predict.connections.consumer_lag import PartitionLag
from bse_predict.control.state_machine import ControlState
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.breakers import breaker_rows, served_roles
from bse_predict.dashboard.drift_groups import group_psi
from bse_predict.dashboard.errors import SourceUnavailable
from bse_predict.monitoring.drift import WindowPsi

__all__ = ["ReadLag", "ReadPsi", "OperationsSection"]

DAY_MS = 86_400_000

ReadLag = Callable[[], Awaitable[list[PartitionLag]]]
ReadPsi = Callable[[str, int], Awaitable[WindowPsi | None]]
"""(version, newest day since the epoch) -> the version's PSI per feature over the window; None: no bins."""


def _newest_day(board: Board, now_ms: int) -> int:
    newest = [state.newest.open_time for state in board.symbols.values() if state.newest is not None]
    return (max(newest) if newest else now_ms) // DAY_MS


async def _lag(read: ReadLag, lag_of: str) -> dict[str, Any]:
    try:
        partitions = await read()
    except SourceUnavailable as exc:
        return {"lag": None, "lag_error": str(exc), "lag_of": lag_of}
    return {"lag": partitions, "lag_total": sum(p.lag for p in partitions), "lag_error": None, "lag_of": lag_of}


async def _drift(read: ReadPsi, versions: list[str], newest_day: int, settings: Settings) -> dict[str, Any]:
    config = settings.drift
    rows = []
    try:
        for version in versions:
            window = await read(version, newest_day)
            groups = None if window is None else group_psi(window.psi, config.psi_threshold)
            rows.append({"version": version, "groups": groups,
                         "rows": None if window is None else max(window.rows.values(), default=0)})
    except SourceUnavailable as exc:
        return {"drift": None, "drift_error": str(exc)}
    return {"drift": rows, "drift_error": None, "drift_threshold": config.psi_threshold,
            "drift_window_days": config.window_days, "drift_min_rows": config.min_rows,
            "drift_enabled": config.enabled, "drift_until_ms": (newest_day + 1) * DAY_MS}


class OperationsSection:
    """The reads of the breakers', lag and drift parts, and the settings they are shown against.
    ``default_live``: the newest servable version in the models folder (served before any control command), or None;
    ``lag_of`` says what the lag is of, for the page ("group G on topic T")."""

    def __init__(self, settings: Settings, read_lag: ReadLag, read_psi: ReadPsi,
                 default_live: Callable[[], str | None], lag_of: str) -> None:
        self._settings = settings
        self._read_lag = read_lag
        self._read_psi = read_psi
        self._default_live = default_live
        self._lag_of = lag_of

    async def parts(self, board: Board, state: ControlState | None, now_ms: int) -> dict[str, Any]:
        """The template values of the breakers, the lag and the drift; ``state``: the control state read for
        the same render (None: none stored, or unreadable)."""
        roles = served_roles(state, self._default_live())
        breakers = breaker_rows(roles, board.breakers.reports(), self._settings.control.breaker.open_s)
        return {"breakers": breakers, **await _lag(self._read_lag, self._lag_of),
                **await _drift(self._read_psi, sorted(roles), _newest_day(board, now_ms), self._settings)}
