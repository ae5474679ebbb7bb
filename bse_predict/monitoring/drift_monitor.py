"""Feature drift in the worker: live feature values counted into the training bins, PSI checked.

A batch listener of the outcome resolver. It takes the feature rows of every
live prediction from the batch's inputs (computed once by the stream for the
models and shared here: the trainer's own code on the same gap-filled window),
and adds the bin counts to Redis per served version and day (by candle time), so
every worker's symbols count (the keys, the window's sums and the PSI:
:class:`~bse_predict.monitoring.drift_counts.DriftCounts`, which the dashboard reads through too).
Every ``drift.check_every_rows`` rows it reads
the last ``drift.window_days`` days, computes each feature's PSI against the
manifest's training shares (:mod:`bse_predict.monitoring.drift`) and publishes a ``drift``
event on ``control.events`` for each feature above ``drift.psi_threshold``,
at most once a day per version and feature (a Redis ``SET NX`` with expiry);
every judged feature's PSI also goes to ``on_psi`` (the worker's ``bse_drift_psi`` gauge).
The counts are kept in process and added to Redis in one script call just
before a check (every ``check_every_rows`` rows), not per batch: a crash
loses fewer than that many rows of counts out of a window of days, and
another worker's check does not see this worker's last rows yet.

A version without ``feature_bins`` in its manifest (trained before they were
recorded) is not checked.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import redis.asyncio as aioredis

from configs.settings import Settings
from bse_predict.control.messages import format_issued_at
from bse_predict.monitoring.drift import BinLayout
from bse_predict.monitoring.drift_counts import DriftCounts
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.candles.schema import Prediction
from bse_predict.monitoring.event_report import EventReport, Sender
from bse_predict.monitoring.hash_sums import HashSums

__all__ = ["DriftMonitor"]

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_REPORT_EVERY_S = 86_400


class DriftMonitor:
    """See the module docstring."""

    def __init__(self, client: aioredis.Redis, settings: Settings, sender: Sender, events_topic: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 on_psi: Callable[[str, Mapping[str, float]], None] = lambda version, psi_by_feature: None) -> None:
        self._client = client
        self._on_psi = on_psi
        self._config = settings.drift
        self._counts = DriftCounts(client, settings)
        self._prefix = self._counts.prefix
        self._events = EventReport(sender, events_topic, b"drift", log, logging.WARNING, "drift")
        self._clock = clock
        self._sums = HashSums(client, floats=False, token_prefix=self._prefix)
        self._rows_since_check: dict[str, int] = defaultdict(int)
        self._newest_day: dict[str, int] = {}
        # Bin counts not yet added to Redis (hash key -> field -> count): they go in one call just before
        # a check, not per batch (thousands of fields a batch cost the worker more than inference).
        self._unsent: dict[tuple[str, int], np.ndarray] = {}  # (version, day) -> counts in its BinLayout
        self._layouts: dict[str, BinLayout | None] = {}
        self.events: list[dict[str, object]] = self._events.sent

    def _layout_of(self, version: str) -> BinLayout | None:
        if version not in self._layouts:
            bins = self._counts.bins_of(version)
            self._layouts[version] = BinLayout(bins, FEATURE_NAMES) if bins else None
        return self._layouts[version]

    async def _flush(self) -> None:
        """Add the counts kept since the last flush to Redis, one hash per version and day."""
        sums: dict[str, dict[str, int]] = {}
        for (version, day), counted in self._unsent.items():
            layout = self._layouts[version]
            assert layout is not None
            sums[self._counts.key(version, day)] = {layout.fields[i]: int(counted[i]) for i in np.flatnonzero(counted)}
        self._unsent = {}
        await self._sums.add(sums, (self._config.window_days + 1) * _DAY_MS // 1000)

    async def on_batch(self, live: Sequence[Prediction], live_features: Callable[[], np.ndarray]) -> None:
        """Count the bins of ``live``'s feature rows (``live_features()``, one row per prediction, in order)."""
        if not self._config.enabled:
            return
        rows, features = live, live_features()
        by_version: dict[str, list[int]] = defaultdict(list)
        for index, prediction in enumerate(rows):
            by_version[prediction.model.version].append(index)
        for version, indices in by_version.items():
            layout = self._layout_of(version)
            if layout is None:
                continue
            days = np.array([rows[i].open_time // _DAY_MS for i in indices], dtype=np.int64)
            unique_days, day_of_row = np.unique(days, return_inverse=True)
            for day, counted in zip(unique_days.tolist(), layout.counts(features[indices], day_of_row, len(unique_days)),
                                    strict=True):
                unsent = self._unsent.get((version, day))
                self._unsent[(version, day)] = counted if unsent is None else unsent + counted
            self._rows_since_check[version] += len(indices)
            self._newest_day[version] = max(int(unique_days[-1]), self._newest_day.get(version, int(unique_days[-1])))
        due = [version for version, count in self._rows_since_check.items() if count >= self._config.check_every_rows]
        if not due:
            return
        await self._flush()
        for version in due:
            self._rows_since_check[version] = 0
            await self._check(version, self._newest_day[version])

    async def _check(self, version: str, newest_day: int) -> None:
        window = await self._counts.psi(version, newest_day)
        assert window is not None  # only versions with bins are counted
        judged = window.psi
        self._on_psi(version, judged)
        found = {name: value for name, value in judged.items() if value > self._config.psi_threshold}
        for name, value in sorted(found.items(), key=lambda item: -item[1]):
            if await self._client.set(f"{self._prefix}:{{{version}}}:reported:{name}", 1, nx=True, ex=_REPORT_EVERY_S):
                await self._report(version, name, value, window.rows[name])

    async def _report(self, version: str, feature: str, value: float, rows: int) -> None:
        event = {
            "status": "drift", "at": format_issued_at(self._clock()), "version": version, "feature": feature,
            "psi": value, "threshold": self._config.psi_threshold, "rows": rows, "window_days": self._config.window_days,
            "reason": f"{feature}: PSI {value:.3f} > {self._config.psi_threshold} over {rows} live rows of {version}",
        }
        await self._events.report(event)
