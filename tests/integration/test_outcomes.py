"""Live outcomes on the real stack: the worker settles its predictions exactly as the offline labels.

A replay of real futures candles (three symbols) flows through the real worker
subprocess; the worker is SIGKILLed mid-replay, a second one finishes it, and
every outcome on the ``outcomes`` topic must equal ``bse_predict.labels.first_touch`` on the
same candles, none missing.
"""

from __future__ import annotations

import dataclasses

import asyncio
import re
import shutil
import socket
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import SecretStr

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.candles.grid import fill_gaps
from bse_predict.control.messages import build_message, encode_message, verify_message
from bse_predict.monitoring.drift import bin_counts, psi
from bse_predict.features.definitions import FEATURE_NAMES, LOOKBACK_CANDLES, feature_matrix
from bse_predict.labels.first_touch import CLASS_NAMES, NONE, UNKNOWN, label_matrix, time_to_touch
from bse_predict.monitoring.live_scores import RollingScores
from bse_predict.monitoring.outcomes import PendingOutcome, Settlement
from bse_predict.serving.manifest import load_manifest
from bse_predict.candles.schema import Candle, ModelRef, Outcome, Prediction, TargetPrediction
from bse_predict.serving.signals import target_label
from bse_predict.candles.synthetic import synthetic_series
from tests.support.bad_graphs import overconfident_copy
from tests.support.kafka_io import read_topic, read_until, send_raw
from tests.support.worker_process import WorkerProcess, service_env
from bse_predict.connections.clients import connect_redis, kafka_options
from bse_predict.monitoring.challenger import ChallengerWatch
from bse_predict.monitoring.drift_monitor import DriftMonitor
from bse_predict.monitoring.metrics import RedisLiveScores, WorkerMetrics
from bse_predict.monitoring.resolver import KafkaOutcomePublisher
from bse_predict.stream.replay import candle_records, replay
from bse_predict.connections.topics import TopicNames, ensure_topics

pytestmark = pytest.mark.integration

_SECRET = "integration-secret-at-least-32-characters"

STEP_MS = 3_600_000
HOURS = 330
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


@pytest.fixture
def stream_settings(isolated: Settings, trained_version: Settings) -> Settings:
    settings = isolated.model_copy(update={"models_dir": trained_version.models_dir})
    asyncio.run(ensure_topics(settings))
    return settings


def _expected_outcome(series: CandleSeries, open_time: int, pct: float, horizon: int) -> tuple[str, int] | None:
    """(outcome, resolved_at) from the offline label rule on the replayed candles; None when unknown."""
    grid = fill_gaps(series.open_time_ms, series.ohlcv, STEP_MS)
    row = int(np.searchsorted(grid.open_time_ms, open_time))
    label = int(label_matrix(grid.ohlcv, grid.is_real, pct / 100, horizon)[row])
    if label == UNKNOWN:
        return None
    if label == NONE:
        return "none", open_time + (horizon + 1) * STEP_MS
    future = np.full((1, horizon, 5), np.nan)
    valid = np.zeros((1, horizon), dtype=bool)
    ahead = grid.ohlcv[row + 1: row + 1 + horizon]
    future[0, : len(ahead)], valid[0, : len(ahead)] = ahead, True
    k = int(time_to_touch(grid.ohlcv[row: row + 1, 3], future, valid, pct / 100)[0])
    return CLASS_NAMES[label], open_time + (k + 1) * STEP_MS


