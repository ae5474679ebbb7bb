"""The alerts service's memory in Redis: verdicts, cooldowns, sent marks, outcomes, digest periods.

Keys live under ``{topic_prefix}bse:alerts:`` and expire after
``alerts.state_ttl_hours`` (longer than the 72 h horizon, so a follow-up always
finds its alert). What each key is for:

- ``verdict:{id}|{target}``: the stored decision for a call that cleared its
  thresholds (the call's JSON and whether the cooldown let it through). Stored
  once, before anything is sent, together with the cooldown it moves (one
  MULTI), so a restart replays the same verdict instead of re-deciding
  against a cooldown that the first run already moved. Both keys are
  WATCHed, so two processes deciding at once store one verdict.
- ``cooldown:{symbol}|{target}|{direction}``: the newest alerted ``open_time``.
- ``sent:{kind}:{key}:{chat}``: first the sender's claim (``claim:{owner}``,
  set only where the key is absent, expiring after ``alerts.claim_ttl_s``
  unless renewed), then Telegram's message_id, written only after Telegram
  accepted the message; kinds are alert, followup, catchup, digest, summary,
  summary-chart, and caught-up (a call listed in a catch-up note: the note's
  number).
- ``catchup-pending:{chat}`` (hash "{id}|{target}" -> call JSON): stale calls
  waiting for the chat's next catch-up note; ``catchup:{chat}:{n}`` (a sealed
  note: its text and calls), ``catchup-open:{chat}`` (the numbers of the
  notes not yet sent there) and ``catchup-seq:{chat}`` (the last number).
- ``lease:schedule``: the owner of the schedule lease (:mod:`bse_predict.alerts.lease`).
- ``explanation:{id}|{target}``: an alerted call's explanation
  (:class:`bse_predict.explain.explanation.Explanation`: every feature's contribution), written
  once; what the alert's line says and what the dashboard's call view shows.
- ``outcome:{id}|{target}`` and the ``outcomes`` sorted set (by resolved_at):
  what the follow-ups and the daily summary read.
- ``period:{start}`` (hash symbol -> prediction JSON), ``latest_close_ms`` (the
  newest prediction's candle close) and ``latest_event_ms`` (that, or an
  outcome's resolution, whichever is newer): what the digest and the summary
  schedule read.
"""

from __future__ import annotations

from enum import Enum

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.exceptions import WatchError

from bse_predict.alerts.rules import AlertCall, cooldown_allows, cooldown_key
from bse_predict.alerts.summary_stats import ResolvedCall
from bse_predict.candles.schema import Outcome, Prediction
from bse_predict.alerts.lease import OwnedKeys
from bse_predict.explain.explanation import Explanation

__all__ = ["AlertStore", "CatchupNote", "Claimed", "call_member"]

# Only raise a stored maximum: the newest period or event time seen so far.
_SET_MAX = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return redis.call('GET', KEYS[1])
"""

# KEYS[1] the chat's pending hash, KEYS[2] its "caught-up" mark, KEYS[3] its alert mark; ARGV[1] the
# member, ARGV[2] the call's JSON, ARGV[3] time to live in s. A call already listed or sent stays out.
_ADD_PENDING = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] the pending hash, KEYS[2] the note, KEYS[3] the open set, KEYS[4..] each call's "caught-up"
# mark; ARGV[1] the note's JSON, ARGV[2] its number, ARGV[3] time to live in s, ARGV[4..] the members
# (in the order of KEYS[4..]). Seals only if every member is still pending: two sealers of the
# same calls cannot both win.
_SEAL = """
for i = 4, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    return 0
  end
end
for i = 4, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('SET', KEYS[i], ARGV[2], 'EX', ARGV[3])
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""


class Claimed(Enum):
    """What :meth:`AlertStore.claim` found when the message was not sent yet."""

    MINE = "mine"
    THEIRS = "theirs"


