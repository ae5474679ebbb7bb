"""What each message leads to: alerts, follow-ups, and, when the stream is caught up, catch-up notes,
the digest and the summary.

Every send follows the same rule: look for the sent mark of (kind, key, chat);
if there is none, claim it (a Redis key set only where absent, expiring unless
renewed), send, and turn the claim into the mark only after Telegram accepted
the message; a refusal releases the claim. A claim held by another process
means that process is sending: wait until it is marked (done) or gone (given
up or expired: claim it). The consumer commits a Kafka offset only after its
message was handled here, so a crash anywhere re-handles the message, and the
marks turn the repeat into a no-op for everything already sent. An alert too
old to be news (``alerts.stale_after_hours``) is kept for the chat's catch-up
note instead. Catch-up notes, digests and summaries are made only by the
holder of the schedule lease. docs/alerts.md gives the whole argument and its
one unavoidable gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from configs.settings import TIMEFRAME_MS, Settings
from bse_predict.alerts.messages import (format_alert, format_catchup, format_digest, format_followup, format_summary,
                                    format_utc, summary_caption)
from bse_predict.alerts.rules import AlertCall, is_stale, wanted_calls
from bse_predict.alerts.summary_stats import SummaryStats, summarize
from bse_predict.candles.schema import Outcome, Prediction
from bse_predict.alerts.telegram_text import split_message
from bse_predict.alerts.errors import TelegramRefused, TelegramUnavailable
from bse_predict.alerts.explanations import CallExplanations
from bse_predict.alerts.lease import Lease, renewing
from bse_predict.alerts.store import AlertStore, CatchupNote, Claimed, call_member
from bse_predict.alerts.telegram import TelegramClient
from bse_predict.explain.explanation import Explanation

__all__ = ["AlertService", "ChartDrawer"]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000

ChartDrawer = Callable[[SummaryStats, str], bytes | None]


class AlertService:
    def __init__(self, settings: Settings, store: AlertStore, client: TelegramClient, chats: Sequence[str],
                 draw_chart: ChartDrawer | None, lease: Lease, clock: Callable[[], float] = time.time,
                 explanations: CallExplanations | None = None) -> None:
        self._config = settings.alerts
        self._explanations = explanations
        self._store = store
        self._lease = lease
        self._clock = clock
        self._client = client
        self._chats = tuple(chats)
        self._draw_chart = draw_chart if self._config.chart else None
        self._period_ms = self._config.digest_every_hours * 3_600_000
        self._refused: set[tuple[str, str, str]] = set()  # (kind, key, chat) Telegram refused for good

    # ------------------------------------------------------------ messages in

    async def on_prediction(self, prediction: Prediction) -> None:
        close_ms = prediction.open_time + TIMEFRAME_MS.get(prediction.timeframe, 0)
        await self._store.note_event(close_ms)
        if self._config.digest:
            period = prediction.open_time - prediction.open_time % self._period_ms
            await self._store.record_for_digest(period, close_ms, prediction)
        if self._explanations is not None:
            self._explanations.prepare(prediction)
        for call in wanted_calls(prediction, self._config):
            if not await self._store.decide(call, self._config.cooldown_hours):
                log.info("alert %s %s %s held back by the cooldown", call.symbol, call.target, call.direction)
                continue
            if is_stale(call, int(self._clock() * 1000), self._config.stale_after_hours):
                await self._hold_for_catchup(call)
                continue
            explanation = await self._explanation(prediction, call)
            for chat in self._chats:
                await self._send_alert(call, chat, explanation)
            outcome = await self._store.outcome(call.prediction_id, call.target)
            if outcome is not None:  # the answer came before the alert went out (replays, restarts)
                await self._send_followups(call, outcome)

    async def on_outcome(self, outcome: Outcome) -> None:
        if outcome.stream == "shadow":  # a shadow model's score: neither a follow-up nor a live hit rate
            return
        await self._store.save_outcome(outcome)
        await self._store.note_event(outcome.resolved_at)
        call = await self._store.alerted_call(outcome.id, outcome.target)
        if call is not None:
            await self._send_followups(call, outcome)

    async def on_idle(self, group_caught_up: Callable[[], Awaitable[bool]]) -> None:
        """The consumer has read everything there is: send the newest digest and summary if still due.

        Only the newest complete period (its last candle has closed) and the
        newest complete day: after downtime or in a replay, one digest of the
        present beats a backlog of stale ones. Before them, the catch-up note
        of each chat that has stale calls waiting. Only the lease holder does
        any of this, and only once ``group_caught_up`` says that the other
        processes of its consumer group have handled everything too.
        """
        if not await self._lease.hold() or not await group_caught_up():
            return
        for chat in self._chats:
            await self._catch_up(chat)
        if self._config.digest:
            close_ms = await self._store.latest_close_ms()
            if close_ms is not None:
                await self._send_digest(close_ms - close_ms % self._period_ms - self._period_ms)
        if self._config.summary:
            latest = await self._store.latest_event_ms()
            if latest is not None:
                await self._send_summary(latest - latest % DAY_MS - DAY_MS)

    # ------------------------------------------------------------ sends

    async def _send_text(self, kind: str, key: str, text: str) -> None:
        """``text`` to every chat (see :meth:`_send_to_chat`)."""
        for chat in self._chats:
            await self._send_to_chat(kind, key, chat, text)

    async def _send_to_chat(self, kind: str, key: str, chat: str, text: str, reply_to: int | None = None) -> int | None:
        """``text`` split to Telegram's limit, each part marked on its own, then the whole marked with the
        first part's message_id (what a follow-up replies to). None when Telegram refused a part."""
        whole = await self._store.sent(kind, key, chat)
        if whole is not None:
            return whole
        parts = split_message(text, self._config.max_message_chars)
        first = None
        for index, part in enumerate(parts):
            part_key = f"{key}#{index + 1}/{len(parts)}"
            message_id = await self._store.sent(kind, part_key, chat)
            if message_id is None:
                message_id = await self._deliver(kind, part_key, chat, part, reply_to=reply_to if index == 0 else None)
                if message_id is None:
                    self._refused.add((kind, key, chat))  # the whole message, for _all_sent
                    return None
            first = message_id if first is None else first
        assert first is not None  # split_message gives at least one part
        await self._store.mark_sent(kind, key, chat, first)
        return first

    async def _deliver(self, kind: str, key: str, chat: str, text: str, reply_to: int | None = None,
                       photo: bytes | None = None) -> int | None:
        """Claim, send, mark sent; the message_id, or None when Telegram refused it for good (logged).

        A refusal (a 4xx such as an unknown chat or a blocked bot) releases the
        claim and is not marked: it is logged and not tried again by this
        process, so one bad chat cannot stop the stream for the others; another
        process, or a restart, tries it once more. An outage that may have
        delivered keeps the claim until it expires; one that cannot have
        delivered releases it.
        """
        if (kind, key, chat) in self._refused:
            return None
        already = await self._claim(kind, key, chat)
        if already is not None:
            return already
        try:
            async with renewing(lambda: self._store.renew_claim(kind, key, chat), self._config.claim_ttl_s / 3,
                                f"the claim on {kind} {key} to chat {chat}"):
                if photo is not None:
                    message_id = await self._client.send_photo(chat, photo, text)
                else:
                    message_id = await self._client.send_message(chat, text, reply_to=reply_to)
        except TelegramRefused as exc:
            await self._store.release_claim(kind, key, chat)
            log.error("%s %s not sent: %s", kind, key, exc)
            self._refused.add((kind, key, chat))
            return None
        except TelegramUnavailable as exc:
            if not exc.may_have_delivered:
                await self._store.release_claim(kind, key, chat)
            raise
        if not await self._store.finish_claim(kind, key, chat, message_id):
            log.warning("%s %s to chat %s: the claim expired before Telegram accepted the message;"
                        " another alerts process may have sent it too", kind, key, chat)
        log.info("%s %s sent to chat %s as message %d", kind, key, chat, message_id)
        return message_id

    async def _claim(self, kind: str, key: str, chat: str) -> int | None:
        """None once this process holds the claim; the message_id when another process sent it meanwhile.

        While another process holds it, wait: it is either marked sent (done),
        released (Telegram refused it there) or expired (that process died).
        """
        waiting = False
        while True:
            answer = await self._store.claim(kind, key, chat)
            if answer is Claimed.MINE:
                return None
            if isinstance(answer, int):
                if waiting:
                    log.info("%s %s to chat %s was sent by another alerts process", kind, key, chat)
                return answer
            if not waiting:
                log.info("%s %s to chat %s is claimed by another alerts process; waiting for it", kind, key, chat)
                waiting = True
            await asyncio.sleep(self._config.claim_poll_ms / 1000)

    async def _all_sent(self, kind: str, key: str) -> bool:
        """Sent to every chat, or refused for good where not: nothing left to try for (kind, key)."""
        return all([(kind, key, chat) in self._refused or await self._store.sent(kind, key, chat) is not None
                    for chat in self._chats])

    async def _explanation(self, prediction: Prediction, call: AlertCall) -> Explanation | None:
        """The call's stored explanation, else a new one (stored: the dashboard's call view shows it, and a
        retry of the alert says the same); None without one, or when the alert reached every chat already."""
        member = call_member(call)
        if self._explanations is None or await self._all_sent("alert", member):
            return None
        stored = await self._store.explanation(member)
        if stored is not None:
            return stored
        found = await self._explanations.explain(prediction, call.target)
        return None if found is None else await self._store.keep_explanation(member, found)

    async def _send_alert(self, call: AlertCall, chat: str, explanation: Explanation | None) -> None:
        await self._send_to_chat("alert", call_member(call), chat, format_alert(call, explanation))

    async def _send_followups(self, call: AlertCall, outcome: Outcome) -> None:
        for chat in self._chats:
            await self._send_followup(call, outcome, chat)

    async def _send_followup(self, call: AlertCall, outcome: Outcome, chat: str) -> None:
        """A reply to the call's alert, or to the catch-up note that listed it."""
        key = call_member(call)
        original = await self._store.sent("alert", key, chat)
        if original is None:  # not sent there yet: the alert or catch-up path sends the follow-up after it
            return
        caught_up = await self._store.sent("caught-up", key, chat) is not None
        await self._send_to_chat("followup", key, chat, format_followup(call, outcome, caught_up), reply_to=original)

    async def _hold_for_catchup(self, call: AlertCall) -> None:
        held = [chat for chat in self._chats if await self._store.hold_for_catchup(chat, call)]
        if held:
            log.info("alert %s %s %s is older than %s h: kept for the catch-up note of %d chat(s)", call.symbol,
                     call.target, call.direction, self._config.stale_after_hours, len(held))

    async def _catch_up(self, chat: str) -> None:
        """Seal the chat's waiting stale calls into a note, then send every sealed note not yet sent there.

        A sealed note's text is stored, so a retry sends the same parts. Once
        sent, each call listed is marked as alerted in that chat (follow-ups
        reply to the note), and as followed up where the note gave its outcome.
        """
        calls = await self._store.pending_calls(chat)
        if calls:
            answers = [(c, await self._store.outcome(c.prediction_id, c.target)) for c in calls]
            note = CatchupNote(text=format_catchup(answers, self._config.stale_after_hours), calls=tuple(calls),
                               resolved=tuple(call_member(c) for c, o in answers if o is not None))
            await self._store.seal_catchup(chat, note)
        for number, note in await self._store.open_catchups(chat):
            first = await self._send_to_chat("catchup", str(number), chat, note.text)
            if first is None:  # refused: left open for another process or a restart
                continue
            resolved = set(note.resolved)
            for call in note.calls:
                member = call_member(call)
                await self._store.mark_sent("alert", member, chat, first)
                if member in resolved:
                    await self._store.mark_sent("followup", member, chat, first)
            for call in note.calls:
                if call_member(call) not in resolved:
                    outcome = await self._store.outcome(call.prediction_id, call.target)
                    if outcome is not None:  # resolved after the note was sealed
                        await self._send_followup(call, outcome, chat)
            await self._store.close_catchup(chat, number)

    async def _send_digest(self, period_ms: int) -> None:
        if await self._all_sent("digest", str(period_ms)):
            return
        predictions = await self._store.period_predictions(period_ms)
        if not predictions:
            return
        pairs = [(p.id, t) for p in predictions for t in p.targets]
        alerted = await self._store.alerted_pairs(pairs)
        text = format_digest(period_ms, self._config.digest_every_hours, predictions, alerted)
        await self._send_text("digest", str(period_ms), text)

    async def _send_summary(self, day_start_ms: int) -> None:
        key = str(day_start_ms)
        if await self._all_sent("summary", key):
            return
        end_ms = day_start_ms + DAY_MS
        start_ms = end_ms - self._config.summary_window_days * DAY_MS
        await self._store.forget_outcomes_before(start_ms - DAY_MS)
        calls = await self._store.resolved_calls(start_ms, end_ms)
        stats = summarize(calls, start_ms, end_ms, self._config.summary_min_samples)
        text = format_summary(day_start_ms, stats, self._config.summary_window_days)
        chart = None
        if stats is not None and self._draw_chart is not None:
            chart = self._draw_chart(stats, f"bse-predict live scores, {format_utc(day_start_ms)[:10]}")
        if chart is not None and stats is not None:
            caption = summary_caption(day_start_ms, stats)
            for chat in self._chats:
                if await self._store.sent("summary-chart", key, chat) is None:
                    await self._deliver("summary-chart", key, chat, caption, photo=chart)
        await self._send_text("summary", key, text)
