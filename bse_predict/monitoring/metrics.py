"""Live metrics of the worker: rolling scores kept in Redis, and the Prometheus ``/metrics`` endpoint.

:class:`RedisLiveScores` is an outcome listener: every settled outcome adds its
score sums (:func:`bse_predict.monitoring.live_scores.score_fields`) to a Redis hash per
series (version, variant, target, stream) and time bucket (by ``resolved_at``,
candle time). Every worker adds to the same hashes, so the rolling windows
cover the whole fleet; a window ends at the series' newest bucket, so a replay
of old candles has scores too. Buckets expire once older than the longest window.

:class:`WorkerMetrics` owns a private Prometheus registry (nothing global at
import), serves it on ``live_metrics.metrics_port`` (0 = off) and is refreshed
by a worker timer: live scores per window (beside them the window's hindsight
climatology log loss), stream counters (throughput, dead letters, fallbacks,
breaker trips: every counter the processor and the router keep, by kind), the
prediction latency histogram, consumer lag per assigned partition, breaker
states of the versions served now, the newest PSI per version and feature of
the drift check, the time of each symbol's last live prediction, and the
control revision served (-1 until the candle agent serves). The alerting rules
in ``deploy/prometheus/rules.yml`` read these series (docs/monitoring.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import redis.asyncio as aioredis
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from configs.settings import Settings
from bse_predict.monitoring.hash_sums import HashSums, UnsentSums
from bse_predict.monitoring.live_scores import (LiveScores, add_fields, bucket_of, grouped_score_sums, score_field_names,
                                                window_scores)
from bse_predict.monitoring.outcomes import Settlement
from bse_predict.candles.schema import Prediction

__all__ = ["SeriesKey", "RedisLiveScores", "WorkerMetrics"]

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str, str]
"""(version, variant, target, stream)"""

_LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)

# Counter kinds shown (at 0) from the start: a rate over a series that first appears at its
# first increment misses that increment, so the first dead letters would never alert.
_COUNTED_FROM_START = ("messages", "closed", "predicted", "dead_letters")

class RedisLiveScores:
    """Score sums per series and bucket in Redis; see the module docstring."""

    def __init__(self, client: aioredis.Redis, settings: Settings, clock_s: Callable[[], float] = time.monotonic) -> None:
        config = settings.live_metrics
        self._client = client
        self._prefix = f"{settings.topic_prefix}bse:live"
        self._bucket_ms = config.bucket_minutes * 60_000
        self._bins = config.calibration_bins
        self._windows_hours = config.windows_hours
        self._flush_s = config.flush_s
        self._clock_s = clock_s
        self._flushed_at = clock_s()
        ttl_s = (max(config.windows_hours) * 3_600_000 + 2 * self._bucket_ms) // 1000
        self._unsent = UnsentSums(HashSums(client, floats=True, token_prefix=self._prefix), ttl_s,
                                  score_field_names(self._bins))
        self._unsent_newest: dict[str, int] = {}

    def _series_id(self, key: SeriesKey) -> str:
        return "|".join(key)

    def _bucket_key(self, series_id: str, bucket: int) -> str:
        return f"{self._prefix}:{{{series_id}}}:{bucket}"

    async def on_settled(self, settlements: Sequence[Settlement]) -> None:
        if not settlements:
            return
        group_of: dict[tuple[str, int], int] = {}
        groups = np.empty(len(settlements), dtype=np.intp)
        for row, s in enumerate(settlements):
            item = s.pending
            series_id = self._series_id((item.model.version, item.variant, item.target, item.stream))
            groups[row] = group_of.setdefault((series_id, bucket_of(s.resolved_at, self._bucket_ms)), len(group_of))
        summed = grouped_score_sums(
            np.array([(s.pending.p_up, s.pending.p_down, s.pending.p_none) for s in settlements], dtype=np.float64),
            np.array([s.label for s in settlements], dtype=np.int64), self._bins, groups, len(group_of))
        self._unsent.add({self._bucket_key(series_id, bucket): summed[group]
                          for (series_id, bucket), group in group_of.items()})
        newest = self._unsent_newest
        for series_id, bucket in group_of:
            newest[series_id] = max(bucket, newest.get(series_id, bucket))
        if self._clock_s() - self._flushed_at >= self._flush_s:
            await self.flush()

    async def flush(self) -> None:
        """Send the sums kept since the last flush (each addition counts once, also when a flush is retried)."""
        self._flushed_at = self._clock_s()
        await self._unsent.flush()
        newest, self._unsent_newest = self._unsent_newest, {}
        if newest:
            try:
                await self._client.zadd(f"{self._prefix}:newest", newest, gt=True)
            except BaseException:
                for series_id, bucket in newest.items():
                    self._unsent_newest[series_id] = max(bucket, self._unsent_newest.get(series_id, bucket))
                raise

    async def read(self) -> dict[tuple[SeriesKey, int], LiveScores]:
        """Scores of every series over every configured window (hours), ending at its newest bucket (this
        process's unsent sums flushed first). One series at a time, its longest window's buckets read once
        for every window: the worker's batches run between two series, not after all of them (reading and
        parsing every series in one go held the event loop for 40 to 75 ms in the bench)."""
        await self.flush()
        newest = await self._client.zrange(f"{self._prefix}:newest", 0, -1, withscores=True)
        spans = {hours: max(1, hours * 3_600_000 // self._bucket_ms) for hours in self._windows_hours}
        longest = max(spans.values())
        result: dict[tuple[SeriesKey, int], LiveScores] = {}
        for member, score in newest:
            series_id = member.decode() if isinstance(member, bytes) else member
            key = tuple(series_id.split("|"))
            if len(key) != 4:
                continue
            async with self._client.pipeline(transaction=False) as pipe:
                for bucket in range(int(score) - longest + 1, int(score) + 1):
                    pipe.hgetall(self._bucket_key(series_id, bucket))
                buckets = [{name.decode(): float(value) for name, value in reply.items()} for reply in await pipe.execute()]
            for hours, span in spans.items():
                scores = window_scores(add_fields(buckets[-span:]), self._bins)
                if scores is not None:
                    result[(key, hours)] = scores  # type: ignore[index]
        return result


class WorkerMetrics:
    """The worker's Prometheus metrics in a private registry; see the module docstring."""

    def __init__(self, clock_s: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        series = ("version", "variant", "target", "stream", "window_hours")
        r = self.registry
        self.log_loss = Gauge("bse_live_log_loss", "Mean log loss of settled predictions", series, registry=r)
        self.brier = Gauge("bse_live_brier", "Mean three-class Brier score", series, registry=r)
        self.accuracy = Gauge("bse_live_accuracy", "Share of settled predictions whose arg-max class happened", series, registry=r)
        self.base_rate = Gauge("bse_live_base_rate", "Share of the most frequent outcome (always-say-it accuracy)", series, registry=r)
        self.outcomes = Gauge("bse_live_outcomes", "Settled predictions in the window", series, registry=r)
        self.climatology_log_loss = Gauge("bse_live_climatology_log_loss", "Log loss of forecasting the window's own "
                                          "outcome shares for every row (hindsight climatology)", series, registry=r)
        self.calibration = Gauge("bse_live_calibration_hit_rate", "Observed frequency of a class per bin of its predicted p",
                                 (*series, "cls", "bin"), registry=r)
        self.calibration_p = Gauge("bse_live_calibration_mean_p", "Mean predicted p per calibration bin",
                                   (*series, "cls", "bin"), registry=r)
        self.events = Counter("bse_stream_events", "Stream counters by kind (messages, closed, predicted, dead letters, "
                              "degraded, unserved, breaker_open.V, model_error.V, outcomes_published, fault.redis, fault.kafka, "
                              "fault_recovered, control_fault.redis, ...)", ("kind",), registry=r)
        self.latency = Histogram("bse_prediction_latency_ms", "Batch start to prediction ready, per prediction",
                                 ("stream",), buckets=_LATENCY_BUCKETS_MS, registry=r)
        self.lag = Gauge("bse_consumer_lag", "Candle records not yet processed, per assigned partition", ("partition",), registry=r)
        self.breaker_open = Gauge("bse_breaker_open", "1 when the breaker of a served version is open, 0.5 half-open, 0 closed",
                                  ("version",), registry=r)
        self.control_revision = Gauge("bse_control_revision", "The control revision this worker serves; "
                                      "-1 until its candle agent serves", registry=r)
        self.control_revision.set(-1)
        self.last_prediction = Gauge("bse_last_prediction_timestamp_seconds", "When this worker last published a "
                                     "live prediction of the symbol (wall clock)", ("symbol",), registry=r)
        self.drift_psi = Gauge("bse_drift_psi", "PSI of a feature's live values against its training bins at the "
                               "newest drift check", ("version", "feature"), registry=r)
        for kind in _COUNTED_FROM_START:
            self.events.labels(kind)
        self._seen: dict[str, float] = {}
        self._clock_s = clock_s
        self._last_prediction_s: dict[str, float] = {}
        self._lag_partitions: set[str] = set()
        self._breaker_versions: set[str] = set()

    def serve(self, port: int) -> None:
        """Serve ``/metrics`` on ``port`` (all interfaces) in a daemon thread."""
        start_http_server(port, registry=self.registry)
        log.info("Prometheus metrics on port %d", port)

    def on_published(self, live: Sequence[Prediction], shadow: Sequence[Prediction]) -> None:
        for stream, predictions in (("live", live), ("shadow", shadow)):
            for prediction in predictions:
                self.latency.labels(stream).observe(prediction.latency_ms)
        now_s = self._clock_s()
        for symbol in {prediction.symbol for prediction in live}:
            self.last_prediction.labels(symbol).set(now_s)
            self._last_prediction_s[symbol] = now_s

    def forget_quiet_symbols(self, quiet_s: float) -> None:
        """Drop the last-prediction series of symbols without a live prediction for ``quiet_s`` seconds (the
        fleet forgets such a symbol's window too), so a delisted symbol stops alerting and the series stay
        as many as the symbols the fleet admits."""
        cutoff_s = self._clock_s() - quiet_s
        for symbol in [s for s, at in self._last_prediction_s.items() if at < cutoff_s]:
            self.last_prediction.remove(symbol)
            del self._last_prediction_s[symbol]

    def set_counts(self, counts: Iterable[Mapping[str, int]]) -> None:
        """Totals by kind, summed over the sources; counters move by the increase since the last call."""
        total = add_fields(counts)
        for kind, value in total.items():
            delta = value - self._seen.get(kind, 0.0)
            if delta > 0:
                self.events.labels(kind).inc(delta)
            self._seen[kind] = value

    def set_lag(self, topic: str, committed: Mapping[TopicPartition, int],
                highwater: Callable[[TopicPartition], int | None]) -> None:
        """Lag of ``topic`` per partition in ``committed`` (the assigned ones): the broker's end offset minus the
        group's committed offset. A partition no longer given loses its series: after a rebalance its lag is
        the new owner's to show."""
        lags = {}
        for tp, offset in committed.items():
            end = highwater(tp)
            if tp.topic == topic and end is not None:
                lags[str(tp.partition)] = float(max(0, end - offset))
        self._lag_partitions = _show_exactly(self.lag, lags, self._lag_partitions)

    def set_breakers(self, states: Mapping[str, str]) -> None:
        """The breaker of each version served now; a version no longer served loses its series."""
        values = {version: {"open": 1.0, "half_open": 0.5}.get(status, 0.0) for version, status in states.items()}
        self._breaker_versions = _show_exactly(self.breaker_open, values, self._breaker_versions)

    def set_drift(self, version: str, psi_by_feature: Mapping[str, float]) -> None:
        for feature, value in psi_by_feature.items():
            self.drift_psi.labels(version, feature).set(value)

    def set_scores(self, scores: Mapping[tuple[SeriesKey, int], LiveScores]) -> None:
        for (series, hours), s in scores.items():
            labels = (*series, str(hours))
            self.log_loss.labels(*labels).set(s.log_loss)
            self.brier.labels(*labels).set(s.brier)
            self.accuracy.labels(*labels).set(s.accuracy)
            self.base_rate.labels(*labels).set(s.base_rate)
            self.outcomes.labels(*labels).set(s.count)
            self.climatology_log_loss.labels(*labels).set(s.climatology_log_loss)
            for cal in s.calibration:
                self.calibration.labels(*labels, cal.cls, str(cal.bin)).set(cal.hit_rate)
                self.calibration_p.labels(*labels, cal.cls, str(cal.bin)).set(cal.mean_p)


def _show_exactly(gauge: Gauge, values: Mapping[str, float], shown: set[str]) -> set[str]:
    """Set a one-label ``gauge`` to ``values`` and remove the labels in ``shown`` that ``values`` lacks;
    returns the labels shown now."""
    for label in shown - values.keys():
        gauge.remove(label)
    for label, value in values.items():
        gauge.labels(label).set(value)
    return set(values)
