"""``bse-predict alerts`` on the real Kafka and Redis, talking to a local fake of the Bot API.

Most tests build the predictions here from a real trained version on real
candles (the trainer's own feature driver and the version's ONNX models, the
path ``tests/support/reference.py`` proves equal to the worker's) and compute
the outcomes with ``bse_predict/labels/first_touch.py`` on the same candles, producing both to
their topics: that keeps each test to seconds and makes the expected messages
exact. One test runs the whole chain instead: the real worker predicts a
replay and settles the outcomes itself. The alerts service always runs as a
subprocess, as an operator runs it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from configs.settings import Settings, load_settings
from bse_predict.alerts.messages import format_digest, format_utc
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.features.definitions import LOOKBACK_CANDLES, feature_matrix
from bse_predict.candles.grid import fill_gaps
from bse_predict.labels.first_touch import CLASS_NAMES, first_touch, time_to_touch
from bse_predict.alerts.summary_stats import ResolvedCall, summarize
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.candles.schema import Candle, ModelRef, Outcome, Prediction, prediction_id
from bse_predict.serving.signals import target_predictions
from tests.conftest import SHARED_DATA
from tests.support.alerts_process import AlertsProcess
from tests.support.fake_telegram import FakeTelegram, Received
from tests.support.kafka_io import read_topic, read_until, send_raw
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.connections.clients import client_environment, connect_redis
from bse_predict.alerts.store import AlertStore
from bse_predict.explain.explainer import Explainer
from bse_predict.explain.explanation import Explanation, explanation_line
from bse_predict.stream.window_store import RedisWindowStore

pytestmark = pytest.mark.integration

TOKEN = "4242424242:AAF_fake-Token.for*tests"
CHATS = ("1001", "-1002")
STEP_MS = 3_600_000
HORIZON = 72
DAY_MS = 86_400_000

THRESHOLDS = {"1%": {"min_confidence": 0.6, "min_probability": 0.6},
              "2%": {"min_confidence": 0.68, "min_probability": 0.65},
              "5%": {"min_confidence": 0.8, "min_probability": 0.6}}
COOLDOWN_HOURS = 6
STALE_NEVER_HOURS = 24 * 365 * 20


@dataclass(frozen=True)
class Scenario:
    predictions: list[Prediction]
    outcomes: list[Outcome]


def _build(series: list[CandleSeries], model_set: ServedModelSet, hours: int, end_before_last: int = HORIZON + 8,
           model_name: str | None = None) -> Scenario:
    """Predictions for ``hours`` candles per symbol ending ``end_before_last`` candles before the
    common end of the files, and every outcome the next 72 candles decide."""
    settings = load_settings()
    common_end = min(int(s.open_time_ms[-1]) for s in series) - end_before_last * STEP_MS
    predictions, outcomes = [], []
    for s in series:
        cut = int(np.searchsorted(s.open_time_ms, common_end, side="right"))
        first = cut - hours
        history = slice(first - LOOKBACK_CANDLES - 5, cut)
        grid = fill_gaps(s.open_time_ms[history], s.ohlcv[history], STEP_MS)
        assert grid.is_real.all() and len(grid) == cut - history.start, f"{s.symbol} has a gap in the test slice"
        features = feature_matrix(grid.open_time_ms, grid.ohlcv)[-hours:]
        by_target = {t: target_predictions(p, settings.signals) for t, p in model_set.predict({"features": features}).items()}
        entry = s.ohlcv[first:cut, 3]
        future = np.stack([s.ohlcv[i + 1 : i + 1 + HORIZON] for i in range(first, cut)])
        valid = np.ones(future.shape[:2], dtype=bool)
        for row in range(hours):
            open_time = int(s.open_time_ms[first + row])
            prediction = Prediction(
                id=prediction_id(s.symbol, "1h", open_time), symbol=s.symbol, timeframe="1h", open_time=open_time,
                close=float(s.ohlcv[first + row, 3]), horizon_hours=HORIZON,
                targets={t: parts[row] for t, parts in by_target.items()},
                model=ModelRef(name=model_name or model_set.model_name, version=model_set.version),
                latency_ms=0.5)
            predictions.append(prediction)
        for target in by_target:
            fraction = float(target.rstrip("%")) / 100
            labels = first_touch(entry, future, valid, fraction)
            took = time_to_touch(entry, future, valid, fraction)
            for row in range(hours):
                p = predictions[-hours + row]
                part = p.targets[target]
                resolved = p.open_time + (int(took[row]) + 1) * STEP_MS if took[row] > 0 else p.open_time + (HORIZON + 1) * STEP_MS
                outcomes.append(Outcome(id=p.id, symbol=p.symbol, open_time=p.open_time, target=target,
                                        outcome=CLASS_NAMES[int(labels[row])], resolved_at=resolved, model=p.model,
                                        p_up=part.p_up, p_down=part.p_down, p_none=part.p_none))
    return Scenario(predictions, outcomes)


def _expected_alerts(predictions: list[Prediction]) -> list[tuple[str, str, str]]:
    """(id, target, direction) of every alert, by the rules of docs/alerts.md, written out independently."""
    last: dict[tuple[str, str, str], int] = {}
    alerts = []
    for p in sorted(predictions, key=lambda p: (p.open_time, p.symbol)):
        for target, part in p.targets.items():
            rule = THRESHOLDS[target]
            called = part.p_up if part.direction == "up" else part.p_down
            if part.confidence < rule["min_confidence"] or called < rule["min_probability"]:
                continue
            key = (p.symbol, target, part.direction)
            if key in last and abs(p.open_time - last[key]) < COOLDOWN_HOURS * STEP_MS:
                continue
            last[key] = p.open_time
            alerts.append((p.id, target, part.direction))
    return alerts


@pytest.fixture(scope="module")
def model_set(trained_version: Settings) -> ServedModelSet:
    return ServedModelSet.load(trained_version.models_dir / "v-test")


@pytest.fixture
def telegram() -> FakeTelegram:
    with FakeTelegram(TOKEN) as fake:
        yield fake


@pytest.fixture
def alerts_settings(isolated: Settings) -> Settings:
    asyncio.run(ensure_topics(isolated))
    return isolated


def _start(settings: Settings, telegram: FakeTelegram, tmp_path: Path, name: str,
           extra_env: dict[str, str] | None = None, **alerts: object) -> AlertsProcess:
    return _process(settings, telegram, tmp_path, name, extra_env, **alerts).start()


def _process(settings: Settings, telegram: FakeTelegram, tmp_path: Path, name: str,
             extra_env: dict[str, str] | None = None, **alerts: object) -> AlertsProcess:
    config = {"alerts": {"thresholds": THRESHOLDS, "cooldown_hours": COOLDOWN_HOURS, "start_from": "earliest",
                         "rate_per_chat_per_s": 40, "burst_per_chat": 10, "backoff_initial_s": 0.2,
                         "max_attempts": 6, "poll_timeout_ms": 300, "session_timeout_s": 6, "summary_min_samples": 10,
                         # the candles are months old: live alerts here, catch-up notes in test_alerts_twice.py
                         "stale_after_hours": STALE_NEVER_HOURS,
                         # a killed process's claims and lease free within seconds
                         "claim_ttl_s": 3, "lease_ttl_s": 3, **alerts}}
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**client_environment(settings),
           "BSE_TOPIC_PREFIX": settings.topic_prefix, "TELEGRAM_BOT_TOKEN": TOKEN,
           "TELEGRAM_CHAT_ID": ",".join(CHATS), "TELEGRAM_API_URL": telegram.url, **(extra_env or {})}
    group_id = alerts.get("group_id")
    return AlertsProcess(settings, env, tmp_path / f"{name}.log", ("--config", str(config_path)),
                         group_id=None if group_id is None else str(group_id))


def _produce(settings: Settings, scenario: Scenario, outcomes: bool = True) -> None:
    names = TopicNames.of(settings)
    asyncio.run(send_raw(settings.kafka_bootstrap, names.predictions,
                         [(p.symbol.encode(), p.model_dump_json().encode()) for p in scenario.predictions]))
    if outcomes:
        asyncio.run(send_raw(settings.kafka_bootstrap, names.outcomes,
                             [(o.symbol.encode(), o.model_dump_json().encode()) for o in scenario.outcomes]))


def _wait_for(telegram: FakeTelegram, done: Callable[[list[Received]], bool], timeout_s: float = 90,
              settle_s: float = 1.5) -> list[Received]:
    """Wait until ``done`` holds, then ``settle_s`` more so that a duplicate would show."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done(telegram.snapshot()):
            time.sleep(settle_s)
            return telegram.snapshot()
        time.sleep(0.2)
    return telegram.snapshot()


