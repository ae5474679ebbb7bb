"""The dashboard's read of the champion/challenger test, against the real Redis that real
:class:`~bse_predict.monitoring.challenger.ChallengerWatch` instances (two workers) wrote: the pairs, both
e-values and the verdict are those of the sequential test over the pairs released, and a live/shadow pair
that was never tested reads as nothing."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from configs.settings import Settings
from bse_predict.connections.clients import connect_redis, kafka_options
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.monitoring.challenger import ChallengerWatch
from bse_predict.monitoring.challenger_evidence import ChallengerStanding
from bse_predict.monitoring.challenger_store import RedisChallengerEvidence
from bse_predict.monitoring.resolver import KafkaOutcomePublisher
from bse_predict.monitoring.sequential import Evidence, add_differences, e_values, normalised_differences
from tests.integration.test_outcomes import _pair_settlements

pytestmark = pytest.mark.integration


def test_the_dashboard_reads_what_the_workers_counted(services: Settings, isolated: Settings) -> None:
    settings = isolated
    asyncio.run(ensure_topics(settings))
    names = TopicNames.of(settings)
    settlements = _pair_settlements(np.random.default_rng(8), 1500, skill_live=0.45, skill_shadow=0.9)

    async def run() -> tuple[list[dict[str, object]], tuple[ChallengerStanding, ...], tuple[ChallengerStanding, ...]]:
        client = connect_redis(settings)
        sender = KafkaOutcomePublisher(kafka_options(settings), names.outcomes)
        await sender.start()
        try:
            watches = [ChallengerWatch(client, settings, sender, lambda a, b: a > b, names.control, names.control_events)
                       for _ in range(2)]
            for start in range(0, len(settlements), 48):
                await watches[(start // 48) % 2].on_settled(settlements[start:start + 48])
            reader = RedisChallengerEvidence(client, settings)
            return [d for w in watches for d in w.decisions], await reader.read("v1", "v2"), await reader.read("v2", "v1")
        finally:
            await sender.stop()
            await client.aclose()

    decisions, (shown,), untested = asyncio.run(run())
    assert untested == ()
    released = [s for s in settlements if s.pending.open_time <= settlements[-1].resolved_at - 73 * s.pending.step_ms]
    p = {stream: np.array([(s.pending.p_up, s.pending.p_down, s.pending.p_none)[s.label] for s in released
                           if s.pending.stream == stream]) for stream in ("live", "shadow")}
    expected = add_differences(Evidence(), normalised_differences(p["live"], p["shadow"], settings.challenger.loss_clip_nats))
    assert (shown.champion, shown.challenger, shown.challenger_stream) == ("v1", "v2", "shadow")
    assert shown.pairs == expected.pairs == 1500 - 71
    assert (shown.e_value_better, shown.e_value_worse) == pytest.approx(e_values(expected), rel=1e-9)
    assert shown.threshold == 2 / settings.challenger.alpha and shown.e_value_better > shown.threshold
    (decision,) = decisions
    assert shown.decided == decision["verdict"] == "challenger_better"
