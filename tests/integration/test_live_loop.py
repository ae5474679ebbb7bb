"""The whole live loop with no human step, on a compressed clock (issue 14).

The exchange simulator (Binance's formats, real BTC, ETH and SOL futures candles, one hour every
0.2 s) → ``bse-predict ingest`` → ``candles`` → a worker (predictions, outcomes, the challenger test
with ``challenger.auto_promote``) → ``bse-predict archive`` (Parquet) → ``bse-predict retrain
--schedule`` (cron, every minute) → a signed shadow → the sequential test → a signed promote or drop →
the worker serves the result. One continuous run, two scheduled retrains:

1. Live is a version near-certain of a class picked from its input's digits (right a third of the
   time in any stretch of the market; one always sure of "up" won the live test in a rally, and
   when the test decides depends on the machine's speed). The first scheduler's model set is a small
   RandomForest; its version passes the gate, is shadowed, found better on live outcomes and
   promoted with the replaced version shadowed beside it; that watch finds it better again and
   ends (shadow off).
2. A second scheduler's model set is a 1-nearest-neighbour classifier (one-hot probabilities: far
   worse on log loss) and its gate lets anything through (``max_loss_increase_nats: 50``: the live
   test decides); its version is shadowed, found worse and dropped; the forest stays live.

Then every closed candle past the feature lookback has a live prediction, by the version live at the
time (the overconfident one, then the forest, never anything else), and every prediction whose horizon
has passed has its outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bse_predict.candles.parquet_files import read_parquet_candles
from bse_predict.candles.schema import Candle, Outcome, Prediction
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.control.messages import build_message
from bse_predict.control.sender import send_control_and_wait
from bse_predict.features.definitions import LOOKBACK_CANDLES
from bse_predict.serving.manifest import MANIFEST_NAME
from configs.settings import Settings
from tests.conftest import FUTURES, REPO_ROOT, TRAINING_OVERRIDES
from tests.support.bad_graphs import overconfident_copy
from tests.support.control_events import SchedulerProcess, wait_for_event
from tests.support.kafka_io import read_topic
from tests.support.worker_process import CommandProcess, WorkerProcess, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "live-loop-secret-at-least-32-characters"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
HOUR_S = 0.2
HISTORY_HOURS = 1_080  # closed when the exchange starts: ingest backfills them by REST
LIVE_HOURS = 5_000  # more than the run needs: it stops the exchange when the loop is done
HOUR_MS = 3_600_000
HORIZON_MS = 72 * HOUR_MS
OVERCONFIDENT = "v-overconfident"

TINY_FOREST = {"n_estimators": 12, "max_depth": 5, "min_samples_leaf": 40, "seed": 3}
ONE_NEIGHBOUR = {"k": 1, "smoothing": 0.0, "spacing": 1, "max_pool": 2000, "pool_from": "spread", "seed": 3}
RETRAIN = {"months": 1, "holdout_hours": 240, "min_holdout_rows": 100, "gate": {"samples": 400},
           "shadow_wait_s": 60, "schedule": "* * * * *", "triggers": [], "min_interval_hours": 0,
           "keep_versions": 0}


class ArchiveProcess(CommandProcess):
    """``bse-predict archive``; it reads ``candles`` from the earliest offset whenever its group joins."""

    command = "archive"

    def ready(self) -> bool:
        return True


class IngestProcess(CommandProcess):
    """``bse-predict ingest``; it backfills from the exchange whenever it connects."""

    command = "ingest"

    def ready(self) -> bool:
        return True


@contextlib.contextmanager
def _exchange(log_path: Path) -> Iterator[dict[str, Any]]:
    """The simulator as a program; yields what it printed about itself (its URLs)."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.exchange_sim", "--data", str(FUTURES), "--symbols", ",".join(SYMBOLS),
             "--last-hours", str(HISTORY_HOURS + LIVE_HOURS), "--history-hours", str(HISTORY_HOURS),
             "--hour-seconds", f"{HOUR_S:g}", "--tick-seconds", f"{HOUR_S / 2:g}"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"the exchange simulator did not start: {log_path.read_text(errors='replace')[-2000:]}"
        yield json.loads(line)
    finally:
        process.terminate()
        process.wait(30)


