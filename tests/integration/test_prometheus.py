"""Debian's Prometheus with the shipped config and rules, scraping a real worker on the real Kafka and Redis.

Prometheus scrapes and evaluates every second. It loads a copy of the shipped rules made at test
time in which only each alert's ``for:`` (minutes as shipped) is shortened to ``ALERT_FOR``, so an
alert whose expression matches real scraped data goes pending and then *firing* within the test
(``/api/v1/alerts``); the shipped file itself is checked by promtool in tests/unit/test_prometheus_rules.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bse_predict.candles.files import CandleSeries
from bse_predict.connections.topics import TopicNames
from bse_predict.features.definitions import LOOKBACK_CANDLES
from bse_predict.stream.replay import candle_records
from configs.settings import Settings
from tests.support.kafka_io import send_raw
from tests.support.prometheus import PrometheusProcess, config_scraping
from tests.support.worker_process import WorkerProcess, free_port, service_env

pytestmark = pytest.mark.integration

PREDICTED = 5
ALERT_FOR = "3s"


def _firing(prometheus: PrometheusProcess, name: str, **labels: str) -> list[dict[str, Any]]:
    return [a for a in prometheus.alerts(name)
            if a["state"] == "firing" and all(a["labels"].get(k) == v for k, v in labels.items())]


def test_prometheus_scrapes_a_worker_and_its_dead_letter_and_worker_down_alerts_fire(
    control_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    settings = control_settings
    sol = futures_series["SOLUSDT"].tail(LOOKBACK_CANDLES - 1 + PREDICTED)
    good = [(r.symbol.encode(), r.payload) for r in candle_records([sol])]
    bad: list[tuple[bytes | None, bytes]] = [(b"SOLUSDT", b"not a candle %d" % i) for i in range(20)]
    bad += [(None, b'{"symbol": "SOLUSDT"}'), (b"SOLUSDT", b"[1, 2, 3]")]
    with WorkerProcess(service_env(settings), tmp_path / "worker.log") as worker:
        target = f"127.0.0.1:{worker.metrics_port}"
        home = tmp_path / "prometheus"
        home.mkdir()
        config = config_scraping([target], home, ALERT_FOR)
        with PrometheusProcess(config, home, free_port()) as prometheus:
            prometheus.wait_for("the worker scraped, dead letters at 0",
                                lambda: prometheus.query('bse_stream_events_total{job="bse-predict-worker", '
                                                         'kind="dead_letters"} == 0'))
            assert [float(s["value"][1]) for s in prometheus.query(f'up{{instance="{target}"}}')] == [1.0]
            assert not prometheus.alerts("BsePredictDeadLetters")

            sent_at_s = time.time()
            asyncio.run(send_raw(settings.kafka_bootstrap, TopicNames.of(settings).candles, good + bad))

            # every live prediction reached /metrics and Prometheus: the per-symbol series the silence alert reads
            predicted = prometheus.wait_for(
                "SOLUSDT's predictions", lambda: prometheus.query(
                    f'bse_stream_events_total{{kind="predicted"}} >= {PREDICTED}'), timeout_s=90)
            assert float(predicted[0]["value"][1]) == PREDICTED, worker.log_tail()
            last = prometheus.query('bse_last_prediction_timestamp_seconds{symbol="SOLUSDT"}')
            assert len(last) == 1 and sent_at_s <= float(last[0]["value"][1]) <= time.time()
            prometheus.wait_for("SOLUSDT's prediction age recorded", lambda: prometheus.query(
                'bse:last_prediction_age_seconds{symbol="SOLUSDT"} < 60'))

            # the dead letters as a rate, by the recording rule, and the alert that reads it
            prometheus.wait_for("dead letters counted", lambda: prometheus.query(
                f'bse_stream_events_total{{kind="dead_letters"}} == {len(bad)}'), timeout_s=30)
            ratio = prometheus.wait_for("the dead-letter ratio recorded",
                                        lambda: prometheus.query("bse:dead_letter_ratio:rate5m > 0.01"))
            assert 0.01 < float(ratio[0]["value"][1]) <= 1.0
            alert = prometheus.wait_for("BsePredictDeadLetters firing",
                                        lambda: _firing(prometheus, "BsePredictDeadLetters"))
            assert alert[0]["labels"]["severity"] == "warning"
            assert not prometheus.alerts("BsePredictWorkerDown") and not prometheus.alerts("BsePredictNoWorkerUp")

            worker.stop()
            down = prometheus.wait_for("BsePredictWorkerDown firing for the stopped worker",
                                       lambda: _firing(prometheus, "BsePredictWorkerDown", instance=target))
            assert down[0]["labels"]["severity"] == "critical"
            assert [float(s["value"][1]) for s in prometheus.query(f'up{{instance="{target}"}}')] == [0.0]
            prometheus.wait_for("BsePredictNoWorkerUp firing", lambda: _firing(prometheus, "BsePredictNoWorkerUp"))
            # with every `for:` shortened, nothing else fires on this worker's data (drift needs 500 live rows)
            firing = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"}
            assert firing == {"BsePredictDeadLetters", "BsePredictWorkerDown", "BsePredictNoWorkerUp"}
