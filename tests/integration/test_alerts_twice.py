"""Two ``bse-predict alerts`` processes at once, claims, the schedule lease and catch-up notes, on the real
Kafka and Redis with the fake Bot API (docs/alerts.md, "Two processes at once" and "Late alerts")."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from configs.settings import Settings
from bse_predict.alerts.messages import format_utc
from bse_predict.alerts.rules import AlertCall
from bse_predict.candles.files import CandleSeries
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.candles.schema import prediction_id
from tests.integration.test_alerts import (CHATS, DAY_MS, STEP_MS, TOKEN, Scenario, _alert_key, _build,
                                           _expected_alerts, _kinds, _produce, _start, _wait_for, alerts_settings,
                                           model_set, telegram)
from tests.support.fake_telegram import FakeTelegram, Received
from bse_predict.alerts.lease import Lease, OwnedKeys
from bse_predict.alerts.store import AlertStore, CatchupNote, Claimed
from bse_predict.connections.clients import connect_redis

pytestmark = pytest.mark.integration

__all__ = ["alerts_settings", "model_set", "telegram"]  # the fixtures shared with test_alerts.py


def _sent_lines(log_text: str, kind: str) -> list[str]:
    return [line for line in log_text.splitlines() if f" {kind} " in line and " sent to chat " in line]


def _heads(messages: list[Received]) -> Counter[tuple[str, str]]:
    return Counter((r.chat_id, r.plain.splitlines()[0]) for r in messages)


def _final_heads(scenario: Scenario) -> tuple[str, str]:
    """The first lines of the digest and the summary that the whole scenario ends with."""
    newest = max(p.open_time for p in scenario.predictions)
    latest_event = max(max(o.resolved_at for o in scenario.outcomes), newest + STEP_MS)
    day_start = latest_event - latest_event % DAY_MS - DAY_MS
    return f"🕐 Digest · hour from {format_utc(newest)}", f"📊 Daily summary · {format_utc(day_start)[:10]}"


def _check_once(received: list[Received], scenario: Scenario) -> None:
    """Every alert and follow-up exactly once per chat, each digest period and summary day at most once
    (the stream is produced while the processes run, so earlier periods may have had their digest), the
    final ones present."""
    kinds = _kinds(received)
    expected = _expected_alerts(scenario.predictions)
    assert Counter(_alert_key(r) for r in kinds["alert"]) == Counter(
        {(chat, *a): 1 for chat in CHATS for a in expected})
    outcomes = {(o.id, o.target) for o in scenario.outcomes}
    by_message = {(r.chat_id, r.message_id): r for r in received}
    followed = Counter(_alert_key(by_message[(r.chat_id, r.reply_to)]) for r in kinds["followup"])
    assert followed == Counter({(chat, *a): 1 for chat in CHATS for a in expected if (a[0], a[1]) in outcomes})
    for kind in ("digest", "summary", "chart"):
        assert set(_heads(kinds[kind]).values()) <= {1}, f"a {kind} went out twice: {_heads(kinds[kind])}"
    digest, summary = _final_heads(scenario)
    heads = _heads(kinds["digest"] + kinds["summary"])
    assert all(heads[(chat, head)] == 1 for chat in CHATS for head in (digest, summary)), heads


# ------------------------------------------------------------ claims and the lease, script by script


def test_claims_and_the_lease_answer_only_to_their_owner(isolated: Settings) -> None:
    settings, prefix = isolated, isolated.topic_prefix

    async def scenario() -> None:
        client = connect_redis(settings)
        try:
            a = AlertStore(client, prefix, 1, "owner-a", claim_ttl_s=30)
            b = AlertStore(client, prefix, 1, "owner-b", claim_ttl_s=30)
            assert await a.claim("alert", "X|1%", "1") is Claimed.MINE
            assert await a.claim("alert", "X|1%", "1") is Claimed.MINE  # taking one's own claim again
            assert await b.claim("alert", "X|1%", "1") is Claimed.THEIRS
            assert await a.sent("alert", "X|1%", "1") is None  # a claim is not a sent mark
            key = f"{prefix}bse:alerts:sent:alert:X|1%:1"
            assert 0 < await client.pttl(key) <= 30_000  # a crashed claimer's claim expires
            assert not await b.renew_claim("alert", "X|1%", "1")
            assert not await b.release_claim("alert", "X|1%", "1")
            assert await a.release_claim("alert", "X|1%", "1")
            assert not await a.release_claim("alert", "X|1%", "1")  # twice is once
            assert await b.claim("alert", "X|1%", "1") is Claimed.MINE
            assert await b.finish_claim("alert", "X|1%", "1", 7)
            assert await a.claim("alert", "X|1%", "1") == 7 and await a.sent("alert", "X|1%", "1") == 7
            assert await client.ttl(key) > 30  # the mark lives as long as the state, not as the claim
            assert not await a.release_claim("alert", "X|1%", "1") and await b.sent("alert", "X|1%", "1") == 7

            keys = OwnedKeys(client)
            lease_a = Lease(keys, a.lease_key, "owner-a", ttl_s=15)
            lease_b = Lease(keys, a.lease_key, "owner-b", ttl_s=15)
            assert await lease_a.hold() and await lease_a.hold()
            assert not await lease_b.hold()
            await lease_b.release()  # not b's: nothing changes
            assert await lease_a.hold() and not await lease_b.hold()
            assert 0 < await client.pttl(a.lease_key) <= 15_000
            await lease_a.release()
            await lease_a.release()
            assert await lease_b.hold() and not await lease_a.hold()
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_stale_calls_are_sealed_into_one_note_once(isolated: Settings) -> None:
    settings, prefix = isolated, isolated.topic_prefix
    call = AlertCall(prediction_id="BTCUSDT|1h|0", symbol="BTCUSDT", timeframe="1h", open_time=0, close=1.0,
                     horizon_hours=72, target="1%", direction="up", probability=0.7, confidence=0.7,
                     signal="LONG", p_up=0.7, p_down=0.2, p_none=0.1, model_name="rf", model_version="v",
                     variant="control", degraded=False)

    async def scenario() -> None:
        client = connect_redis(settings)
        try:
            store = AlertStore(client, prefix, 1, "owner-a", claim_ttl_s=30)
            assert await store.hold_for_catchup("1", call)
            assert await store.hold_for_catchup("1", call)  # a repeat before the seal changes nothing
            assert await store.pending_calls("1") == [call]
            note = CatchupNote(text="note", calls=(call,), resolved=())
            number = await store.seal_catchup("1", note)
            assert number is not None
            assert await store.seal_catchup("1", note) is None  # a second sealer of the same calls loses
            assert await store.pending_calls("1") == []
            assert not await store.hold_for_catchup("1", call)  # listed: never pending again
            assert await store.hold_for_catchup("2", call)  # another chat has its own note
            assert await store.open_catchups("1") == [(number, note)]
            await store.close_catchup("1", number)
            assert await store.open_catchups("1") == []
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_two_processes_deciding_the_same_call_at_once_agree(isolated: Settings) -> None:
    """Both read "no verdict" before either writes: the second must not re-decide against the cooldown
    the first just moved (it would store "held back" over "alert" and lose the follow-up)."""
    calls = [AlertCall(prediction_id=f"BTCUSDT|1h|{i}", symbol="BTCUSDT", timeframe="1h", open_time=i * STEP_MS,
                       close=1.0, horizon_hours=72, target="1%", direction="up", probability=0.7, confidence=0.7,
                       signal="LONG", p_up=0.7, p_down=0.2, p_none=0.1, model_name="rf", model_version="v",
                       variant="control", degraded=False) for i in range(20)]

    async def scenario() -> None:
        clients = [connect_redis(isolated) for _ in range(2)]
        try:
            a, b = (AlertStore(c, isolated.topic_prefix, 1, f"owner-{i}", claim_ttl_s=30)
                    for i, c in enumerate(clients))
            async def later(turns: int, call: AlertCall) -> bool:
                for _ in range(turns):  # b starts a few event-loop turns after a: the interleavings vary
                    await asyncio.sleep(0)
                return await b.decide(call, 6)

            for i, call in enumerate(calls):
                verdicts = await asyncio.gather(a.decide(call, 6), later(i % 5, call))
                assert verdicts[0] == verdicts[1], call.open_time
                assert await a.alerted_call(call.prediction_id, call.target) == (call if verdicts[0] else None)
            alerted = [c.open_time // STEP_MS for c in calls if await a.alerted_call(c.prediction_id, c.target)]
            assert alerted == [0, 6, 12, 18]  # one per cooldown of 6 h, as one process alone decides
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(scenario())


# ------------------------------------------------------------ the real processes


@pytest.mark.parametrize("groups", [("alerts-a", "alerts-b"), ("alerts", "alerts")], ids=["two-groups", "one-group"])
def test_two_processes_at_once_send_each_message_once_and_one_holds_the_schedule(
    alerts_settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path, groups: tuple[str, str],
) -> None:
    """Two processes over the same topics, in two consumer groups (both handle every message, racing for
    every send) or in one (the partitions split between them). Each alert, follow-up, digest and summary
    arrives once; only the lease holder builds digests; when it stops, the other takes the lease over
    and sends the next digest."""
    scenario = _build(list(futures_series.values()), model_set, hours=49)
    newest = max(p.open_time for p in scenario.predictions)
    first = Scenario([p for p in scenario.predictions if p.open_time < newest],
                     [o for o in scenario.outcomes if o.open_time < newest])
    last_hour = [p for p in scenario.predictions if p.open_time == newest]
    expected = _expected_alerts(first.predictions)
    followups = sum((a[0], a[1]) in {(o.id, o.target) for o in first.outcomes} for a in expected)
    both = [_start(alerts_settings, telegram, tmp_path, name, group_id=group, lease_ttl_s=15)
            for name, group in zip(("alerts-a", "alerts-b"), groups, strict=True)]
    try:
        _produce(alerts_settings, first)
        final = _final_heads(first)
        received = _wait_for(telegram, lambda r: len(_kinds(r)["alert"]) >= len(expected) * len(CHATS)
                             and len(_kinds(r)["followup"]) >= followups * len(CHATS)
                             and sum(head in final for _, head in _heads(r)) >= 2 * len(CHATS))
        logs = [p.log_path.read_text() for p in both]
        _check_once(received, first)
        holders = [i for i, text in enumerate(logs) if "holds the schedule lease" in text]
        assert len(holders) == 1, "not exactly one process took the schedule lease"
        holder, other = both[holders[0]], both[1 - holders[0]]
        assert _sent_lines(logs[holders[0]], "digest") and not _sent_lines(logs[1 - holders[0]], "digest")

        holder.stop()  # SIGTERM: releases the lease, after its last use of it
        holder_log = holder.log_path.read_text()
        assert holder_log.rfind("released the schedule lease") > holder_log.rfind("holds the schedule lease")
        _produce(alerts_settings, Scenario(last_hour, []), outcomes=False)
        all_expected = _expected_alerts(first.predictions + last_hour)
        last_digest = f"🕐 Digest · hour from {format_utc(newest)}"
        received = _wait_for(telegram, lambda r: sum(head == last_digest for _, head in _heads(r)) >= len(CHATS)
                             and len(_kinds(r)["alert"]) >= len(all_expected) * len(CHATS))
        other_log = other.log_path.read_text()
    finally:
        for process in both:
            process.stop()
    kinds = _kinds(received)
    assert Counter(_alert_key(r) for r in kinds["alert"]) == Counter(
        {(chat, *a): 1 for chat in CHATS for a in all_expected})
    assert set(_heads(kinds["digest"]).values()) == {1}
    assert all(_heads(kinds["digest"])[(chat, last_digest)] == 1 for chat in CHATS)
    assert "holds the schedule lease" in other_log and _sent_lines(other_log, "digest")
    assert TOKEN not in other_log


def _catchup_notes(received: list[Received], chat: str) -> list[Received]:
    return [r for r in received if r.chat_id == chat and r.plain.startswith("⏪ Catch-up")]


def test_a_stale_backlog_becomes_one_catch_up_note_per_chat(
    alerts_settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path,
) -> None:
    """The candles are months old: their alerts go out as one note per chat, outcomes known by then in
    the note, later ones as replies to it; a second process reading it all again sends nothing of it,
    while a fresh prediction is still alerted live."""
    scenario = _build(list(futures_series.values()), model_set, hours=48)
    expected = _expected_alerts(scenario.predictions)
    assert len(expected) >= 4
    early = {(a[0], a[1]) for a in expected[: len(expected) // 2]}
    late = {(a[0], a[1]) for a in expected} - early
    outcome_of = {(o.id, o.target): o for o in scenario.outcomes}
    assert all(pair in outcome_of for pair in late), "retune: a late call without outcome"
    settings = {"stale_after_hours": 3, "digest": False, "summary": False}
    _produce(alerts_settings, Scenario(scenario.predictions, [outcome_of[p] for p in early]))
    with _start(alerts_settings, telegram, tmp_path, "alerts", **settings) as process:
        received = _wait_for(telegram, lambda r: all(_catchup_notes(r, chat) for chat in CHATS))
        notes = {chat: _catchup_notes(received, chat) for chat in CHATS}
        assert all(len(n) == 1 for n in notes.values()), "not one catch-up note per chat"
        assert not any(_alert_key(r) for r in received), "a stale call went out as a live alert"
        for chat, (note,) in notes.items():
            parts = [r for r in received if r.chat_id == chat]  # the note, split if long, nothing else
            text = "\n".join(r.plain for r in parts)
            assert text.startswith(f"⏪ Catch-up · {len(expected)} calls not sent as alerts")
            lines = text.splitlines()[4:]
            assert len(lines) == len(expected)
            for pid, target, direction in expected:
                symbol, _, open_ms = pid.split("|")
                sign = "+" if direction == "up" else "-"
                line = next(x for x in lines if x.split(" ")[1:3] == [symbol, f"{sign}{target}"]
                            and f" · {format_utc(int(open_ms))[5:16]} · " in x)
                assert ("→" in line) == ((pid, target) in early), line

        # The outcomes of the rest come later: each a reply to the note, once per chat.
        _produce(alerts_settings, Scenario([], [outcome_of[p] for p in late]))
        received = _wait_for(telegram, lambda r: sum(x.reply_to is not None for x in r) >= len(late) * len(CHATS))
        replies = [r for r in received if r.reply_to is not None]
        assert len(replies) == len(late) * len(CHATS)
        for chat in CHATS:
            assert {r.reply_to for r in replies if r.chat_id == chat} == {notes[chat][0].message_id}
            candles = Counter(r.plain.splitlines()[-1] for r in replies if r.chat_id == chat)
            assert candles == Counter(f"from the catch-up note: candle {format_utc(int(p.split('|')[2]))}"
                                      for p, _ in late)
        log_text = process.log_path.read_text()
    before = len(received)
    note = notes[CHATS[0]][0]
    reply = next(r for r in replies if r.chat_id == CHATS[0])
    print("\n--- a catch-up note (first lines) and a reply to it as a chat shows them ---")
    print("\n".join(note.plain.splitlines()[:8]), reply.plain, sep="\n\n")

    # Another consumer group reads it all again: nothing of it is sent twice; a fresh prediction is live.
    model = next(p for p in scenario.predictions if p.id == expected[0][0])
    now_hour = int(time.time() * 1000) // STEP_MS * STEP_MS
    fresh = model.model_copy(update={"open_time": now_hour - STEP_MS,
                                     "id": prediction_id(model.symbol, "1h", now_hour - STEP_MS)})
    fresh_alerts = _expected_alerts([fresh])
    _produce(alerts_settings, Scenario([fresh], []), outcomes=False)
    with _start(alerts_settings, telegram, tmp_path, "alerts-again", group_id=f"again-{uuid.uuid4().hex[:6]}",
                **settings) as again:
        received = _wait_for(telegram, lambda r: len(r) >= before + len(fresh_alerts) * len(CHATS), settle_s=3)
        log_text += again.log_path.read_text()
    new = received[before:]
    assert Counter(_alert_key(r) for r in new) == Counter({(chat, *a): 1 for chat in CHATS for a in fresh_alerts})
    assert TOKEN not in log_text


def test_a_refused_send_releases_its_claim_so_a_later_try_sends_it(
    alerts_settings: Settings, model_set: ServedModelSet, futures_series: dict[str, CandleSeries],
    telegram: FakeTelegram, tmp_path: Path,
) -> None:
    """Claims that would outlive the test: only their release lets a second process send what Telegram
    refused to the first (a chat it could not reach then)."""
    scenario = _build([futures_series["ETHUSDT"], futures_series["SOLUSDT"]], model_set, hours=24)
    expected = _expected_alerts(scenario.predictions)
    assert expected
    telegram.unknown_chat(CHATS[1])
    _produce(alerts_settings, scenario, outcomes=False)
    settings = {"claim_ttl_s": 600, "summary": False}
    with _start(alerts_settings, telegram, tmp_path, "alerts-1", group_id="first", **settings) as first:
        _wait_for(telegram, lambda r: len(_kinds(r)["digest"]) >= 1
                  and len(telegram.refusals) >= len(expected) + 1, settle_s=0.5)
        log_text = first.log_path.read_text()
    assert len(telegram.refusals) == len(expected) + 1, telegram.refusals
    telegram.reachable(CHATS[1])
    with _start(alerts_settings, telegram, tmp_path, "alerts-2", group_id="second", **settings) as second:
        received = _wait_for(telegram, lambda r: len(_kinds(r)["alert"]) >= len(expected) * len(CHATS)
                             and len(_kinds(r)["digest"]) >= len(CHATS))
        log_text += second.log_path.read_text()
    kinds = _kinds(received)
    assert Counter(_alert_key(r) for r in kinds["alert"]) == Counter(
        {(chat, *a): 1 for chat in CHATS for a in expected}), log_text[-3000:]
    assert Counter(r.chat_id for r in kinds["digest"]) == Counter({chat: 1 for chat in CHATS})
    assert TOKEN not in log_text