def _trained_long_ago(version_dir: Path) -> None:
    """Say the version was trained on 2020's candles: the retrain's gate compares on holdout rows after the
    live version's own training data, and v-test (its source) was trained on the newest candles there are."""
    manifest_path = version_dir / MANIFEST_NAME
    fields = json.loads(manifest_path.read_text())
    for span in fields["data_span"].values():
        span.update(start_ms=1_577_836_800_000, end_ms=1_609_459_200_000)  # 2020-01-01 to 2021-01-01 UTC
    manifest_path.write_text(json.dumps(fields))


def _model_set(family: str, params: dict[str, Any]) -> dict[str, Any]:
    models = json.loads(json.dumps(TRAINING_OVERRIDES["models"]))
    models["served"] = family
    models["families"][family] = {"enabled": True, "params": params}
    return models


def _config(path: Path, archive: Path, models: dict[str, Any], **retrain: Any) -> Path:
    document = {"training": {"holdout_fraction": 0.2}, "models": models,
                "retrain": {**RETRAIN, "archive": [str(archive)], **retrain}}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _archived_candles(archive: Path) -> int:
    if not archive.is_dir() or not any(archive.rglob("*.parquet")):
        return 0
    return sum(len(series.open_time_ms) for series in read_parquet_candles(archive))


def _wait(what: str, done: Any, timeout_s: float, log: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout_s} s\n{log()}")
        time.sleep(1)


def _retrained(settings: Settings, env: dict[str, str], config: Path, log_path: Path, worker: WorkerProcess,
               before: set[str]) -> str:
    """Run a scheduler until its first retrain is shadowed; the new version's name (not one of ``before``)."""
    with SchedulerProcess(settings, env, log_path, ("--schedule", "--config", str(config))):
        shadowed = wait_for_event(settings, f"a retrain of {config.name} shadowed",
                                  lambda e: e.get("status") == "retrain_shadowed" and e.get("version") not in before,
                                  300, lambda: log_path.read_text(errors="replace")[-3000:] + worker.log_tail())
    return str(shadowed["version"])


def _decision(settings: Settings, challenger: str, stream: str, worker: WorkerProcess) -> dict[str, Any]:
    """The challenger test's decision on ``challenger`` (on ``stream``), once the worker applied what it sent."""
    decision = wait_for_event(settings, f"a decision on {challenger} in {stream}",
                              lambda e: e.get("status") == "challenger_decision" and e.get("challenger") == challenger
                              and e.get("challenger_stream") == stream, 240, worker.log_tail)
    wait_for_event(settings, f"control message {decision['control_id']} applied",
                   lambda e: e.get("id") == decision["control_id"] and e.get("status") == "applied", 60,
                   worker.log_tail)
    print(f"{decision['verdict']}: {challenger} ({stream}) against {decision['champion']} after {decision['pairs']} "
          f"paired outcomes; sent {decision['command']} {decision['args']}")
    return decision


def _read(settings: Settings, topic: str) -> list[Any]:
    return asyncio.run(read_topic(settings.kafka_bootstrap, topic, idle_ms=1500))


def _lag(worker: WorkerProcess) -> float | None:
    samples = worker.metrics()
    if samples is None:
        return None
    lags = [value for (name, _), value in samples.items() if name == "bse_consumer_lag"]
    return sum(lags) if lags else None


