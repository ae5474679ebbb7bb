"""The alerts service's memory in Redis: verdicts, cooldowns, sent marks, outcomes, digest periods.

Keys live under ``{topic_prefix}bse:alerts:`` and expire after
``alerts.state_ttl_hours`` (longer than the 72 h horizon, so a follow-up always
finds its alert). What each key is for:

- ``verdict:{id}|{target}``: the stored decision for a call that cleared its
  thresholds (the call's JSON and whether the cooldown let it through). Stored
  once, before anything is sent, together with the cooldown it moves (one
  MULTI), so a restart replays the same verdict instead of re-deciding
  against a cooldown that the first run already moved.
- ``cooldown:{symbol}|{target}|{direction}``: the newest alerted ``open_time``.
- ``sent:{kind}:{key}:{chat}``: Telegram's message_id, written only after
  Telegram accepted the message; kinds are alert, followup, digest, summary.
- ``outcome:{id}|{target}`` and the ``outcomes`` sorted set (by resolved_at):
  what the follow-ups and the daily summary read.
- ``period:{start}`` (hash symbol -> prediction JSON), ``latest_close_ms`` (the
  newest prediction's candle close) and ``latest_event_ms`` (that, or an
  outcome's resolution, whichever is newer): what the digest and the summary
  schedule read.
"""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from models.alert_rules import AlertCall, cooldown_allows, cooldown_key
from models.live_stats import ResolvedCall
from models.schema import Outcome, Prediction

__all__ = ["AlertStore"]

# Only raise a stored maximum: the newest period or event time seen so far.
_SET_MAX = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return redis.call('GET', KEYS[1])
"""


class AlertStore:
    def __init__(self, client: aioredis.Redis, key_prefix: str, ttl_hours: int) -> None:
        self._redis = client
        self._base = f"{key_prefix}bse:alerts:"
        self._ttl_s = ttl_hours * 3600
        self._set_max = client.register_script(_SET_MAX)

    def _key(self, *parts: str) -> str:
        return self._base + ":".join(parts)

    # ------------------------------------------------------------ verdicts

    async def decide(self, call: AlertCall, cooldown_hours: float) -> bool:
        """The verdict for ``call``: the stored one, or a new one stored with the cooldown it moves."""
        verdict_key = self._key("verdict", f"{call.prediction_id}|{call.target}")
        stored = await self._redis.get(verdict_key)
        if stored is not None:
            return bool(orjson.loads(stored)["alert"])
        cool_key = self._key("cooldown", cooldown_key(call.symbol, call.target, call.direction))
        last = await self._redis.get(cool_key)
        last_ms = int(last) if last is not None else None
        allowed = cooldown_allows(last_ms, call.open_time, cooldown_hours)
        async with self._redis.pipeline(transaction=True) as tx:
            tx.set(verdict_key, orjson.dumps({"alert": allowed, "call": call.model_dump()}), ex=self._ttl_s)
            if allowed:
                tx.set(cool_key, max(call.open_time, last_ms or call.open_time), ex=self._ttl_s)
            await tx.execute()
        return allowed

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
        """Telegram's message_id of what was sent for (kind, key) to the chat, or None."""
        stored = await self._redis.get(self._key("sent", kind, key, chat_id))
        return int(stored) if stored is not None else None

    async def mark_sent(self, kind: str, key: str, chat_id: str, message_id: int) -> None:
        await self._redis.set(self._key("sent", kind, key, chat_id), message_id, ex=self._ttl_s)

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
        current = await self._redis.hget(key, prediction.symbol)
        if current is None or orjson.loads(current)["open_time"] <= prediction.open_time:
            async with self._redis.pipeline(transaction=True) as tx:
                tx.hset(key, prediction.symbol, prediction.model_dump_json())
                tx.expire(key, self._ttl_s)
                await tx.execute()
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
