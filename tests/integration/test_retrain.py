"""``bse-predict retrain`` on real Kafka and Redis beside a real worker: a retrain on a small CSV archive
trains a new version, gates it against the live one, sends the signed shadow and the worker applies it;
a refused gate leaves the fleet and the models folder as they were; pruning keeps live, shadow and
fallback; the scheduler starts a retrain on a drift event, once per minimum interval."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from configs.settings import Settings, load_settings
from bse_predict.candles.files import CandleSeries
from bse_predict.candles.synthetic import synthetic_series
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import ensure_topics
from bse_predict.control.messages import build_message
from bse_predict.control.sender import send_control_and_wait
from bse_predict.control.state_machine import ControlState
from bse_predict.control.state_store import RedisControlStore
from bse_predict.training.train import train_version
from tests.conftest import TRAINING_OVERRIDES
from tests.support.fake_telegram import FakeTelegram
from tests.support.control_events import SchedulerProcess, control_events, wait_for_status
from tests.support.worker_process import WorkerProcess, service_env

pytestmark = pytest.mark.integration

SECRET = "retrain-test-secret-at-least-32-characters"
BOT_TOKEN = "123456:retrain-test-token"
END_MS = 1_772_323_200_000  # 2026-03-01 00:00 UTC
HOURS = 24 * 92  # three months of hourly candles per symbol
TINY_FOREST = {"n_estimators": 12, "max_depth": 5, "min_samples_leaf": 40, "seed": 3}
RETRAIN = {"months": 3, "holdout_hours": 360, "min_holdout_rows": 100, "gate": {"samples": 400},
           "shadow_wait_s": 60, "schedule": None, "keep_versions": 1}


def _write_archive(folder: Path) -> Path:
    """Two symbols of generated candles as CSV files: the archive a retrain reads."""
    folder.mkdir(parents=True)
    for seed, symbol in enumerate(("AAAUSDT", "BBBUSDT")):
        one = synthetic_series(symbol, HOURS, seed + 11, END_MS)
        table = np.column_stack([one.open_time_ms.astype(np.float64), one.ohlcv])
        np.savetxt(folder / f"{symbol}-1h.csv", table, delimiter=",", fmt=["%d"] + ["%.8f"] * 5,
                   header="open_time_ms,open,high,low,close,volume", comments="")
    return folder


def _config(path: Path, archive: Path, **retrain: object) -> Path:
    models = json.loads(json.dumps(TRAINING_OVERRIDES["models"]))
    models["families"]["random_forest"]["params"] = TINY_FOREST
    document = {"training": {"holdout_fraction": 0.2}, "models": models,
                "retrain": {**RETRAIN, "archive": [str(archive)], **retrain}}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _train(settings: Settings, archive_series: list[CandleSeries], version: str) -> None:
    models = json.loads(json.dumps(TRAINING_OVERRIDES["models"]))
    models["families"]["random_forest"]["params"] = TINY_FOREST
    trainer = load_settings(models_dir=str(settings.models_dir), models=models, training={"max_rows_per_symbol": 1200})
    train_version(archive_series, trainer, version, show_progress=False)


def _series(cut_hours: int = 0) -> list[CandleSeries]:
    """The archive's candles, less the newest ``cut_hours``."""
    whole = [synthetic_series(s, HOURS, seed + 11, END_MS) for seed, s in enumerate(("AAAUSDT", "BBBUSDT"))]
    kept = HOURS - cut_hours
    return [CandleSeries(one.symbol, one.timeframe, one.open_time_ms[:kept], one.ohlcv[:kept], one.source)
            for one in whole]


