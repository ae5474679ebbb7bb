"""The champion/challenger watch: paired live and shadow outcomes into the sequential test.

An outcome listener. Within one settled batch, the live and the shadow
outcome of the same prediction (same candle, same target) settle together;
each such pair adds one normalised log-loss difference
(:mod:`bse_predict.monitoring.sequential`) to the evidence of its version pair, kept in Redis as
additive sums (every worker adds its symbols' pairs).

A pair counts in candle order, once the horizon of its candle has passed: it is
staged in Redis until then. Counted as they settle, the outcomes that resolve
fast would come first, and they are not a fair sample: in a rising market the
"up" touches of the 1 % target settle within hours, the "none" outcomes only at
the horizon, and a model that always says "up" looks better for a day (the
whole-loop test, tests/integration/test_live_loop.py, found it so). The test's
guarantee needs each pair's outcome not to decide when it is counted. The *challenger* is the
newer of the two versions (manifest ``created_at``), whichever stream it is on.

When a side's e-value crosses ``2/alpha``, one worker wins a Redis ``SET NX``
for that version pair and reports the verdict on ``control.events``; with
``challenger.auto_promote`` it also sends the decision
(:func:`bse_predict.monitoring.sequential.decision_command`) as a signed control message on
``control``, so it goes through the same verification, state machine and
audit trail as an operator's command. With ``challenger.watch_after_promotion``
the promote keeps the replaced version as the shadow: the pair is tested again,
now with the challenger live, and a live regression is rolled back (or the
watch ends, shadow off, when the promoted version holds up). Without ``BSE_CONTROL_SECRET`` nothing
can be signed: the event says so and no command is sent.

A/B arms serve different symbols, so their predictions are never on the same
candle: they are not paired here (their live scores are compared in the
metrics, per ``variant``). A degraded prediction (a fallback answered) is
not its version's own answer and is not paired either.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from configs.settings import Settings
from bse_predict.control.messages import build_message, encode_message, format_issued_at
from bse_predict.monitoring.challenger_evidence import evidence_from_fields, evidence_key, evidence_prefix
from bse_predict.monitoring.event_report import EventReport, Sender
from bse_predict.monitoring.outcomes import Settlement
from bse_predict.monitoring.sequential import (Evidence, add_differences, decision_command, e_values, normalised_differences,
                                               threshold, verdict)

__all__ = ["Sender", "ChallengerWatch"]

log = logging.getLogger(__name__)


# KEYS: the version pair's evidence hash, this call's token; ARGV: the hash's TTL (s), the token's TTL (s),
# then (field, increment) pairs. The token makes a second run of one call (redis-py resends a command
# whose connection failed) add nothing. Returns the hash's fields and totals.
_ADD_EVIDENCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[2])) then
  for i = 3, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: this call's token, then one version pair's (and phase's) staged pairs of each symbol (sorted sets by
# candle open time); ARGV: the sets' TTL (s), the token's TTL (s), then per set: the release cutoff (open time),
# the number of new entries and those (open time, pair) entries. Adds the entries, then removes and returns
# every staged pair up to its set's cutoff, oldest first per set. A second run of one call (a resend) does
# nothing and releases nothing: its pairs are lost, never counted twice.
_STAGE_AND_RELEASE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[2])) then return {} end
local released = {}
local a = 3
for k = 2, #KEYS do
  local cutoff, entries = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for i = 1, entries do
    redis.call('ZADD', KEYS[k], tonumber(ARGV[a]), ARGV[a + 1])
    a = a + 2
  end
  for _, pair in ipairs(redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', cutoff)) do released[#released + 1] = pair end
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', cutoff)
  redis.call('EXPIRE', KEYS[k], tonumber(ARGV[1]))
end
return released
"""

_TOKEN_TTL_S = 300


@dataclass(frozen=True, slots=True)
class _Pair:
    open_time: int
    prediction_id: str
    target: str
    p_champion: float
    p_challenger: float


