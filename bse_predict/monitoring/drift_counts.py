"""The live feature-bin counts that the drift monitor keeps in Redis, and their PSI (adapter).

One hash per served version and day (candle time): ``{prefix}bse:drift:{version}:{day}``, a field
``"feature|bin"`` per bin with a count (``{version}`` in braces: a Redis Cluster keeps a version's days
on one slot). :class:`DriftCounts` names the keys, loads each version's training bins from its manifest
(``feature_bins``; None for a version trained before they were recorded), sums the last
``drift.window_days`` days and computes every feature's PSI with :func:`~bse_predict.monitoring.drift.feature_psi`.
The worker's :class:`~bse_predict.monitoring.drift_monitor.DriftMonitor` writes and checks through it;
the dashboard only reads through it.
"""

from __future__ import annotations

import logging

import numpy as np
import redis.asyncio as aioredis

from configs.settings import Settings
from bse_predict.errors import ManifestError
from bse_predict.monitoring.drift import FeatureBins, WindowPsi, feature_psi
from bse_predict.serving.manifest import load_manifest

__all__ = ["DriftCounts"]

log = logging.getLogger(__name__)


class DriftCounts:
    """See the module docstring. ``client`` is only read from here, except by the monitor's writes to :meth:`key`."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._config = settings.drift
        self._models_dir = settings.models_dir
        self.prefix = f"{settings.topic_prefix}bse:drift"
        self._bins: dict[str, dict[str, FeatureBins] | None] = {}

    def key(self, version: str, day: int) -> str:
        """The hash of ``version``'s counts of ``day`` (days since the epoch, candle time)."""
        return f"{self.prefix}:{{{version}}}:{day}"

    def bins_of(self, version: str) -> dict[str, FeatureBins] | None:
        """The training bins of ``version`` from its manifest (read once); None without them."""
        if version not in self._bins:
            try:
                self._bins[version] = load_manifest(self._models_dir / version).feature_bins
            except ManifestError as exc:
                log.warning("drift: no bins for %s: %s", version, exc)
                self._bins[version] = None
        return self._bins[version]

    async def window(self, version: str, newest_day: int) -> dict[str, np.ndarray]:
        """Live counts per bin of each of ``version``'s binned features over the ``window_days`` days ending
        with ``newest_day``; empty without bins."""
        bins = self.bins_of(version)
        if not bins:
            return {}
        days = range(newest_day - self._config.window_days + 1, newest_day + 1)
        async with self._client.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(self.key(version, day))
            replies = await pipe.execute()
        live: dict[str, np.ndarray] = {name: np.zeros(len(b.expected)) for name, b in bins.items()}
        for reply in replies:
            for field, value in reply.items():
                name, index = field.decode().rsplit("|", 1)
                if name in live and int(index) < len(live[name]):
                    live[name][int(index)] += int(value)
        return live

    async def psi(self, version: str, newest_day: int) -> WindowPsi | None:
        """The PSI of each of ``version``'s features with at least ``drift.min_rows`` live rows in the window
        ending with ``newest_day``; None when the version has no bins."""
        bins = self.bins_of(version)
        if not bins:
            return None
        live = await self.window(version, newest_day)
        return WindowPsi(feature_psi(bins, live, self._config.min_rows),
                         {name: int(counts.sum()) for name, counts in live.items()})
