"""The worker's outcome resolver with the in-memory store: registration, settlement order, replays, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from configs.settings import load_settings
from bse_predict.monitoring.outcomes import Settlement
from bse_predict.candles.schema import Candle, ModelRef, Outcome, Prediction, TargetPrediction
from bse_predict.monitoring.outcome_store import MemoryOutcomeStore
from bse_predict.monitoring.resolver import OutcomeResolver

HOUR = 3_600_000
PART = TargetPrediction(p_up=0.5, p_down=0.3, p_none=0.2, direction="up", confidence=0.625, signal="LONG")


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.outcomes: list[Outcome] = []
        self.settled: list[Settlement] = []

    async def publish_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.outcomes += outcomes

    async def on_settled(self, settlements: Sequence[Settlement]) -> None:
        self.settled += settlements


def candle(hour: int, high: float = 100.5, low: float = 99.5) -> Candle:
    return Candle(symbol="BTCUSDT", timeframe="1h", open_time=hour * HOUR, open=100.0, high=high, low=low,
                  close=100.0, volume=1.0)


def prediction(hour: int, version: str = "v1", variant: str = "control") -> Prediction:
    return Prediction(id=f"BTCUSDT|1h|{hour * HOUR}", symbol="BTCUSDT", timeframe="1h", open_time=hour * HOUR,
                      close=100.0, horizon_hours=72, targets={"1%": PART, "2%": PART, "5%": PART},
                      model=ModelRef(name="random_forest", version=version), variant=variant, latency_ms=1.0)


def test_live_and_shadow_settle_once_and_a_replay_adds_nothing() -> None:
    async def run() -> None:
        recorder = Recorder()
        resolver = OutcomeResolver(load_settings(), MemoryOutcomeStore(720 * HOUR), recorder, [recorder])
        live, shadow = [prediction(1)], [prediction(1, "v2", "shadow")]
        assert await resolver.after_publish(live, shadow, [candle(1)]) == []  # its own candle answers nothing
        touched = await resolver.after_publish([], [], [candle(2, high=101.2)])  # +1% touched, 2% and 5% not
        assert {(o.target, o.outcome, o.model.version, o.stream) for o in touched} == {
            ("1%", "up", "v1", "live"), ("1%", "up", "v2", "shadow")}
        assert {o.resolved_at for o in touched} == {3 * HOUR}
        # A crash replay: the same predictions and candles again.
        assert await resolver.after_publish(live, shadow, [candle(1)]) == []
        assert await resolver.after_publish([], [], [candle(2, high=101.2)]) == []
        ended = await resolver.after_publish([], [], [candle(80)])  # past the horizon: none
        assert {(o.target, o.outcome, o.resolved_at) for o in ended} == {("2%", "none", 74 * HOUR), ("5%", "none", 74 * HOUR)}
        assert len(recorder.outcomes) == len(recorder.settled) == 6
        assert resolver.counts == {"outcomes_registered": 6, "outcomes_published": 6}
    asyncio.run(run())


def test_outcomes_stay_pending_until_the_broker_acknowledged_them() -> None:
    async def run() -> None:
        recorder = Recorder(fail=True)
        store = MemoryOutcomeStore(720 * HOUR)
        resolver = OutcomeResolver(load_settings(), store, recorder, [recorder])
        await resolver.after_publish([prediction(1)], [], [candle(1)])
        with pytest.raises(ConnectionError):
            await resolver.after_publish([], [], [candle(2, low=98.9)])
        assert recorder.settled == [] and len((await store.pending([("BTCUSDT", "1h")]))[("BTCUSDT", "1h")]) == 3
        recorder.fail = False
        again = await resolver.after_publish([], [], [candle(2, low=98.9)])  # the redelivered candle
        assert [(o.target, o.outcome) for o in again] == [("1%", "down")]
    asyncio.run(run())