def _release_cutoffs(settlements: Sequence[Settlement]) -> dict[str, int]:
    """Per symbol, the newest candle open time whose pairs are all known, and those of every candle before it:
    one whose horizon ended by the newest resolution of this batch (candles settle in order)."""
    cutoffs: dict[str, int] = {}
    for s in settlements:
        item = s.pending
        cutoff = s.resolved_at - (item.horizon_candles + 1) * item.step_ms
        cutoffs[item.symbol] = max(cutoffs.get(item.symbol, cutoff), cutoff)
    return cutoffs


def _p_of_outcome(settlement: Settlement) -> float:
    """The probability the model gave to what happened (labels order: up, down, none)."""
    item = settlement.pending
    return (item.p_up, item.p_down, item.p_none)[settlement.label]


class ChallengerWatch:
    """See the module docstring. ``is_newer(a, b)``: version a was created after b."""

    def __init__(self, client: aioredis.Redis, settings: Settings, sender: Sender, is_newer: Callable[[str, str], bool],
                 control_topic: str, events_topic: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._client = client
        self._config = settings.challenger
        self._secret = settings.control_secret
        self._key_id = settings.control_key_id
        self._prefix = evidence_prefix(settings.topic_prefix)
        self._sender = sender
        self._is_newer = is_newer
        self._control_topic = control_topic
        self._events = EventReport(sender, events_topic, b"challenger", log, logging.INFO, "challenger decision")
        self._clock = clock
        self._retain_s = self._config.retain_hours * 3600
        self._add_sums = client.register_script(_ADD_EVIDENCE)
        self._stage = client.register_script(_STAGE_AND_RELEASE)
        self.decisions: list[dict[str, Any]] = self._events.sent

    async def on_settled(self, settlements: Sequence[Settlement]) -> None:
        staged = self._pairs(settlements)
        cutoffs = _release_cutoffs(settlements)
        for (champion, challenger, challenger_is_live), by_symbol in staged.items():
            key = self._key(champion, challenger, challenger_is_live)
            released = await self._stage_and_release(key, by_symbol, cutoffs)
            if not released:
                continue
            p_champion, p_challenger = zip(*released, strict=True)
            x = normalised_differences(list(p_champion), list(p_challenger), self._config.loss_clip_nats)
            evidence = await self._add(key, add_differences(Evidence(), x))
            found = verdict(evidence, self._config.alpha, self._config.max_pairs)
            if found is not None:
                await self._decide(champion, challenger, challenger_is_live, evidence, found)

    def _pairs(self, settlements: Sequence[Settlement]) -> dict[tuple[str, str, bool], dict[str, list[_Pair]]]:
        """The settled live/shadow pairs of this batch, by (champion, challenger, challenger is live) and symbol."""
        by_prediction: dict[tuple[str, str], dict[str, Settlement]] = defaultdict(dict)
        for s in settlements:
            by_prediction[(s.pending.prediction_id, s.pending.target)][s.pending.stream] = s
        pairs: dict[tuple[str, str, bool], dict[str, list[_Pair]]] = defaultdict(lambda: defaultdict(list))
        for (prediction_id, target), found in by_prediction.items():
            live, shadow = found.get("live"), found.get("shadow")
            if live is None or shadow is None or live.pending.model.version == shadow.pending.model.version:
                continue
            if live.pending.degraded or shadow.pending.degraded:
                continue  # a fallback answered: not the champion's own answer
            live_version, shadow_version = live.pending.model.version, shadow.pending.model.version
            shadow_is_challenger = self._is_newer(shadow_version, live_version)
            champion, challenger = (live, shadow) if shadow_is_challenger else (shadow, live)
            key = (champion.pending.model.version, challenger.pending.model.version, not shadow_is_challenger)
            pairs[key][live.pending.symbol].append(
                _Pair(live.pending.open_time, prediction_id, target, _p_of_outcome(champion), _p_of_outcome(challenger)))
        return pairs

    async def _stage_and_release(self, key: str, by_symbol: Mapping[str, list[_Pair]],
                                 cutoffs: Mapping[str, int]) -> list[tuple[float, float]]:
        """Stage each symbol's ``pairs`` under ``key`` in Redis and take back, oldest candle first, every
        staged pair of that symbol's candles up to its cutoff: one call, however often redis-py sends it
        (a resent call releases nothing)."""
        args: list[str | int] = [self._retain_s, _TOKEN_TTL_S]
        for symbol, pairs in by_symbol.items():
            args += [cutoffs[symbol], len(pairs)]
            for pair in pairs:
                args += [pair.open_time, orjson.dumps([pair.prediction_id, pair.target, pair.p_champion,
                                                       pair.p_challenger]).decode()]
        reply = await self._stage(keys=[f"{key}:token:{uuid.uuid4().hex}", *(f"{key}:staged:{s}" for s in by_symbol)],
                                  args=args)
        released = [orjson.loads(member) for member in reply]
        return [(float(p_champion), float(p_challenger)) for _, _, p_champion, p_challenger in released]

    def _key(self, champion: str, challenger: str, challenger_is_live: bool) -> str:
        """The evidence of one version pair in one phase: the challenger in shadow, or live after its
        promotion with the champion watched beside it (a fresh test: the first one's evidence is spent);
        the layout is :mod:`bse_predict.monitoring.challenger_evidence`'s."""
        return evidence_key(self._prefix, champion, challenger, challenger_is_live)

    async def _add(self, key: str, batch: Evidence) -> Evidence:
        """Add this batch's sums to ``key`` in Redis (once, however often redis-py sends the call); the
        fleet's totals come back."""
        increments: list[str | float] = ["pairs", batch.pairs, "sum_x", batch.sum_x]
        for i, (better, worse) in enumerate(zip(batch.log_wealth_better, batch.log_wealth_worse, strict=True)):
            increments += [f"better:{i}", better, f"worse:{i}", worse]
        reply = await self._add_sums(keys=[key, f"{key}:token:{uuid.uuid4().hex}"],
                                     args=[self._retain_s, _TOKEN_TTL_S, *(repr(v) if isinstance(v, float) else v
                                                                          for v in increments)])
        return evidence_from_fields({reply[i].decode(): float(reply[i + 1]) for i in range(0, len(reply), 2)})

    async def _decide(self, champion: str, challenger: str, challenger_is_live: bool, evidence: Evidence,
                      found: str) -> None:
        key = self._key(champion, challenger, challenger_is_live)
        if not await self._client.set(f"{key}:decided", found, nx=True, ex=self._retain_s):
            return  # another worker (or an earlier batch) already decided this pair in this phase
        now = self._clock()
        command = decision_command(found, challenger, challenger_is_live,  # type: ignore[arg-type]
                                   shadow_previous=self._config.watch_after_promotion)
        control_id = None
        if not self._config.auto_promote:
            note = f"auto_promote is off: {command[0]} {command[1]} recommended, not sent"
        elif self._secret is None:
            note = f"BSE_CONTROL_SECRET is not set: {command[0]} cannot be signed, not sent"
        else:
            message = build_message(command[0], command[1], self._secret.get_secret_value(), now,
                                    issued_by=self._config.issued_by, key_id=self._key_id)
            await self._sender.send(self._control_topic, command[0].encode(), encode_message(message))
            control_id = message["id"]
            note = f"sent {command[0]} {command[1]} as control message {control_id}"
        better, worse = e_values(evidence)
        event = {
            "status": "challenger_decision", "reason": f"{found.replace('_', ' ')} ({note})",
            "at": format_issued_at(now), "verdict": found, "champion": champion,
            "challenger": challenger, "challenger_stream": "live" if challenger_is_live else "shadow",
            "pairs": evidence.pairs, "mean_loss_difference_nats": evidence.mean_difference * self._config.loss_clip_nats,
            "e_value_better": better, "e_value_worse": worse, "threshold": threshold(self._config.alpha),
            "alpha": self._config.alpha, "command": command[0], "args": command[1], "control_id": control_id,
            "auto_promote": self._config.auto_promote, "issued_by": self._config.issued_by,
        }
        await self._events.report(event)

