"""The whole chain on the secure stack (Kafka SASL_SSL with SCRAM-SHA-512, Redis TLS with an ACL user):
the worker, a replay, a signed control command and the alerts service, each configured only by the
contract's ``BSE_KAFKA_*``/``BSE_REDIS_*`` variables; no password reaches a log, an error or ``/metrics``;
a project command with a wrong password or without TLS stops with a one-line reason."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import yaml

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.features.definitions import LOOKBACK_CANDLES
from bse_predict.candles.schema import Prediction
from tests.support.alerts_process import AlertsProcess
from tests.support.fake_telegram import FakeTelegram
from tests.support.kafka_io import read_topic, read_until
from tests.support.secure_stack import RunningSecureStack
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.connections.clients import connect_redis_sync
from bse_predict.stream.replay import candle_records, replay
from bse_predict.connections.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

HOURS = 220
FIRST = LOOKBACK_CANDLES - 1  # index of the first candle with a full window
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
CONTROL_SECRET = "secure-stack-control-secret-0123456789abcdef"
TOKEN = "4242424242:AAF_secure-Token.for*tests"


@pytest.fixture
def secure_settings(secure_stack: RunningSecureStack, trained_version: Settings) -> Settings:
    """The secure stack's settings with a topic and key prefix of this test and the small trained version."""
    settings = secure_stack.settings.model_copy(update={"topic_prefix": f"s{uuid.uuid4().hex[:10]}.",
                                                        "models_dir": trained_version.models_dir})
    asyncio.run(ensure_topics(settings))
    return settings


def _secrets(stack: RunningSecureStack) -> list[str]:
    redis_password = urlsplit(stack.env["BSE_REDIS_URL"]).password
    assert redis_password
    return [stack.env["BSE_KAFKA_SASL_PASSWORD"], redis_password]


def _cli(env: dict[str, str], *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bse_predict.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def test_worker_replay_control_and_alerts_run_on_sasl_ssl_and_tls_redis(
        secure_stack: RunningSecureStack, secure_settings: Settings, futures_series: dict[str, CandleSeries],
        tmp_path: Path) -> None:
    settings = secure_settings
    names = TopicNames.of(settings)
    series = [futures_series[s].tail(HOURS) for s in SYMBOLS]
    env = {**service_env(settings), "BSE_CONTROL_SECRET": CONTROL_SECRET}
    assert env["BSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["BSE_REDIS_URL"].startswith("rediss://")
    metrics_port = _free_port()
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"live_metrics": {"metrics_port": metrics_port, "refresh_s": 0.5}}))
    alerts_config = tmp_path / "alerts.yaml"
    alerts_config.write_text(yaml.safe_dump({"alerts": {
        "thresholds": {"1%": {"min_confidence": 0.5, "min_probability": 0.0}}, "cooldown_hours": 0,
        "digest": False, "summary": False, "start_from": "earliest", "stale_after_hours": 24 * 365 * 20,
        "rate_per_chat_per_s": 50, "burst_per_chat": 20}}))

    with FakeTelegram(TOKEN) as telegram, \
            WorkerProcess(env, tmp_path / "worker.log", ("--config", str(config)), metrics_port=metrics_port) as worker, \
            AlertsProcess(settings, {**env, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "1001",
                                     "TELEGRAM_API_URL": telegram.url}, tmp_path / "alerts.log",
                          ("--config", str(alerts_config))) as alerts:
        asyncio.run(replay(settings, list(candle_records(series))))
        expected_ids = {f"{s.symbol}|1h|{t}" for s in series for t in s.open_time_ms[FIRST:]}
        records = asyncio.run(read_until(settings, names.predictions, len(expected_ids), 120,
                                         identity=lambda r: orjson.loads(r.value)["id"]))
        predictions = {Prediction.model_validate_json(r.value).id for r in records}
        assert predictions == expected_ids  # every closed candle with a full window, through SASL_SSL and TLS

        control = _cli(env, "control", "fallback", "v-test", "--wait-s", "60")
        assert control.returncode == 0, control.stdout + control.stderr
        events = [orjson.loads(r.value) for r in asyncio.run(read_topic(settings, names.control_events))]
        assert any(e["command"] == "fallback" and e["status"] == "applied" for e in events), events

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not telegram.snapshot():
            time.sleep(0.3)
        assert any(r.method == "sendMessage" for r in telegram.snapshot()), alerts.log_tail()

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert "bse_" in metrics
        window_keys = list(connect_redis_sync(settings).scan_iter(match=f"{settings.topic_prefix}*", count=1000))
        assert window_keys  # the worker's state went to the TLS Redis under the ACL user
        assert worker.returncode is None and alerts.returncode is None

    seen = {"worker log": worker.log_path.read_text(errors="replace"),
            "alerts log": alerts.log_path.read_text(errors="replace"),
            "control output": control.stdout + control.stderr, "/metrics": metrics}
    for secret in _secrets(secure_stack):
        leaked = [where for where, text in seen.items() if secret in text]
        assert not leaked, f"a password reached: {leaked}"


@pytest.mark.parametrize("change, reason", [
    ({"BSE_KAFKA_SASL_PASSWORD": "not-the-password"}, "auth"),
    ({"BSE_KAFKA_SSL_CAFILE": None}, "certificate verify failed"),  # the system's CAs do not know the stack's
    ({"BSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "BSE_KAFKA_SSL_CAFILE": None}, "closed"),  # no TLS
])
def test_a_command_with_a_wrong_password_or_no_tls_stops_with_one_line(
        secure_stack: RunningSecureStack, secure_settings: Settings, change: dict[str, str | None],
        reason: str) -> None:
    env = {**service_env(secure_settings), "BSE_CONTROL_SECRET": CONTROL_SECRET}
    for name, value in change.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    result = _cli({**env, "PATH": "/usr/bin:/bin"}, "control", "rollback", "--no-wait", timeout_s=180)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert reason in lines[0].lower()
    assert "Traceback" not in result.stderr
    for secret in _secrets(secure_stack):
        assert secret not in result.stdout + result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
