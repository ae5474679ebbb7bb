"""Read-only: the champion/challenger test's evidence in Redis, as
:class:`~bse_predict.monitoring.challenger.ChallengerWatch` leaves it (key layout:
:mod:`bse_predict.monitoring.challenger_evidence`). Nothing here writes."""

from __future__ import annotations

import redis.asyncio as aioredis

from configs.settings import Settings
from bse_predict.monitoring.challenger_evidence import (ChallengerStanding, candidate_keys, evidence_from_fields,
                                                        evidence_prefix, standing)

__all__ = ["RedisChallengerEvidence"]


class RedisChallengerEvidence:
    """The test of a live and a shadow version, read in one round trip: both phases' hashes and verdicts."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._prefix = evidence_prefix(settings.topic_prefix)
        self._config = settings.challenger

    async def read(self, live: str, shadow: str) -> tuple[ChallengerStanding, ...]:
        """The evidence of ``live`` against ``shadow`` under each phase that has any (usually one: the newer
        version is the challenger); empty when no pair has been counted and nothing was decided."""
        candidates = candidate_keys(self._prefix, live, shadow)
        async with self._client.pipeline(transaction=False) as pipe:
            for *_, key in candidates:
                pipe.hgetall(key)
                pipe.get(f"{key}:decided")
            replies = await pipe.execute()
        found = []
        for (champion, challenger, challenger_is_live, _), fields, decided in zip(
                candidates, replies[::2], replies[1::2], strict=True):
            if not fields and decided is None:
                continue
            evidence = evidence_from_fields({k.decode(): float(v) for k, v in fields.items()})
            found.append(standing(champion, challenger, challenger_is_live, evidence,
                                  None if decided is None else decided.decode(), self._config.alpha,
                                  self._config.loss_clip_nats, self._config.max_pairs))
        return tuple(found)
