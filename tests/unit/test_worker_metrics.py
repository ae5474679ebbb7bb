"""The worker's Prometheus series that the alerting rules read (bse_predict/monitoring/metrics.py)."""

from __future__ import annotations

import math

import pytest
from aiokafka.structs import TopicPartition

from bse_predict.candles.schema import ModelRef, Prediction, TargetPrediction
from bse_predict.monitoring.live_scores import add_fields, score_fields, window_scores
from bse_predict.monitoring.metrics import WorkerMetrics

BINS = 10


class _Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def _prediction(symbol: str) -> Prediction:
    part = TargetPrediction(p_up=0.4, p_down=0.4, p_none=0.2, direction="up", confidence=0.5, signal="NEUTRAL")
    return Prediction(id=f"{symbol}|1h|0", symbol=symbol, timeframe="1h", open_time=0, close=1.0, horizon_hours=72,
                      targets={"1%": part}, model=ModelRef(name="random_forest", version="v1"), latency_ms=3.0)


def _sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_main_counter_kinds_are_shown_at_zero_before_anything_happens() -> None:
    metrics = WorkerMetrics()
    for kind in ("messages", "predicted", "dead_letters"):
        assert _sample(metrics, "bse_stream_events_total", kind=kind) == 0.0
    metrics.set_counts([{"messages": 7, "dead_letters": 2}, {"messages": 3}])
    assert _sample(metrics, "bse_stream_events_total", kind="messages") == 10.0
    assert _sample(metrics, "bse_stream_events_total", kind="dead_letters") == 2.0


def test_each_symbol_shows_when_its_last_live_prediction_was_published_and_is_forgotten_when_quiet() -> None:
    clock = _Clock(1_000.0)
    metrics = WorkerMetrics(clock_s=clock)
    metrics.on_published([_prediction("BTCUSDT"), _prediction("ETHUSDT")], [_prediction("SOLUSDT")])
    clock.now_s = 1_500.0
    metrics.on_published([_prediction("BTCUSDT")], [])
    assert _sample(metrics, "bse_last_prediction_timestamp_seconds", symbol="BTCUSDT") == 1_500.0
    assert _sample(metrics, "bse_last_prediction_timestamp_seconds", symbol="ETHUSDT") == 1_000.0
    assert _sample(metrics, "bse_last_prediction_timestamp_seconds", symbol="SOLUSDT") is None  # shadow only
    assert _sample(metrics, "bse_prediction_latency_ms_count", stream="shadow") == 1.0
    metrics.forget_quiet_symbols(quiet_s=400.0)
    assert _sample(metrics, "bse_last_prediction_timestamp_seconds", symbol="ETHUSDT") is None
    assert _sample(metrics, "bse_last_prediction_timestamp_seconds", symbol="BTCUSDT") == 1_500.0


def test_lag_and_breakers_show_only_the_partitions_assigned_and_the_versions_served_now() -> None:
    metrics = WorkerMetrics()
    ends = {TopicPartition("candles", 0): 50, TopicPartition("candles", 1): 9, TopicPartition("other", 0): 99}
    metrics.set_lag("candles", {TopicPartition("candles", 0): 40, TopicPartition("candles", 1): 9,
                                TopicPartition("other", 0): 1}, ends.get)
    assert _sample(metrics, "bse_consumer_lag", partition="0") == 10.0
    assert _sample(metrics, "bse_consumer_lag", partition="1") == 0.0
    metrics.set_lag("candles", {TopicPartition("candles", 1): 5}, ends.get)  # partition 0 went to another worker
    assert _sample(metrics, "bse_consumer_lag", partition="0") is None
    assert _sample(metrics, "bse_consumer_lag", partition="1") == 4.0

    metrics.set_breakers({"v1": "open", "v2": "half_open"})
    assert (_sample(metrics, "bse_breaker_open", version="v1"), _sample(metrics, "bse_breaker_open", version="v2")) == (1.0, 0.5)
    metrics.set_breakers({"v2": "closed"})  # v1 rolled back while open: no series left to alert on
    assert _sample(metrics, "bse_breaker_open", version="v1") is None
    assert _sample(metrics, "bse_breaker_open", version="v2") == 0.0


def test_the_climatology_log_loss_sits_beside_the_live_log_loss() -> None:
    metrics = WorkerMetrics()
    fields = add_fields([score_fields((0.2, 0.7, 0.1), "down", BINS), score_fields((0.6, 0.3, 0.1), "up", BINS),
                         score_fields((0.3, 0.6, 0.1), "down", BINS)])
    scores = window_scores(fields, BINS)
    assert scores is not None
    metrics.set_scores({(("v1", "control", "2%", "live"), 24): scores})
    labels = {"version": "v1", "variant": "control", "target": "2%", "stream": "live", "window_hours": "24"}
    climatology = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))  # always (up 1/3, down 2/3, none 0)
    assert _sample(metrics, "bse_live_climatology_log_loss", **labels) == pytest.approx(climatology)
    live = -(math.log(0.7) + math.log(0.6) + math.log(0.6)) / 3
    assert _sample(metrics, "bse_live_log_loss", **labels) == pytest.approx(live)


def test_the_newest_psi_of_each_feature_is_shown_per_version() -> None:
    metrics = WorkerMetrics()
    metrics.set_drift("v1", {"rsi_6": 0.02, "volatility_24": 0.4})
    metrics.set_drift("v1", {"rsi_6": 0.05, "volatility_24": 0.3})
    assert _sample(metrics, "bse_drift_psi", version="v1", feature="rsi_6") == 0.05
    assert _sample(metrics, "bse_drift_psi", version="v1", feature="volatility_24") == 0.3