def test_outcomes_equal_offline_labels_and_a_sigkill_loses_no_pending_outcome(
    stream_settings: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    slices = {s: futures_series[s].tail(HOURS) for s in SYMBOLS}
    records = list(candle_records(list(slices.values())))
    names = TopicNames.of(stream_settings)
    horizon = stream_settings.market.horizon_candles
    env = service_env(stream_settings)

    first = WorkerProcess(env, tmp_path / "worker-1.log").start()
    replaying = threading.Thread(target=asyncio.run, args=(replay(stream_settings, records, rate_per_s=110),))
    replaying.start()  # about 9 s of closed candles, still flowing when the worker dies
    try:
        early = asyncio.run(read_until(stream_settings.kafka_bootstrap, names.outcomes, 40, 90))
        assert len(early) >= 40, first.log_tail()
    finally:
        first.kill()
    assert replaying.is_alive(), "the replay ended before the kill: the test would prove nothing"

    predictions = {}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "metrics.yaml"
    config.write_text(f"live_metrics:\n  metrics_port: {port}\n  refresh_s: 0.5\n", encoding="utf-8")
    with WorkerProcess(env, tmp_path / "worker-2.log", ("--config", str(config)), metrics_port=port) as second:
        replaying.join()
        expected_ids = {f"{s}|1h|{int(t)}" for s, series in slices.items()
                        for t in series.open_time_ms[stream_settings_min_history(stream_settings) - 1:]}
        for record in asyncio.run(read_until(stream_settings.kafka_bootstrap, names.predictions, len(expected_ids), 90,
                                             identity=lambda r: orjson.loads(r.value)["id"])):
            prediction = Prediction.model_validate_json(record.value)
            predictions[prediction.id] = prediction
        assert set(predictions) == expected_ids, second.log_tail()
        expected: dict[tuple[str, str], tuple[str, int]] = {}
        for prediction in predictions.values():
            for pct in stream_settings.market.targets_pct:
                answer = _expected_outcome(slices[prediction.symbol], prediction.open_time, pct, horizon)
                if answer is not None:
                    expected[(prediction.id, target_label(pct))] = answer
        records_out = asyncio.run(read_until(stream_settings.kafka_bootstrap, names.outcomes, len(expected), 90,
                                             identity=lambda r: (orjson.loads(r.value)["id"], orjson.loads(r.value)["target"])))
        assert len({(orjson.loads(r.value)["id"], orjson.loads(r.value)["target"]) for r in records_out}) >= len(expected), \
            second.log_tail()
        time.sleep(1.5)  # one refresh of the gauges after the last outcome
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    outcomes = [Outcome.model_validate_json(r.value) for r in asyncio.run(read_topic(stream_settings.kafka_bootstrap, names.outcomes))]

    by_key: dict[tuple[str, str], Outcome] = {}
    for outcome in outcomes:
        key = (outcome.id, outcome.target)
        assert by_key.setdefault(key, outcome) == outcome, f"two different answers for {key}"
    assert set(by_key) == set(expected), (
        f"missing {sorted(set(expected) - set(by_key))[:5]}, unexpected {sorted(set(by_key) - set(expected))[:5]}")
    counts = {"up": 0, "down": 0, "none": 0}
    for key, outcome in by_key.items():
        assert (outcome.outcome, outcome.resolved_at) == expected[key], key
        part = predictions[outcome.id].targets[outcome.target]
        assert (outcome.p_up, outcome.p_down, outcome.p_none) == (part.p_up, part.p_down, part.p_none)
        assert outcome.model == predictions[outcome.id].model and outcome.stream == "live"
        counts[outcome.outcome] += 1
    assert min(counts.values()) > 0, counts  # every class occurred: the comparison covered all branches

    version = next(iter(predictions.values())).model.version
    live_count = re.search(rf'bse_live_outcomes{{stream="live",target="1%",variant="control",version="{version}",'
                           rf'window_hours="168"}} ([0-9.]+)', scraped)
    assert live_count is not None and float(live_count.group(1)) > 0, scraped[:2000]
    assert re.search(r'bse_consumer_lag\{partition="\d+"\} 0\.0', scraped), "no consumer lag gauge"
    assert re.search(r'bse_prediction_latency_ms_count\{stream="live"\} [1-9]', scraped)
    assert re.search(r'bse_breaker_open\{version="[^"]+"\} 0\.0', scraped)


def stream_settings_min_history(settings: Settings) -> int:
    from bse_predict.serving.manifest import load_manifest

    return load_manifest(settings.models_dir / "v-test").min_history


# --- the champion/challenger decision and the live scores, on the real Kafka and Redis ----------


def _pair_settlements(rng: np.random.Generator, n: int, skill_live: float, skill_shadow: float) -> list[Settlement]:
    """Live (v1) and shadow (v2) answers to the same predictions; each model mixes the truth with 1/3 by its skill."""
    settlements = []
    for i in range(n):
        truth = rng.dirichlet([2.0, 2.0, 2.0])
        label = int(rng.choice(3, p=truth))
        for version, stream, skill in (("v1", "live", skill_live), ("v2", "shadow", skill_shadow)):
            p = skill * truth + (1 - skill) / 3
            item = PendingOutcome(
                prediction_id=f"BTCUSDT|1h|{i * STEP_MS}", symbol="BTCUSDT", timeframe="1h", open_time=i * STEP_MS,
                entry_close=100.0, target="2%", target_frac=0.02, horizon_candles=72, step_ms=STEP_MS,
                model=ModelRef(name="random_forest", version=version), variant="control", stream=stream,
                p_up=float(p[0]), p_down=float(p[1]), p_none=float(p[2]))
            settlements.append(Settlement(pending=item, label=label, resolved_at=(i + 2) * STEP_MS))
    return settlements


@pytest.mark.parametrize(("skill_shadow", "command", "args"), [
    (0.9, "promote", {"version": "v2", "shadow_previous": True}),  # watched after it (watch_after_promotion)
    (0.0, "shadow", {"version": None}),
])
def test_a_significant_challenger_sends_a_signed_control_message_and_an_event(
    services: Settings, isolated: Settings, skill_shadow: float, command: str, args: dict[str, object]
) -> None:
    settings = isolated.model_copy(update={
        "control_secret": SecretStr(_SECRET),
        "challenger": isolated.challenger.model_copy(update={"auto_promote": True}),
    })
    asyncio.run(ensure_topics(settings))
    names = TopicNames.of(settings)
    settlements = _pair_settlements(np.random.default_rng(8), 3000, skill_live=0.45, skill_shadow=skill_shadow)

    async def run() -> list[dict[str, object]]:
        client = connect_redis(settings)
        sender = KafkaOutcomePublisher(kafka_options(settings), names.outcomes)
        await sender.start()
        try:
            watches = [ChallengerWatch(client, settings, sender, lambda a, b: a > b, names.control, names.control_events)
                       for _ in range(2)]  # two workers adding to the same evidence
            for start in range(0, len(settlements), 48):
                await watches[(start // 48) % 2].on_settled(settlements[start:start + 48])
            return [d for w in watches for d in w.decisions]
        finally:
            await sender.stop()
            await client.aclose()

    decisions = asyncio.run(run())
    assert len(decisions) == 1, decisions  # decided once for the fleet, whichever worker crossed first
    controls = asyncio.run(read_until(settings.kafka_bootstrap, names.control, 1, 30))
    events = asyncio.run(read_until(settings.kafka_bootstrap, names.control_events, 1, 30))
    assert len(controls) == 1 and controls[0].key == command.encode()
    message = verify_message(controls[0].value, _SECRET, datetime.now(UTC))
    assert (message.command, message.args, message.issued_by) == (command, args, "auto-challenger")
    event = orjson.loads(events[0].value)
    assert event["status"] == "challenger_decision" and event["control_id"] == message.id
    assert event["command"] == command and event["pairs"] < 3000
    assert max(event["e_value_better"], event["e_value_worse"]) >= 2 / settings.challenger.alpha


def test_live_score_sums_wait_in_the_worker_until_the_flush_interval(services: Settings, isolated: Settings) -> None:
    settings = isolated
    settlements = _pair_settlements(np.random.default_rng(10), 40, skill_live=0.5, skill_shadow=0.2)
    now = [0.0]

    async def run() -> tuple[list, list, dict]:
        client = connect_redis(settings)
        try:
            scores = RedisLiveScores(client, settings, clock_s=lambda: now[0])
            newest_key = f"{settings.topic_prefix}bse:live:newest"
            await scores.on_settled(settlements[:20])
            before = await client.zrange(newest_key, 0, -1)
            now[0] = settings.live_metrics.flush_s
            await scores.on_settled(settlements[20:])
            after = await client.zrange(newest_key, 0, -1)
            return before, after, await RedisLiveScores(client, settings).read()
        finally:
            await client.aclose()

    before, after, found = asyncio.run(run())
    assert settings.live_metrics.flush_s > 0 and before == []  # nothing reached Redis within the interval
    assert len(after) == 2  # the live and the shadow series, both batches sent at once
    assert sum(scores.count for (key, hours), scores in found.items() if hours == 168) == len(settlements)


def test_live_scores_in_redis_equal_the_rolling_formulas_and_reach_prometheus(services: Settings, isolated: Settings) -> None:
    settings = isolated
    settlements = _pair_settlements(np.random.default_rng(9), 400, skill_live=0.5, skill_shadow=0.2)
    bins = settings.live_metrics.calibration_bins
    expected = {stream: RollingScores(24, 3_600_000, bins) for stream in ("live", "shadow")}
    for s in settlements:
        p = s.pending
        expected[p.stream].update((p.p_up, p.p_down, p.p_none), CLASS_NAMES[s.label], s.resolved_at)

    async def run() -> dict:
        client = connect_redis(settings)
        try:
            scores = RedisLiveScores(client, settings)
            for start in range(0, len(settlements), 37):
                await scores.on_settled(settlements[start:start + 37])
            return await scores.read()
        finally:
            await client.aclose()

    found = asyncio.run(run())
    for stream, version in (("live", "v1"), ("shadow", "v2")):
        got, want = found[((version, "control", "2%", stream), 24)], expected[stream].scores()
        assert want is not None and got.count == want.count == 24
        for name in ("log_loss", "brier", "accuracy", "base_rate"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1e-9), name
        assert [(c.cls, c.bin, c.count) for c in got.calibration] == [(c.cls, c.bin, c.count) for c in want.calibration]
        assert [c.hit_rate for c in got.calibration] == pytest.approx([c.hit_rate for c in want.calibration])
        assert found[((version, "control", "2%", stream), 168)].count == 168

    metrics = WorkerMetrics()
    metrics.set_scores(found)
    metrics.set_counts([{"predicted": 5, "dead_letters": 1}])
    metrics.set_counts([{"predicted": 9, "dead_letters": 1}])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'bse_live_log_loss{stream="live",target="2%",variant="control",version="v1",window_hours="24"}' in text
    assert 'bse_stream_events_total{kind="predicted"} 9.0' in text
    assert "bse_live_calibration_hit_rate" in text and "bse_prediction_latency_ms" in text


def test_a_drifted_feature_is_reported_on_control_events_with_its_psi(
    isolated: Settings, trained_version: Settings
) -> None:
    """Candles four times as volatile as the training data: the volatility features drift, PSI as computed offline."""
    settings = isolated.model_copy(update={
        "models_dir": trained_version.models_dir,
        "drift": isolated.drift.model_copy(update={"min_rows": 300, "check_every_rows": 300, "psi_threshold": 0.25,
                                                   "window_days": 60}),
    })
    asyncio.run(ensure_topics(settings))
    names = TopicNames.of(settings)
    wild = synthetic_series("WILDUSDT", 700, seed=3, end_ms=1_767_225_600_000, hourly_volatility=0.03)
    manifest = load_manifest(settings.models_dir / "v-test")
    assert manifest.feature_bins is not None
    part = TargetPrediction(p_up=0.4, p_down=0.4, p_none=0.2, direction="up", confidence=0.5, signal="NEUTRAL")
    candles = [Candle(symbol="WILDUSDT", timeframe="1h", open_time=int(t), open=o, high=h, low=lo, close=c, volume=v)
               for t, (o, h, lo, c, v) in zip(wild.open_time_ms, wild.ohlcv.tolist(), strict=True)]
    predictions = [Prediction(id=c.id, symbol=c.symbol, timeframe="1h", open_time=c.open_time, close=c.close,
                              horizon_hours=72, targets={"1%": part}, model=ModelRef(name="random_forest", version="v-test"),
                              latency_ms=1.0) for c in candles]
    # the worker predicts (and hands drift the features of) every candle with a full window
    predicted = predictions[LOOKBACK_CANDLES - 1:]
    features = feature_matrix(wild.open_time_ms, wild.ohlcv)[LOOKBACK_CANDLES - 1:]

    checks: list[tuple[str, dict[str, float], int]] = []  # the bse_drift_psi gauge's input, events sent before

    async def run() -> list[dict[str, object]]:
        client = connect_redis(settings)
        sender = KafkaOutcomePublisher(kafka_options(settings), names.outcomes)
        await sender.start()
        try:
            monitor = DriftMonitor(client, settings, sender, names.control_events,
                                   on_psi=lambda version, judged: checks.append((version, dict(judged),
                                                                                 len(monitor.events))))
            for start in range(0, len(predicted), 25):
                await monitor.on_batch(predicted[start:start + 25], lambda start=start: features[start:start + 25])
            return monitor.events
        finally:
            await sender.stop()
            await client.aclose()

    events = asyncio.run(run())
    assert events, "no drift reported on candles four times as volatile as the training data"
    published = [orjson.loads(r.value) for r in asyncio.run(read_until(settings.kafka_bootstrap, names.control_events,
                                                                         len(events), 30))]
    assert sorted(e["feature"] for e in published) == sorted(e["feature"] for e in events)
    assert any("vol" in str(e["feature"]) or "atr" in str(e["feature"]) or "bb_width" in str(e["feature"]) for e in events)
    # The PSI of the first check, recomputed offline on the same rows: every candle with a full window so far.
    first = events[0]
    rows = int(first["rows"])
    column = FEATURE_NAMES.index(str(first["feature"]))
    bins = manifest.feature_bins[str(first["feature"])]
    assert first["psi"] == pytest.approx(psi(bins.expected, bin_counts(features[:rows, column], bins.edges)), rel=1e-9)
    assert 300 <= rows < 300 + 25 and float(first["psi"]) > 0.25
    version, judged, _ = checks[0]  # every feature's PSI of that check, the drifted ones and the rest
    reported_first = events[:checks[1][2]] if len(checks) > 1 else events
    assert version == "v-test" and judged[str(first["feature"])] == first["psi"]
    assert {name for name, value in judged.items() if value > 0.25} == {e["feature"] for e in reported_first}
    assert len(judged) > len(reported_first)


# --- end to end: the worker's own shadow predictions, paired, decided and obeyed -----------------




# v-worse is the newest version, hence live by default; each case first sets v-test live, then:
_DROP_A_WORSE_SHADOW = (("shadow", {"version": "v-worse"}),)
_ROLL_BACK_A_LIVE_REGRESSION = (("promote", {"version": "v-worse", "shadow_previous": True}),)


@pytest.mark.parametrize(
    ("setup", "stream", "command", "args", "state"),
    [
        (_DROP_A_WORSE_SHADOW, "shadow", "shadow", {"version": None}, {"live": "v-test", "shadow": None}),
        (_ROLL_BACK_A_LIVE_REGRESSION, "live", "rollback", {}, {"live": "v-test", "shadow": None}),
    ],
    ids=["a worse shadow is dropped", "a promotion watched live is rolled back"],
)
def test_a_worse_challenger_is_removed_by_a_signed_decision_the_workers_obey(
    isolated: Settings, trained_version: Settings, futures_series: dict[str, CandleSeries], tmp_path: Path,
    setup: tuple[tuple[str, dict[str, object]], ...], stream: str, command: str, args: dict[str, object],
    state: dict[str, object],
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(trained_version.models_dir / "v-test", models_dir / "v-test")
    overconfident_copy(models_dir, "v-test", "v-worse")
    settings = isolated.model_copy(update={"models_dir": models_dir})
    asyncio.run(ensure_topics(settings))
    names = TopicNames.of(settings)
    config = tmp_path / "auto.yaml"
    config.write_text("challenger:\n  auto_promote: true\n", encoding="utf-8")
    env = {**service_env(settings), "BSE_CONTROL_SECRET": _SECRET}
    records = list(candle_records([futures_series[s].tail(300) for s in SYMBOLS]))
    with WorkerProcess(env, tmp_path / "worker.log", ("--config", str(config))) as worker:
        messages = [build_message(c, a, _SECRET, datetime.now(UTC), "test")
                    for c, a in (("promote", {"version": "v-test"}), *setup)]
        asyncio.run(send_raw(settings.kafka_bootstrap, names.control,
                             [(m["command"].encode(), encode_message(m)) for m in messages]))
        applied = [orjson.loads(r.value) for r in asyncio.run(read_until(settings.kafka_bootstrap, names.control_events,
                                                                          len(messages), 60))]
        assert [(e["status"], e["id"]) for e in applied] == [("applied", m["id"]) for m in messages], applied
        asyncio.run(send_raw(settings.kafka_bootstrap, names.candles, [(r.symbol.encode(), r.payload) for r in records]))
        events: list[dict[str, object]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(e.get("issued_by") == "auto-challenger" and e.get("status") == "applied"
                                                      for e in events):
            events = [orjson.loads(r.value) for r in asyncio.run(read_topic(settings.kafka_bootstrap, names.control_events,
                                                                            idle_ms=1000))]
        decision = next((e for e in events if e.get("status") == "challenger_decision"), None)
        assert decision is not None, worker.log_tail()
        assert (decision["verdict"], decision["champion"], decision["challenger"], decision["challenger_stream"]) == (
            "challenger_worse", "v-test", "v-worse", stream)
        assert (decision["command"], decision["args"]) == (command, args)
        print(f"worse {stream} challenger removed after {decision['pairs']} paired outcomes "
              f"(e-value {decision['e_value_worse']:.3g} >= {decision['threshold']:.3g})")
        controls = asyncio.run(read_topic(settings.kafka_bootstrap, names.control, idle_ms=1000))
        sent = verify_message(controls[-1].value, _SECRET, datetime.now(UTC))
        assert (sent.id, sent.issued_by, sent.command) == (decision["control_id"], "auto-challenger", command)
        obeyed = [e for e in events if e.get("id") == sent.id]
        assert obeyed and obeyed[-1]["status"] == "applied", events
        assert {name: obeyed[-1]["state"][name] for name in state} == state

    outcomes = [Outcome.model_validate_json(r.value)
                for r in asyncio.run(read_topic(settings.kafka_bootstrap, names.outcomes, idle_ms=1000))]
    by_stream: dict[str, dict[tuple[str, str], str]] = {"live": {}, "shadow": {}}
    paired_versions: dict[str, set[str]] = {"live": set(), "shadow": set()}
    for outcome in outcomes:
        by_stream[outcome.stream][(outcome.id, outcome.target)] = outcome.outcome
        paired_versions[outcome.stream].add(outcome.model.version)
    challenger_side = {"live": "v-worse", "shadow": "v-test"} if stream == "live" else {"live": "v-test", "shadow": "v-worse"}
    assert paired_versions["shadow"] == {challenger_side["shadow"]}
    assert challenger_side["live"] in paired_versions["live"]  # and, after a rollback, v-test again
    both = set(by_stream["live"]) & set(by_stream["shadow"])
    assert len(both) >= decision["pairs"], "every paired observation came from a live and a shadow outcome"
    assert all(by_stream["live"][k] == by_stream["shadow"][k] for k in both), "one candle, one answer"


def test_a_pair_counts_once_its_candles_horizon_has_passed_oldest_first(services: Settings, isolated: Settings) -> None:
    """Pairs that settle early are staged: counted only when no earlier candle can still settle, so the
    outcomes that resolve fast (an "up" touch in a rising market) are not counted before the slow ones."""
    settings = isolated
    names = TopicNames.of(settings)
    settlements = _pair_settlements(np.random.default_rng(9), 83, skill_live=0.45, skill_shadow=0.9)
    first_ten = [s for s in settlements if s.pending.open_time < 10 * STEP_MS]  # resolved 2 h after their candle
    newest = [s for s in settlements if s.pending.open_time == 82 * STEP_MS]   # resolved at hour 84: past 0..11's horizon
    evidence_key = f"{settings.topic_prefix}bse:challenger:{{v1|v2}}"

    async def run() -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        client = connect_redis(settings)
        try:
            watch = ChallengerWatch(client, settings, KafkaOutcomePublisher(kafka_options(settings), names.outcomes),
                                    lambda a, b: a > b, names.control, names.control_events)
            await watch.on_settled(first_ten)
            before = await client.hgetall(evidence_key)
            await watch.on_settled(newest)
            return before, await client.hgetall(evidence_key)
        finally:
            await client.aclose()

    before, after = asyncio.run(run())
    assert before == {}, "nothing counts before the horizon of its candle has passed"
    assert float(after[b"pairs"]) == 10, "the ten staged pairs count; the newest waits for its own horizon"


def test_degraded_live_answers_are_not_paired(services: Settings, isolated: Settings) -> None:
    """A fallback answered for the live version: no evidence about the live version may come of it."""
    settings = isolated.model_copy(update={"control_secret": SecretStr(_SECRET),
                                           "challenger": isolated.challenger.model_copy(update={"auto_promote": True})})
    names = TopicNames.of(settings)
    settlements = [s if s.pending.stream == "shadow" else
                   dataclasses.replace(s, pending=s.pending.model_copy(update={"degraded": True}))
                   for s in _pair_settlements(np.random.default_rng(8), 600, skill_live=0.45, skill_shadow=0.0)]

    async def run() -> tuple[list[dict[str, object]], dict[bytes, bytes]]:
        client = connect_redis(settings)
        try:
            watch = ChallengerWatch(client, settings, KafkaOutcomePublisher(kafka_options(settings), names.outcomes),
                                    lambda a, b: a > b, names.control, names.control_events)
            await watch.on_settled(settlements)
            return watch.decisions, await client.hgetall(f"{settings.topic_prefix}bse:challenger:{{v1|v2}}")
        finally:
            await client.aclose()

    decisions, evidence = asyncio.run(run())
    assert decisions == [] and evidence == {}
