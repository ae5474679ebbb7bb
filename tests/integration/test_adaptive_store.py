"""The live weight vector in the real Redis: two workers' updates at once both count, a settlement
seen twice counts once, and a restarted worker serves the stored vector from its first batch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.asyncio as aioredis

from configs.settings import Settings
from bse_predict.ensembles.combiners import hedge_update
from bse_predict.labels.first_touch import DOWN, UP
from bse_predict.serving.manifest import CombinerRecord
from bse_predict.monitoring.outcomes import PendingOutcome, Settlement
from bse_predict.candles.schema import ModelRef, Prediction
from bse_predict.ensembles.adaptive_weights import AdaptiveWeights
from bse_predict.connections.clients import connect_redis

pytestmark = pytest.mark.integration

VERSION = "v-adaptive"
COMBINER = CombinerRecord(strategy="weighted", members=("m_a", "m_b"), weights=(0.5, 0.5), weight_floor=0.02,
                          adaptive_rate=0.5)
MEMBERS = {"p1": np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]]), "p2": np.array([[0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])}


def _prediction(prediction_id: str, open_time: int) -> Prediction:
    return Prediction.model_construct(id=prediction_id, open_time=open_time, model=ModelRef(name="ensemble", version=VERSION))


def _settled(prediction_id: str, open_time: int, label: int) -> Settlement:
    pending = PendingOutcome(prediction_id=prediction_id, symbol=prediction_id.upper(), timeframe="1h",
                             open_time=open_time, entry_close=100.0, target="2%", target_frac=0.02,
                             horizon_candles=72, step_ms=3_600_000, model=ModelRef(name="ensemble", version=VERSION),
                             variant="control", stream="live", p_up=0.5, p_down=0.4, p_none=0.1)
    return Settlement(pending=pending, label=label, resolved_at=open_time + 7_200_000)


async def _worker(settings: Settings) -> tuple[AdaptiveWeights, aioredis.Redis]:
    client = connect_redis(settings)
    weights = AdaptiveWeights(settings)
    weights.register(VERSION, {"2%": COMBINER})
    weights.attach(client)
    await weights.refresh()
    return weights, client


def test_two_workers_share_one_vector_and_a_restart_serves_it(isolated: Settings) -> None:
    async def scenario() -> tuple[np.ndarray | None, np.ndarray | None, int, int]:
        (a, client_a), (b, client_b) = await _worker(isolated), await _worker(isolated)
        assert "2%" not in a.current(VERSION)  # nothing learnt yet: the fitted weights apply
        await a.record([_prediction("p1", 0)], {"p1": {"2%": MEMBERS["p1"]}})
        await b.record([_prediction("p2", 3_600_000)], {"p2": {"2%": MEMBERS["p2"]}})
        first, second = _settled("p1", 0, UP), _settled("p2", 3_600_000, DOWN)
        await asyncio.gather(a.on_settled([first]), b.on_settled([second]))  # two workers at once
        await a.on_settled([first])  # seen again (a replay after a rebalance): no second update
        member_keys = [k async for k in client_a.scan_iter(match=f"{isolated.topic_prefix}adaptive:{VERSION}:members:*")]
        left = sum([await client_a.hlen(k) for k in member_keys])
        await a.record([_prediction("p3", 7_200_000)], {"p3": {"2%": MEMBERS["p1"]}})  # never settles: its day's hash expires
        (p3_key,) = [k async for k in client_a.scan_iter(match=f"{isolated.topic_prefix}adaptive:{VERSION}:members:*")]
        assert 0 < await client_a.ttl(p3_key) <= isolated.worker.ensemble.members_retain_hours * 3600
        restarted, client_c = await _worker(isolated)
        for client in (client_a, client_b, client_c):
            await client.aclose()
        return restarted.current(VERSION).get("2%"), a.current(VERSION).get("2%"), a.updates + b.updates, left

    served_after_restart, seen_by_a, updates, members_left = asyncio.run(scenario())
    start = np.asarray(COMBINER.weights)
    expected = hedge_update(hedge_update(start, MEMBERS["p1"], UP, 0.5, 0.02), MEMBERS["p2"], DOWN, 0.5, 0.02)
    assert updates == 2 and members_left == 0
    assert served_after_restart is not None
    np.testing.assert_allclose(served_after_restart, expected, atol=1e-12)
    assert not np.allclose(expected, start)
    assert seen_by_a is not None and seen_by_a.sum() == pytest.approx(1.0)


def test_a_strategy_without_one_weight_vector_is_refused(isolated: Settings) -> None:
    with pytest.raises(ValueError, match="needs one of"):
        AdaptiveWeights(isolated).register(VERSION, {"2%": COMBINER.model_copy(update={"strategy": "stacking"})})


def test_a_snapshot_handed_to_a_batch_never_changes_under_it(isolated: Settings) -> None:
    async def scenario() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        weights, client = await _worker(isolated)
        await weights.record([_prediction("p1", 0)], {"p1": {"2%": MEMBERS["p1"]}})
        held = weights.current(VERSION)  # what a batch in the inference thread reads
        await weights.on_settled([_settled("p1", 0, UP)])
        await client.aclose()
        return dict(held), weights.current(VERSION)["2%"], np.asarray(COMBINER.weights)

    held, now, fitted = asyncio.run(scenario())
    assert held == {}  # the batch keeps the fitted weights it started with
    assert not np.allclose(now, fitted)  # while the next batch sees the update
    with pytest.raises(ValueError):
        now[0] = 1.0  # read-only: no reader can change what the others see