def _retrain(env: dict[str, str], config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "bse_predict.cli", "retrain", "--config", str(config), *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    print(f"retrain: exit {done.returncode} after {time.monotonic() - started:.1f} s\n{done.stderr[-3000:]}")
    return done


def _state(settings: Settings) -> ControlState | None:
    async def read() -> ControlState | None:
        store = RedisControlStore.connect(settings)
        try:
            return await store.read()
        finally:
            await store.close()

    return asyncio.run(read())


def _versions(settings: Settings) -> set[str]:
    return {p.name for p in settings.models_dir.iterdir() if not p.name.startswith(".")}


@pytest.fixture
def fleet(isolated: Settings, tmp_path: Path) -> Settings:
    """Isolated settings whose models folder holds three small versions, oldest first: v-old-a, v-old-b, v-live,
    trained on the archive as it was 20 days before its newest candle (before the retrain's holdout)."""
    settings = isolated.model_copy(update={"models_dir": tmp_path / "models"})
    series = _series(cut_hours=24 * 20)
    for version in ("v-old-a", "v-old-b", "v-live"):
        _train(settings, series, version)
    asyncio.run(ensure_topics(settings))
    return settings


def _control(settings: Settings, command: str, args: dict) -> None:
    fields = build_message(command, args, SECRET, datetime.now(UTC))
    answer = asyncio.run(send_control_and_wait(settings, fields, 30))
    assert answer is not None and answer.status == "applied", answer


def test_a_retrain_is_gated_and_shadowed_or_refused_and_pruning_keeps_the_fleets_versions(
        fleet: Settings, tmp_path: Path) -> None:
    settings = fleet
    archive = _write_archive(tmp_path / "archive")
    env = {**service_env(settings), "BSE_CONTROL_SECRET": SECRET}
    with WorkerProcess(env, tmp_path / "worker.log") as worker:
        _control(settings, "fallback", {"version": "v-old-a"})
        before = _state(settings)
        assert before is not None and before.live == "v-live" and before.fallback == "v-old-a"

        # A gate that asks for a clear improvement (1 nat per row) refuses: nothing changes, the version is gone.
        refused = _retrain(env, _config(tmp_path / "strict.yaml", archive, gate={"samples": 400,
                                                                                 "max_loss_increase_nats": -1.0}))
        assert refused.returncode == 2, (refused, worker.log_tail())
        last_line = refused.stderr.strip().splitlines()[-1]
        assert last_line.startswith("error: retrain failed at gate: refused"), refused.stderr
        assert refused.stderr.count("error:") == 1
        assert _state(settings) == before
        assert _versions(settings) == {"v-old-a", "v-old-b", "v-live"}

        # The shipped gate: the new version is not significantly worse, the worker applies the shadow;
        # each step is also a note to the operations chat.
        with FakeTelegram(BOT_TOKEN) as telegram:
            done = _retrain({**env, "TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": telegram.url},
                            _config(tmp_path / "retrain.yaml", archive, ops_chat="-100777"))
            notes = [(r.chat_id, r.plain.splitlines()[0]) for r in telegram.received]
        assert done.returncode == 0, (done, worker.log_tail())
        after = _state(settings)
        assert after is not None and after.shadow is not None and after.shadow.startswith("r")
        new = after.shadow
        assert (after.live, after.fallback) == ("v-live", "v-old-a")
        assert f"retrain {new}: shadowed; pruned v-old-b" in done.stdout
        assert notes == [("-100777", f"🔄 retrain {new}: {step}") for step in ("started", "trained", "gated")] + [
            ("-100777", f"✅ retrain {new}: {step}") for step in ("shadowed", "pruned")]
        # keep_versions 1 keeps only the newest, plus live, shadow and fallback: v-old-b goes.
        assert _versions(settings) == {"v-old-a", "v-live", new}

    events = control_events(settings)
    retrains = [e for e in events if str(e.get("status", "")).startswith("retrain_")]
    runs: dict[str, list[str]] = {}
    for event in retrains:
        runs.setdefault(event["run_id"], []).append(event["status"])
    assert sorted(runs.values()) == sorted([
        ["retrain_started", "retrain_trained", "retrain_gated", "retrain_failed"],
        ["retrain_started", "retrain_trained", "retrain_gated", "retrain_shadowed", "retrain_pruned"]])
    failed = next(e for e in retrains if e["status"] == "retrain_failed")
    assert failed["step"] == "gate" and failed["refused"] is True and "the fleet is unchanged" in failed["reason"]
    gated = [e for e in retrains if e["status"] == "retrain_gated"]
    assert [g["passed"] for g in gated] == [False, True] and all(g["live"] == "v-live" for g in gated)
    assert gated[1]["rows"] >= 100 and gated[1]["loss_difference_nats"]["lower"] <= 0
    pruned = next(e for e in retrains if e["status"] == "retrain_pruned")
    assert pruned["pruned"] == ["v-old-b"]
    applied = [e for e in events if e.get("status") == "applied" and e.get("command") == "shadow"]
    assert len(applied) == 1 and applied[0]["issued_by"] == "auto-retrain" and applied[0]["state"]["shadow"] == new


async def _send_event(settings: Settings, event: dict) -> None:
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("control.events"), json.dumps(event).encode(), key=b"drift")
    finally:
        await producer.stop()


def test_the_scheduler_retrains_on_a_drift_event_once_per_interval(fleet: Settings, tmp_path: Path) -> None:
    settings = fleet
    archive = _write_archive(tmp_path / "archive")
    env = {**service_env(settings), "BSE_CONTROL_SECRET": SECRET}
    config = _config(tmp_path / "scheduled.yaml", archive, triggers=["drift"], min_interval_hours=1, keep_versions=0)
    drift = {"status": "drift", "reason": "rsi_14: PSI 0.41 > 0.25 over 900 live rows of v-live", "version": "v-live"}
    with WorkerProcess(env, tmp_path / "worker.log") as worker, \
            SchedulerProcess(settings, env, tmp_path / "scheduler.log", ("--schedule", "--config", str(config))):
        asyncio.run(_send_event(settings, drift))
        shadowed = wait_for_status(settings, "retrain_shadowed", 1, 180)
        assert shadowed[0]["version"] == _state(settings).shadow, worker.log_tail()
        asyncio.run(_send_event(settings, drift))  # inside the minimum interval: no second retrain
        (skipped,) = wait_for_status(settings, "retrain_skipped", 1, 30)
        assert "skipped, a retrain started at" in skipped["reason"]
    started = [e for e in control_events(settings) if e.get("status") == "retrain_started"]
    assert len(started) == 1 and started[0]["trigger"].startswith("drift: rsi_14")
    assert _versions(settings) == {"v-old-a", "v-old-b", "v-live", shadowed[0]["version"]}  # keep_versions 0