@pytest.mark.timeout(1200)
def test_the_live_loop_promotes_a_better_retrain_and_drops_a_worse_one_with_no_human_step(
    isolated: Settings, trained_version: Settings, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(trained_version.models_dir / "v-test", models_dir / "v-test")
    overconfident_copy(models_dir, "v-test", OVERCONFIDENT, created_after=timedelta(days=-30))
    shutil.rmtree(models_dir / "v-test")
    _trained_long_ago(models_dir / OVERCONFIDENT)
    settings = isolated.model_copy(update={"models_dir": models_dir})
    asyncio.run(ensure_topics(settings))
    names = TopicNames.of(settings)
    archive = tmp_path / "archive"
    env = {**service_env(settings), "BSE_CONTROL_SECRET": SECRET}
    worker_config = tmp_path / "worker.yaml"
    worker_config.write_text("challenger:\n  auto_promote: true\n", encoding="utf-8")
    better = _config(tmp_path / "forest.yaml", archive, _model_set("random_forest", TINY_FOREST))
    worse = _config(tmp_path / "one-neighbour.yaml", archive, _model_set("lorentzian_knn", ONE_NEIGHBOUR),
                    gate={"samples": 400, "max_loss_increase_nats": 50.0})

    with WorkerProcess(env, tmp_path / "worker.log", ("--config", str(worker_config))) as worker, \
            ArchiveProcess({**env, "BSE_ARCHIVE__FLUSH_INTERVAL_S": "1", "BSE_ARCHIVE__POLL_TIMEOUT_MS": "200"},
                           tmp_path / "archive.log", ("--out", str(archive))) as archiver, \
            _exchange(tmp_path / "exchange.log") as sim:
        answer = asyncio.run(send_control_and_wait(
            settings, build_message("promote", {"version": OVERCONFIDENT}, SECRET, datetime.now(UTC)), 30))
        assert answer is not None and answer.status == "applied", answer
        ingest_env = {**env, "BSE_INGEST__FUTURES__REST_URL": sim["rest_url"],
                      "BSE_INGEST__FUTURES__WS_URL": sim["ws_url"],
                      "BSE_INGEST__UPDATE_INTERVAL_S": f"{HOUR_S / 4:g}",
                      "BSE_INGEST__ROTATE_AFTER_S": f"{20 * HOUR_S:g}",  # the simulator cuts connections at 24 h
                      "BSE_INGEST__BACKFILL_MAX_CANDLES": str(HISTORY_HOURS)}
        with IngestProcess(ingest_env, tmp_path / "ingest.log",
                           ("--market", "futures", "--symbols", ",".join(SYMBOLS))) as ingest:
            _wait("the backfilled history in the archive",
                  lambda: _archived_candles(archive) >= len(SYMBOLS) * (HISTORY_HOURS - 1), 180,
                  lambda: archiver.log_tail() + ingest.log_tail())

            forest = _retrained(settings, env, better, tmp_path / "scheduler-forest.log", worker, {OVERCONFIDENT})
            promoted = _decision(settings, forest, "shadow", worker)
            assert (promoted["verdict"], promoted["champion"]) == ("challenger_better", OVERCONFIDENT)
            assert (promoted["command"], promoted["args"]) == ("promote", {"version": forest, "shadow_previous": True})
            watched = _decision(settings, forest, "live", worker)
            assert (watched["verdict"], watched["champion"]) == ("challenger_better", OVERCONFIDENT)
            assert (watched["command"], watched["args"]) == ("shadow", {"version": None})

            neighbour = _retrained(settings, env, worse, tmp_path / "scheduler-one-neighbour.log", worker,
                                   {OVERCONFIDENT, forest})
            dropped = _decision(settings, neighbour, "shadow", worker)
            assert (dropped["verdict"], dropped["champion"]) == ("challenger_worse", forest)
            assert (dropped["command"], dropped["args"]) == ("shadow", {"version": None})
        # ingest stopped: the worker finishes what it has, then the books are closed
        _wait("the worker caught up", lambda: _lag(worker) == 0, 120, worker.log_tail)

    closed: dict[str, set[int]] = defaultdict(set)
    for record in _read(settings, names.candles):
        candle = Candle.model_validate_json(record.value)
        if candle.closed:
            closed[candle.symbol].add(candle.open_time)
    versions: dict[str, list[str]] = defaultdict(list)
    predicted: dict[str, set[int]] = defaultdict(set)
    for record in _read(settings, names.predictions):
        prediction = Prediction.model_validate_json(record.value)
        predicted[prediction.symbol].add(prediction.open_time)
        if not versions[prediction.symbol] or versions[prediction.symbol][-1] != prediction.model.version:
            versions[prediction.symbol].append(prediction.model.version)
    settled = {(o.id, o.target) for o in (Outcome.model_validate_json(r.value)
                                          for r in _read(settings, names.outcomes)) if o.stream == "live"}
    for symbol in SYMBOLS:
        times = sorted(closed[symbol])
        assert times == list(range(times[0], times[-1] + HOUR_MS, HOUR_MS)), f"{symbol}: the candles have a hole"
        assert predicted[symbol] == set(times[LOOKBACK_CANDLES - 1:]), f"{symbol}: predictions and candles differ"
        assert versions[symbol] == [OVERCONFIDENT, forest], f"{symbol}: served {versions[symbol]}"
        due = [t for t in predicted[symbol] if t + HORIZON_MS + HOUR_MS <= times[-1]]
        missing = [(t, target) for t in due for target in ("1%", "2%", "5%")
                   if (f"{symbol}|1h|{t}", target) not in settled]
        assert not missing, f"{symbol}: {len(missing)} outcomes missing, first {missing[:3]}"
        print(f"{symbol}: {len(times)} closed candles, {len(predicted[symbol])} predicted, "
              f"{len(due)} past their horizon and settled, served {' then '.join(versions[symbol])}")