_ALERT_HEAD = re.compile(r"^\S+ (?P<symbol>[A-Z0-9]+) (?P<sign>[+-])(?P<target>[\d.]+%) first · ")
_CANDLE = re.compile(r"candle (\d{4}-\d\d-\d\d \d\d:\d\d) UTC")


def _alert_key(r: Received) -> tuple[str, str, str, str] | None:
    head, candle = _ALERT_HEAD.match(r.plain), _CANDLE.search(r.plain)
    if r.method != "sendMessage" or head is None or candle is None:
        return None
    from datetime import UTC, datetime
    open_time = int(datetime.strptime(candle.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp() * 1000)
    return (r.chat_id, prediction_id(head["symbol"], "1h", open_time), head["target"],
            "up" if head["sign"] == "+" else "down")


def _kind(r: Received, previous: str | None) -> str:
    if r.method == "sendPhoto":
        return "chart"
    if _alert_key(r) is not None:
        return "alert"
    if r.reply_to is not None:
        return "followup"
    if r.plain.startswith("🕐 Digest"):
        return "digest"
    if r.plain.startswith("📊 Daily summary"):
        return "summary"
    # a later part of a split message follows its first part in the same chat
    return f"{previous}-part" if previous in ("digest", "summary") else "other"


def _kinds(received: list[Received]) -> dict[str, list[Received]]:
    kinds: dict[str, list[Received]] = {k: [] for k in ("alert", "followup", "digest", "digest-part", "summary",
                                                         "summary-part", "chart", "other")}
    previous: dict[str, str] = {}
    for r in received:
        kind = _kind(r, previous.get(r.chat_id))
        kinds[kind].append(r)
        previous[r.chat_id] = kind.removesuffix("-part")
    return kinds


def _complete(expected_alerts: int, expected_followups: int) -> Callable[[list[Received]], bool]:
    def done(received: list[Received]) -> bool:
        k = _kinds(received)
        return (len(k["alert"]) >= expected_alerts * len(CHATS) and len(k["followup"]) >= expected_followups * len(CHATS)
                and len(k["digest"]) >= len(CHATS) and len(k["summary"]) >= len(CHATS) and len(k["chart"]) >= len(CHATS))
    return done


def _check_everything_once(received: list[Received], scenario: Scenario, log_text: str) -> dict[str, list[Received]]:
    expected = _expected_alerts(scenario.predictions)
    outcome_of = {(o.id, o.target): o for o in scenario.outcomes}
    kinds = _kinds(received)
    assert not kinds["other"], [r.plain[:80] for r in kinds["other"]]

    alert_keys = Counter(_alert_key(r) for r in kinds["alert"])
    assert alert_keys == Counter({(chat, *alert): 1 for chat in CHATS for alert in expected}), log_text[-3000:]

    by_message = {(r.chat_id, r.message_id): r for r in received}
    replies = Counter((r.chat_id, r.reply_to) for r in kinds["followup"])
    assert set(replies.values()) == {1}, "a follow-up was sent twice"
    followed = set()
    for r in kinds["followup"]:
        chat, prediction, target, direction = _alert_key(by_message[(r.chat_id, r.reply_to)])
        outcome = outcome_of[(prediction, target)]
        took_h = (outcome.resolved_at - outcome.open_time) // STEP_MS - 1
        mark = "⏸" if outcome.outcome == "none" else ("✅" if outcome.outcome == direction else "❌")
        assert r.plain.startswith(mark), (r.plain, outcome)
        if outcome.outcome != "none":
            assert f"after {took_h} h" in r.plain, (r.plain, outcome)
        followed.add((chat, prediction, target))
    assert followed == {(chat, a[0], a[1]) for chat in CHATS for a in expected if (a[0], a[1]) in outcome_of}

    for chat in CHATS:
        digests = [r for r in kinds["digest"] if r.chat_id == chat]
        summaries = [r for r in kinds["summary"] if r.chat_id == chat]
        charts = [r for r in kinds["chart"] if r.chat_id == chat]
        assert len(digests) == 1 and len(summaries) == 1 and len(charts) == 1, (len(digests), len(summaries), len(charts))
        assert charts[0].photo is not None and charts[0].photo.startswith(b"\x89PNG")
    assert TOKEN not in log_text and TOKEN.split(":")[1] not in log_text
    return kinds


def test_alerts_followups_digest_and_summary_arrive_once_each(
    alerts_settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path,
) -> None:
    scenario = _build(list(futures_series.values()), model_set, hours=48)
    expected = _expected_alerts(scenario.predictions)
    assert 4 <= len(expected) <= 40, f"{len(expected)} alerts: retune THRESHOLDS for a meaningful test"
    followups = sum((a[0], a[1]) in {(o.id, o.target) for o in scenario.outcomes} for a in expected)
    shadow = scenario.predictions[-1].model_copy(update={"symbol": "SHADOWUSDT", "id": "SHADOWUSDT|1h|0"})
    asyncio.run(send_raw(alerts_settings.kafka_bootstrap, TopicNames.of(alerts_settings).predictions_shadow,
                         [(b"SHADOWUSDT", shadow.model_dump_json().encode())]))
    # The shadow model's outcome of an alerted prediction, with the other answer, comes first: it must be ignored.
    live = next(o for o in scenario.outcomes if (o.id, o.target) == expected[0][:2])
    flipped = "down" if live.outcome == "up" else "up"
    asyncio.run(send_raw(alerts_settings.kafka_bootstrap, TopicNames.of(alerts_settings).outcomes, [(
        live.symbol.encode(), live.model_copy(update={"stream": "shadow", "outcome": flipped}).model_dump_json().encode())]))
    _produce(alerts_settings, scenario)
    with _start(alerts_settings, telegram, tmp_path, "alerts") as process:
        received = _wait_for(telegram, _complete(len(expected), followups))
        assert _schedule_lease_holder(alerts_settings) is not None
    log_text = process.log_path.read_text()
    assert process.returncode == 0 and _schedule_lease_holder(alerts_settings) is None, (
        "SIGTERM is not a clean stop (exit 0, the schedule lease released)")
    kinds = _check_everything_once(received, scenario, log_text)
    assert not any("SHADOWUSDT" in r.plain for r in received), "a shadow prediction reached a chat"

    # The digest is the newest hour: every symbol and target, with the closes of that hour.
    newest = max(p.open_time for p in scenario.predictions)
    digest = kinds["digest"][0].plain
    for p in (p for p in scenario.predictions if p.open_time == newest):
        assert f"{p.symbol} " in digest
        for target in p.targets:
            assert f"{target} " in digest
    # The summary scores exactly the outcomes resolved in its window.
    summary = kinds["summary"][0].plain
    latest_event = max(max(o.resolved_at for o in scenario.outcomes), newest + STEP_MS)
    day_start = latest_event - latest_event % DAY_MS - DAY_MS
    assert summary.startswith(f"📊 Daily summary · {format_utc(day_start)[:10]}")
    calls = [ResolvedCall(symbol=o.symbol, target=o.target, outcome=o.outcome, p_up=o.p_up, p_down=o.p_down,
                          p_none=o.p_none, alerted=False, resolved_at=o.resolved_at) for o in scenario.outcomes]
    stats = summarize(calls, day_start + DAY_MS - 7 * DAY_MS, day_start + DAY_MS, 10)
    assert stats is not None
    assert f"n {stats.overall.n} · alerts" in summary, summary
    assert f"hit {100 * stats.overall.hit_rate:.0f}% vs base {100 * stats.overall.base_rate:.0f}%" in summary
    alert = kinds["alert"][0]
    reply = next(r for r in kinds["followup"] if (r.chat_id, r.reply_to) == (alert.chat_id, alert.message_id))
    print("\n--- an alert, its follow-up, the digest and the summary as a chat shows them ---")
    print(alert.plain, reply.plain, digest, summary, sep="\n\n")


def _produce_two_days(settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
                      ) -> tuple[Scenario, list[tuple[str, str, str]]]:
    """48 hours of every futures symbol's predictions and outcomes on the topics; (scenario, its alerts)."""
    scenario = _build(list(futures_series.values()), model_set, hours=48)
    _produce(settings, scenario)
    return scenario, _expected_alerts(scenario.predictions)


def _resume_and_check_once(settings: Settings, telegram: FakeTelegram, tmp_path: Path, name: str,
                           earlier: AlertsProcess, scenario: Scenario, expected: list[tuple[str, str, str]],
                           ) -> tuple[list[Received], str]:
    """A fresh service after ``earlier`` stopped: wait for every alert and follow-up, check each arrived
    exactly once over both logs; (what Telegram received, both logs)."""
    with _start(settings, telegram, tmp_path, name) as process:
        received = _wait_for(telegram, _complete(len(expected), len(expected)))
        log_text = earlier.log_path.read_text() + process.log_path.read_text()
    _check_everything_once(received, scenario, log_text)
    return received, log_text


def test_a_restart_mid_stream_leaves_exactly_one_copy_of_each(
    alerts_settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path,
) -> None:
    scenario, expected = _produce_two_days(alerts_settings, model_set, futures_series)
    first = _process(alerts_settings, telegram, tmp_path, "alerts-1")
    # SIGKILL the service the moment its 5th message reaches Telegram, before Telegram answers.
    # (It sends once the group gave it partitions, what start() waits for; killed, it stays a member of the
    # group until its session times out, 6 s.)
    telegram.when_call(5, first.kill)
    first.start()
    assert first.wait_exit(60) == -9, first.log_tail()
    assert len(telegram.snapshot()) == 4, "the kill did not land mid-stream"
    _resume_and_check_once(alerts_settings, telegram, tmp_path, "alerts-2", first, scenario, expected)


def test_5xx_and_429_are_retried_and_an_outage_loses_nothing(
    alerts_settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path,
) -> None:
    scenario, expected = _produce_two_days(alerts_settings, model_set, futures_series)
    # An outage longer than the attempts: the process gives up with one line, having committed nothing unsent.
    telegram.fail_next(500, 3)
    down = _process(alerts_settings, telegram, tmp_path, "alerts-down", max_attempts=3).launch()
    assert down.wait_exit(60) == 2, down.log_tail()
    errors = [line for line in down.log_path.read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: sendMessage to chat"), down.log_tail()
    assert "failed 3 times" in errors[0]
    assert telegram.snapshot() == []
    # Back up, but rate limiting at first: 429 with retry_after, then everything arrives once.
    telegram.fail_next(429, 2, retry_after=1)
    received, log_text = _resume_and_check_once(alerts_settings, telegram, tmp_path, "alerts", down, scenario, expected)
    statuses = [status for _, status, _ in telegram.refusals]
    assert statuses == [500, 500, 500, 429, 429], (telegram.refusals, log_text[-3000:])
    last_429 = telegram.refusals[-1][0]
    assert min(r.at for r in received) - last_429 >= 0.95, ("the retry came before retry_after had passed",
                                                             telegram.refusals, received[:2])


def test_a_long_digest_is_split_at_line_ends(
    alerts_settings: Settings, model_set: ServedModelSet, telegram: FakeTelegram, tmp_path: Path,
) -> None:
    spot = read_candle_files([SHARED_DATA / "binance-spot"])
    scenario = _build(spot, model_set, hours=1, end_before_last=2)
    assert len({p.symbol for p in scenario.predictions}) == len(spot) >= 15
    _produce(alerts_settings, scenario, outcomes=False)
    with _start(alerts_settings, telegram, tmp_path, "alerts", summary=False,
                thresholds={t: {"min_confidence": 1.0, "min_probability": 1.0} for t in THRESHOLDS}) as process:
        received = _wait_for(telegram, lambda r: len(r) >= 2 * len(CHATS) and all(
            sum(x.chat_id == chat for x in r) >= 2 for chat in CHATS))
        log_text = process.log_path.read_text()
    period = scenario.predictions[0].open_time
    whole = format_digest(period, 1, scenario.predictions, set())
    assert len(whole) > 4096
    for chat in CHATS:
        parts = [r for r in received if r.chat_id == chat]
        assert len(parts) >= 2 and all(len(r.text.encode("utf-16-le")) // 2 <= 4096 for r in parts)
        assert "\n".join(r.text for r in parts) == whole  # whole lines, in order, nothing lost or doubled
    assert TOKEN not in log_text


def test_names_with_markup_characters_survive_escaping_and_degraded_is_flagged(
    alerts_settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path,
) -> None:
    name = "rf*ens_v2.1-beta <&> [x](y) `~|#"
    scenario = _build([futures_series["ETHUSDT"]], model_set, hours=1, model_name=name)
    degraded = [p.model_copy(update={"degraded": True}) for p in scenario.predictions]
    _produce(alerts_settings, Scenario(degraded, []))
    low = {"min_confidence": 0.5, "min_probability": 0.0}
    with _start(alerts_settings, telegram, tmp_path, "alerts", summary=False,
                thresholds={"1%": low, "2%": low, "5%": low}) as process:
        received = _wait_for(telegram, lambda r: len(r) >= 4 * len(CHATS))
        log_text = process.log_path.read_text()
    alerts = [r for r in received if _alert_key(r) is not None]
    assert len(alerts) == 3 * len(CHATS) and not telegram.refusals
    for r in alerts:
        assert f"model {name} {model_set.version}" in r.plain, r.plain
        assert "degraded: a fallback model answered" in r.plain
    digest = [r for r in received if r.plain.startswith("🕐 Digest")]
    assert len(digest) == len(CHATS) and all(name in r.plain and "degraded" in r.plain for r in digest)
    assert TOKEN not in log_text


def test_a_refused_chat_and_a_missing_matplotlib_stop_nothing(
    alerts_settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path,
) -> None:
    """One chat the bot cannot reach (400) and no matplotlib: the other chat gets every message, the
    summary as text, the log says why, and the refused chat is tried once per message, not on every poll."""
    blocked = tmp_path / "no-matplotlib" / "matplotlib"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("matplotlib is blocked for this test")\n')
    scenario = _build(list(futures_series.values()), model_set, hours=24)
    expected = _expected_alerts(scenario.predictions)
    telegram.unknown_chat(CHATS[1])
    _produce(alerts_settings, scenario)
    with _start(alerts_settings, telegram, tmp_path, "alerts", {"PYTHONPATH": str(blocked.parent)}) as process:
        received = _wait_for(telegram, lambda r: len(_kinds(r)["summary"]) >= 1 and len(_kinds(r)["digest"]) >= 1
                             and len(_kinds(r)["followup"]) >= len(expected), settle_s=3)
        log_text = process.log_path.read_text()
        assert process.returncode is None, "a refused chat stopped the service"
    kinds = _kinds(received)
    assert {r.chat_id for r in received} == {CHATS[0]}
    assert Counter(_alert_key(r) for r in kinds["alert"]) == Counter({(CHATS[0], *a): 1 for a in expected})
    assert kinds["chart"] == [] and "vs base" in kinds["summary"][0].plain
    assert log_text.count("matplotlib is not installed: daily summaries go out as text only") == 1
    # Tried once per alert, digest and summary; never for a follow-up (no alert there to reply to).
    parts = len(kinds["digest"]) + len(kinds["digest-part"]), len(kinds["summary"]) + len(kinds["summary-part"])
    assert parts == (1, 1), parts
    assert len(telegram.refusals) == len(expected) + 2, telegram.refusals
    assert all(d == "Bad Request: chat not found" for _, _, d in telegram.refusals)
    assert "not sent: sendMessage to chat -1002 refused with 400: Bad Request: chat not found" in log_text
    assert TOKEN not in log_text


def _store_windows(settings: Settings, series: list[CandleSeries], upto_ms: dict[str, int], later: int = 8) -> None:
    """What the worker's window store holds once it has seen each symbol's candles up to ``upto_ms`` and
    ``later`` more (the alerts service reads it after the worker moved on): written by that store itself."""
    candles = []
    for s in series:
        end = int(np.searchsorted(s.open_time_ms, upto_ms[s.symbol], side="right")) + later
        for t, (o, h, l, c, v) in zip(s.open_time_ms[end - 420:end].tolist(), s.ohlcv[end - 420:end].tolist(),
                                      strict=True):
            candles.append(Candle(symbol=s.symbol, timeframe="1h", open_time=t, open=o, high=h, low=l, close=c,
                                  volume=v))

    async def write() -> None:
        client = connect_redis(settings)
        try:
            await RedisWindowStore(client, settings.window.retain_candles, key_prefix=settings.topic_prefix
                                   ).write_closed(candles, read_count=1)
        finally:
            await client.aclose()

    asyncio.run(write())


def _schedule_lease_holder(settings: Settings) -> bytes | None:
    """The owner id in the schedule lease's Redis key; None when no process holds it."""
    async def read() -> bytes | None:
        client = connect_redis(settings)
        try:
            held: bytes | None = await client.get(AlertStore(client, settings.topic_prefix, 1, "test", 1).lease_key)
            return held
        finally:
            await client.aclose()

    return asyncio.run(read())


def _stored_explanation(settings: Settings, prediction_id: str, target: str) -> Explanation | None:
    async def read() -> Explanation | None:
        client = connect_redis(settings)
        try:
            store = AlertStore(client, settings.topic_prefix, 1, "test", 1)
            return await store.explanation(f"{prediction_id}|{target}")
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_an_alert_says_which_features_pushed_its_call(
    alerts_settings: Settings, model_set: ServedModelSet, trained_version: Settings,
    futures_series: dict[str, CandleSeries], telegram: FakeTelegram, tmp_path: Path,
) -> None:
    """The service reads each call's window from the worker's store in Redis and the version's native forest,
    and the alert carries the two largest pushes each way; the full list is stored for the dashboard and adds
    up to the published probabilities. A symbol whose window is not in Redis is alerted all the same, without
    the line."""
    series = list(futures_series.values())
    scenario = _build(series, model_set, hours=48)
    expected = _expected_alerts(scenario.predictions)
    unexplained = "SOLUSDT"
    explained = [s for s in series if s.symbol != unexplained]
    assert {a[0].split("|")[0] for a in expected} >= {unexplained, explained[0].symbol}
    _store_windows(alerts_settings, explained, {s.symbol: max(p.open_time for p in scenario.predictions
                                                              if p.symbol == s.symbol) for s in explained})
    _produce(alerts_settings, scenario, outcomes=False)
    with _start(alerts_settings, telegram, tmp_path, "alerts", {"BSE_MODELS_DIR": str(trained_version.models_dir)},
                summary=False, digest=False, explain_timeout_s=60) as process:
        received = _wait_for(telegram, lambda r: len(r) >= len(expected) * len(CHATS))
        log_text = process.log_path.read_text()
    alerts = {_alert_key(r): r for r in received}
    assert Counter(_alert_key(r) for r in received) == Counter(
        {(chat, *alert): 1 for chat in CHATS for alert in expected}), log_text[-3000:]
    predictions = {p.id: p for p in scenario.predictions}
    by_symbol = {s.symbol: s for s in series}
    explainer = Explainer(trained_version.models_dir)
    for pid, target, direction in expected:
        symbol = pid.split("|")[0]
        stored = _stored_explanation(alerts_settings, pid, target)
        lines = [alerts[(chat, pid, target, direction)].plain.splitlines() for chat in CHATS]
        shown = [line for line in lines[0] if line.startswith("🔎 ")]
        assert lines[0] == lines[1]
        if symbol == unexplained:
            assert stored is None and not shown
            continue
        # the same explanation as the candle files give: the service read the right window
        prediction = predictions[pid]
        computed = explainer.explain(prediction, target, by_symbol[symbol].open_time_ms, by_symbol[symbol].ohlcv)
        assert stored == computed
        assert shown == [f"🔎 {explanation_line(computed)}"] and shown[0].startswith("🔎 pushing up: ")
        published = prediction.targets[target]
        for cls in ("p_up", "p_down", "p_none"):
            total = (getattr(stored.base, cls) + getattr(stored.unexplained, cls)
                     + sum(getattr(c, cls) for c in stored.contributions))
            assert total == pytest.approx(getattr(published, cls), abs=1e-4)
    print("\n--- an explained alert as a chat shows it ---")
    print(next(r.plain for r in received if "🔎" in r.plain))


def _label(series: CandleSeries, open_time: int, target: str) -> tuple[str, int]:
    """The outcome of (open_time, target) by bse_predict/labels/first_touch.py on the candles, and the hours to it."""
    row = int(np.searchsorted(series.open_time_ms, open_time))
    known = series.ohlcv[row + 1 : row + 1 + HORIZON]
    future = np.full((1, HORIZON, 5), np.nan)
    future[0, : len(known)] = known
    valid = np.zeros((1, HORIZON), dtype=bool)
    valid[0, : len(known)] = True
    fraction = float(target.rstrip("%")) / 100
    entry = series.ohlcv[row : row + 1, 3]
    label = int(first_touch(entry, future, valid, fraction)[0])
    return CLASS_NAMES[label], int(time_to_touch(entry, future, valid, fraction)[0])


def test_end_to_end_from_a_worker_replay(
    alerts_settings: Settings, trained_version: Settings, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path,
) -> None:
    """The real worker predicts a replay of real candles and settles their outcomes; alerts turns both into
    messages: every expected alert once, each with its explanation line, a correct follow-up to each that
    resolved, no digest twice."""
    from tests.support.worker_process import WorkerProcess, service_env
    from bse_predict.stream.replay import candle_records

    settings = alerts_settings.model_copy(update={"models_dir": trained_version.models_dir})
    slices = [futures_series[s].tail(LOOKBACK_CANDLES + 40 + HORIZON) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]
    records = list(candle_records(slices))
    names = TopicNames.of(settings)
    explained = {"BSE_MODELS_DIR": str(trained_version.models_dir)}
    with WorkerProcess(service_env(settings), tmp_path / "worker.log"), _start(
            settings, telegram, tmp_path, "alerts", explained, explain_timeout_s=60) as alerts:
        asyncio.run(send_raw(settings.kafka_bootstrap, names.candles, [(r.symbol.encode(), r.payload) for r in records]))
        count = 3 * (len(slices[0].open_time_ms) - LOOKBACK_CANDLES + 1)
        predictions = {p.id: p for p in (Prediction.model_validate_json(r.value) for r in asyncio.run(
            read_until(settings.kafka_bootstrap, names.predictions, count, 120,
                       identity=lambda r: orjson.loads(r.value)["id"])))}
        assert len(predictions) == count
        expected = _expected_alerts(list(predictions.values()))
        assert expected, "no alert in the replay: retune THRESHOLDS"
        time.sleep(3)  # the last outcomes settle with the last candles
        outcomes = {(o.id, o.target): o for o in (Outcome.model_validate_json(r.value) for r in asyncio.run(
            read_topic(settings.kafka_bootstrap, names.outcomes))) if o.stream == "live"}
        resolved = [a for a in expected if (a[0], a[1]) in outcomes]
        assert resolved, "no alerted prediction resolved: the test would not see a follow-up"
        received = _wait_for(telegram, lambda r: len(_kinds(r)["alert"]) >= len(expected) * len(CHATS)
                             and len(_kinds(r)["followup"]) >= len(resolved) * len(CHATS))
        log_text = alerts.log_path.read_text()
    kinds = _kinds(received)
    assert Counter(_alert_key(r) for r in kinds["alert"]) == Counter(
        {(chat, *alert): 1 for chat in CHATS for alert in expected}), log_text[-3000:]
    # every alert explained from the worker's own window in Redis
    assert all("\n🔎 pushing " in r.plain for r in kinds["alert"]), log_text[-3000:]
    by_message = {(r.chat_id, r.message_id): r for r in received}
    replied = Counter((r.chat_id, r.reply_to) for r in kinds["followup"])
    assert set(replied.values()) == {1} and len(replied) == len(resolved) * len(CHATS)
    series = dict(zip(("BTCUSDT", "ETHUSDT", "SOLUSDT"), slices, strict=True))
    for r in kinds["followup"]:
        _, prediction, target, direction = _alert_key(by_message[(r.chat_id, r.reply_to)])
        label, took = _label(series[prediction.split("|")[0]], int(prediction.split("|")[2]), target)
        assert outcomes[(prediction, target)].outcome == label
        mark = "⏸" if label == "none" else ("✅" if label == direction else "❌")
        assert r.plain.startswith(mark) and (label == "none" or f"after {took} h" in r.plain), (r.plain, label, took)
    digests = Counter((r.chat_id, r.plain.splitlines()[0]) for r in kinds["digest"])
    assert digests and set(digests.values()) == {1}
    assert TOKEN not in log_text