class CatchupNote(BaseModel):
    """A sealed catch-up note: its text (the same for every try) and the calls it lists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    calls: tuple[AlertCall, ...]
    resolved: tuple[str, ...]  # "{id}|{target}" of the calls whose outcome the note already gives


def call_member(call: AlertCall) -> str:
    """The call's key in verdicts, marks and notes: ``{prediction id}|{target}``."""
    return f"{call.prediction_id}|{call.target}"


class AlertStore:
    def __init__(self, client: aioredis.Redis, key_prefix: str, ttl_hours: int, owner: str,
                 claim_ttl_s: float) -> None:
        self._redis = client
        self._base = f"{key_prefix}bse:alerts:"
        self._ttl_s = ttl_hours * 3600
        self._claim = f"claim:{owner}"
        self._claim_ttl_ms = int(claim_ttl_s * 1000)
        self._owned = OwnedKeys(client)
        self._set_max = client.register_script(_SET_MAX)
        self._add_pending = client.register_script(_ADD_PENDING)
        self._seal = client.register_script(_SEAL)

    @property
    def lease_key(self) -> str:
        """The schedule lease's key (see :class:`bse_predict.alerts.lease.Lease`)."""
        return self._key("lease", "schedule")

    def _key(self, *parts: str) -> str:
        return self._base + ":".join(parts)

    # ------------------------------------------------------------ verdicts

    async def decide(self, call: AlertCall, cooldown_hours: float) -> bool:
        """The verdict for ``call``: the stored one, or a new one stored with the cooldown it moves.

        Both keys are WATCHed: when another process stores this verdict or moves
        this cooldown between the reads and the write, the write is dropped and
        the decision is made again from what it stored.
        """
        verdict_key = self._key("verdict", f"{call.prediction_id}|{call.target}")
        cool_key = self._key("cooldown", cooldown_key(call.symbol, call.target, call.direction))
        async with self._redis.pipeline(transaction=True) as tx:
            while True:
                try:
                    await tx.watch(verdict_key, cool_key)
                    stored = await tx.get(verdict_key)
                    if stored is not None:
                        return bool(orjson.loads(stored)["alert"])
                    last = await tx.get(cool_key)
                    last_ms = int(last) if last is not None else None
                    allowed = cooldown_allows(last_ms, call.open_time, cooldown_hours)
                    tx.multi()
                    tx.set(verdict_key, orjson.dumps({"alert": allowed, "call": call.model_dump()}), ex=self._ttl_s)
                    if allowed:
                        tx.set(cool_key, max(call.open_time, last_ms or call.open_time), ex=self._ttl_s)
                    await tx.execute()
                    return allowed
                except WatchError:
                    continue

    async def alerted_call(self, prediction_id: str, target: str) -> AlertCall | None:
        """The call of an alerted (id, target), or None when it was not alerted (or not decided yet)."""
        stored = await self._redis.get(self._key("verdict", f"{prediction_id}|{target}"))
        if stored is None:
            return None
        verdict = orjson.loads(stored)
        return AlertCall.model_validate(verdict["call"]) if verdict["alert"] else None

    async def alerted_pairs(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (id, target) pairs were alerted."""
        if not pairs:
            return set()
        stored = await self._redis.mget([self._key("verdict", f"{i}|{t}") for i, t in pairs])
        return {pair for pair, raw in zip(pairs, stored, strict=True) if raw and orjson.loads(raw)["alert"]}

    # ------------------------------------------------------------ sent marks

    async def sent(self, kind: str, key: str, chat_id: str) -> int | None:
        """Telegram's message_id of what was sent for (kind, key) to the chat, or None (also while claimed)."""
        stored = await self._redis.get(self._key("sent", kind, key, chat_id))
        return int(stored) if stored is not None and stored.isdigit() else None

    async def mark_sent(self, kind: str, key: str, chat_id: str, message_id: int) -> None:
        await self._redis.set(self._key("sent", kind, key, chat_id), message_id, ex=self._ttl_s)

    # ------------------------------------------------------------ claims

    async def claim(self, kind: str, key: str, chat_id: str) -> Claimed | int:
        """Claim the send of (kind, key) to the chat: MINE, THEIRS (another process's live claim), or
        the message_id when it was sent already."""
        held = await self._owned.take(self._key("sent", kind, key, chat_id), self._claim, self._claim_ttl_ms)
        if held is None:
            return Claimed.MINE
        return int(held) if held.isdigit() else Claimed.THEIRS

    async def renew_claim(self, kind: str, key: str, chat_id: str) -> bool:
        return await self._owned.renew(self._key("sent", kind, key, chat_id), self._claim, self._claim_ttl_ms)

    async def release_claim(self, kind: str, key: str, chat_id: str) -> bool:
        """Give the send up (Telegram did not take it): the next try, by anyone, may claim it."""
        return await self._owned.release(self._key("sent", kind, key, chat_id), self._claim)

    async def finish_claim(self, kind: str, key: str, chat_id: str, message_id: int) -> bool:
        """The claim becomes the sent mark; False when the claim had expired before (see docs/alerts.md)."""
        return await self._owned.replace(self._key("sent", kind, key, chat_id), self._claim, message_id,
                                         self._ttl_s)

    # ------------------------------------------------------------ catch-up notes

    async def hold_for_catchup(self, chat_id: str, call: AlertCall) -> bool:
        """Keep a stale call for the chat's next catch-up note; False when it was listed or sent already."""
        member = call_member(call)
        return bool(await self._add_pending(
            keys=[self._key("catchup-pending", chat_id), self._key("sent", "caught-up", member, chat_id),
                  self._key("sent", "alert", member, chat_id)],
            args=[member, call.model_dump_json(), self._ttl_s]))

    async def pending_calls(self, chat_id: str) -> list[AlertCall]:
        stored = await self._redis.hgetall(self._key("catchup-pending", chat_id))
        return [AlertCall.model_validate_json(raw) for raw in stored.values()]

    async def seal_catchup(self, chat_id: str, note: CatchupNote) -> int | None:
        """Move the note's calls from pending into a numbered note; None when another sealer took one of them."""
        number = await self._redis.incr(self._key("catchup-seq", chat_id))
        await self._redis.expire(self._key("catchup-seq", chat_id), self._ttl_s)
        members = [call_member(c) for c in note.calls]
        sealed = await self._seal(
            keys=[self._key("catchup-pending", chat_id), self._key("catchup", chat_id, str(number)),
                  self._key("catchup-open", chat_id),
                  *(self._key("sent", "caught-up", m, chat_id) for m in members)],
            args=[note.model_dump_json(), number, self._ttl_s, *members])
        return number if sealed else None

    async def open_catchups(self, chat_id: str) -> list[tuple[int, CatchupNote]]:
        """The sealed notes not yet sent to the chat, oldest first."""
        numbers = [int(n) for n in await self._redis.zrange(self._key("catchup-open", chat_id), 0, -1)]
        if not numbers:
            return []
        stored = await self._redis.mget([self._key("catchup", chat_id, str(n)) for n in numbers])
        return [(n, CatchupNote.model_validate_json(raw)) for n, raw in zip(numbers, stored, strict=True)
                if raw is not None]

    async def close_catchup(self, chat_id: str, number: int) -> None:
        async with self._redis.pipeline(transaction=True) as tx:
            tx.zrem(self._key("catchup-open", chat_id), number)
            tx.delete(self._key("catchup", chat_id, str(number)))
            await tx.execute()

    # ------------------------------------------------------------ explanations

    async def keep_explanation(self, member: str, explanation: Explanation) -> Explanation:
        """Store the call's explanation unless one is stored already; the stored one (first writer wins)."""
        key = self._key("explanation", member)
        await self._redis.set(key, explanation.model_dump_json(), ex=self._ttl_s, nx=True)
        return await self.explanation(member) or explanation

    async def explanation(self, member: str) -> Explanation | None:
        """The explanation of the call ``{prediction id}|{target}``, or None."""
        stored = await self._redis.get(self._key("explanation", member))
        return Explanation.model_validate_json(stored) if stored is not None else None

    # ------------------------------------------------------------ outcomes

    async def save_outcome(self, outcome: Outcome) -> None:
        member = f"{outcome.id}|{outcome.target}"
        async with self._redis.pipeline(transaction=True) as tx:
            tx.set(self._key("outcome", member), outcome.model_dump_json(), ex=self._ttl_s)
            tx.zadd(self._key("outcomes"), {member: outcome.resolved_at})
            tx.expire(self._key("outcomes"), self._ttl_s)
            await tx.execute()

    async def outcome(self, prediction_id: str, target: str) -> Outcome | None:
        stored = await self._redis.get(self._key("outcome", f"{prediction_id}|{target}"))
        return Outcome.model_validate_json(stored) if stored is not None else None

    async def resolved_calls(self, start_ms: int, end_ms: int) -> list[ResolvedCall]:
        """Outcomes resolved in [start_ms, end_ms), with whether each had been alerted."""
        members = [m.decode() for m in await self._redis.zrangebyscore(self._key("outcomes"), start_ms, end_ms - 1)]
        if not members:
            return []
        outcomes = await self._redis.mget([self._key("outcome", m) for m in members])
        found = [Outcome.model_validate_json(raw) for raw in outcomes if raw is not None]
        alerted = await self.alerted_pairs([(o.id, o.target) for o in found])
        return [ResolvedCall(symbol=o.symbol, target=o.target, outcome=o.outcome, p_up=o.p_up, p_down=o.p_down,
                             p_none=o.p_none, alerted=(o.id, o.target) in alerted, resolved_at=o.resolved_at)
                for o in found]

    async def forget_outcomes_before(self, ms: int) -> None:
        await self._redis.zremrangebyscore(self._key("outcomes"), "-inf", ms - 1)

    # ------------------------------------------------------------ digest and schedule

    async def record_for_digest(self, period_start_ms: int, close_ms: int, prediction: Prediction) -> None:
        """Keep the newest prediction of each symbol in its digest period; ``close_ms`` is its candle's close."""
        key = self._key("period", str(period_start_ms))
        async with self._redis.pipeline(transaction=True) as tx:
            while True:  # WATCHed: a newer one that another process writes meanwhile is never replaced
                try:
                    await tx.watch(key)
                    current = await tx.hget(key, prediction.symbol)
                    if current is not None and orjson.loads(current)["open_time"] > prediction.open_time:
                        break  # leaving the block unwatches
                    tx.multi()
                    tx.hset(key, prediction.symbol, prediction.model_dump_json())
                    tx.expire(key, self._ttl_s)
                    await tx.execute()
                    break
                except WatchError:
                    continue
        await self._set_max(keys=[self._key("latest_close_ms")], args=[close_ms, self._ttl_s])

    async def period_predictions(self, period_start_ms: int) -> list[Prediction]:
        stored = await self._redis.hgetall(self._key("period", str(period_start_ms)))
        return [Prediction.model_validate_json(raw) for raw in stored.values()]

    async def latest_close_ms(self) -> int | None:
        stored = await self._redis.get(self._key("latest_close_ms"))
        return int(stored) if stored is not None else None

    async def note_event(self, event_ms: int) -> None:
        """The newest candle time the stream has shown (a prediction's close, an outcome's resolution)."""
        await self._set_max(keys=[self._key("latest_event_ms")], args=[event_ms, self._ttl_s])

    async def latest_event_ms(self) -> int | None:
        stored = await self._redis.get(self._key("latest_event_ms"))
        return int(stored) if stored is not None else None
