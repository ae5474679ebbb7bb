"""The worker's model router with small real predictors: arms, shadow, breakers, fallback, no stale reuse."""

from __future__ import annotations

import numpy as np
import pytest

from configs.settings import BreakerConfig
from bse_predict.control.state_machine import ControlState
from bse_predict.errors import ManifestError
from bse_predict.features import inputs as inputs_module
from bse_predict.features.definitions import LOOKBACK_CANDLES
from bse_predict.features.inputs import BatchInputs
from bse_predict.serving.routing import Arm, arm_for, normalised
from bse_predict.serving.router import ModelRouter

TARGETS = ("1%", "2%", "5%")
SYMBOLS = [f"S{i}USDT" for i in range(40)]


class Constant:
    """A predictor answering fixed rows, or NaN rows, or raising, as told."""

    input_kinds = ("features",)
    min_history = LOOKBACK_CANDLES
    targets = TARGETS
    model_name = "constant"

    def __init__(self, version: str, p_up: float = 0.5, mode: str = "ok") -> None:
        self.version = version
        self.p_up = p_up
        self.mode = mode
        self.calls = 0

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        rows = len(inputs["features"])
        if self.mode == "error":
            raise ValueError("broken graph")
        value = [np.nan] * 3 if self.mode == "nan" else [self.p_up, 0.9 - self.p_up, 0.1]
        return {t: np.tile(value, (rows, 1)) for t in TARGETS}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _router(*models: Constant, breaker: BreakerConfig = BreakerConfig(failures_to_open=2, open_s=5)) -> tuple[ModelRouter, Clock]:
    by_version = {m.version: m for m in models}

    def loader(version: str) -> Constant:
        if version not in by_version:
            raise ManifestError(f"unknown version {version}")
        return by_version[version]

    clock = Clock()
    return ModelRouter(models[0], loader, breaker, clock), clock


def _inputs(rows: int) -> BatchInputs:
    return BatchInputs(np.ones((rows, LOOKBACK_CANDLES, 5)), np.zeros(rows, dtype=np.int64))


def _serve(router: ModelRouter, symbols: list[str] = SYMBOLS):
    return router.serve(symbols, _inputs(len(symbols)))


def test_arms_follow_the_sticky_hash_and_shadow_stays_apart() -> None:
    live, other, shadow = Constant("v1", 0.5), Constant("v2", 0.6), Constant("v3", 0.7)
    router, _ = _router(live, other, shadow)
    arms = normalised([Arm("v1", "v1", 0.5), Arm("v2", "v2", 0.5)])
    router.table = router.table_for(ControlState(revision=1, live="v1", arms=arms, shadow="v3"))
    batch = _serve(router)
    for symbol, answer in zip(SYMBOLS, batch.answers, strict=True):
        assert answer is not None and answer.variant == arm_for(symbol, arms).version == answer.version
        assert answer.version != "v3" and not answer.degraded
    assert all(a is not None and (a.version, a.variant) == ("v3", "shadow") for a in batch.shadow)
    assert {a.version for a in batch.answers if a} == {"v1", "v2"}


def test_the_batch_features_are_computed_once_for_every_arm_the_shadow_and_the_fallback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, ...]] = []
    build = inputs_module.build_inputs

    def counting(kinds, windows, open_time_ms):  # type: ignore[no-untyped-def]
        built.append(tuple(kinds))
        return build(kinds, windows, open_time_ms)

    monkeypatch.setattr(inputs_module, "build_inputs", counting)
    broken, other, shadow, fallback = Constant("v1", mode="error"), Constant("v2"), Constant("v3"), Constant("v4")
    router, _ = _router(broken, other, shadow, fallback)
    arms = normalised([Arm("v1", "v1", 0.5), Arm("v2", "v2", 0.5)])
    router.table = router.table_for(ControlState(revision=1, live="v1", arms=arms, shadow="v3", fallback="v4"))
    batch = _serve(router)
    assert {a.version for a in batch.answers if a} == {"v2", "v4"} and all(batch.shadow)
    assert [other.calls, shadow.calls, fallback.calls] == [1, 1, 1]
    assert built == [("features",)]


def test_without_a_split_every_symbol_is_control() -> None:
    router, _ = _router(Constant("v1"))
    batch = _serve(router)
    assert {(a.version, a.variant, a.degraded) for a in batch.answers if a} == {("v1", "control", False)}
    assert batch.shadow == []


def test_nan_outputs_go_to_the_fallback_degraded_and_the_breaker_opens_then_probes_and_closes() -> None:
    broken, fallback = Constant("v2", mode="nan"), Constant("v1")
    router, clock = _router(broken, fallback)
    router.table = router.table_for(ControlState(revision=1, live="v2", fallback="v1"))
    tripped, changes = [], []
    for _ in range(2):
        batch = _serve(router)
        assert {(a.version, a.variant, a.degraded) for a in batch.answers if a} == {("v1", "control", True)}
        tripped += batch.tripped
        changes += batch.breaker_changes
    assert router.breaker("v2").status == "open" and tripped == [("v2", router.breaker("v2").reason)]
    assert changes == [("v2", "open", router.breaker("v2").reason)]  # reported on control.events by the plane
    calls = broken.calls
    _serve(router)
    assert broken.calls == calls, "an open breaker with a fallback at hand does not call the model"
    broken.mode = "ok"  # the model recovers
    clock.now = 6.0
    probed = _serve(router)
    assert all(a and not a.degraded and a.version == "v2" for a in probed.answers)
    assert router.breaker("v2").status == "half_open" and probed.breaker_changes == [("v2", "half_open", None)]
    assert _serve(router).breaker_changes == [("v2", "closed", None)]
    assert router.breaker("v2").status == "closed"


def test_errors_count_as_failures_too() -> None:
    router, _ = _router(Constant("v2", mode="error"), Constant("v1"))
    router.table = router.table_for(ControlState(revision=1, live="v2", fallback="v1"))
    batch = _serve(router)
    assert all(a and a.degraded for a in batch.answers) and batch.counts["model_error.v2"] == 1


def test_when_the_fallback_fails_too_nothing_is_published_and_it_is_counted() -> None:
    router, _ = _router(Constant("v2", mode="nan"), Constant("v1", mode="error"))
    router.table = router.table_for(ControlState(revision=1, live="v2", fallback="v1"))
    batch = _serve(router)
    assert batch.answers == [None] * len(SYMBOLS) and batch.counts["unserved"] == len(SYMBOLS)


def test_slow_answers_are_used_but_trip_the_breaker() -> None:
    live, fallback = Constant("v2"), Constant("v1")
    router, clock = _router(live, fallback, breaker=BreakerConfig(failures_to_open=2, latency_budget_ms=1e-6, open_s=5))
    router.table = router.table_for(ControlState(revision=1, live="v2", fallback="v1"))
    first = _serve(router)
    assert all(a and a.version == "v2" and not a.degraded for a in first.answers)
    _serve(router)
    assert router.breaker("v2").status == "open"
    assert all(a and a.version == "v1" and a.degraded for a in _serve(router).answers)


def test_with_nowhere_to_divert_an_open_model_is_still_asked() -> None:
    live = Constant("v1", mode="nan")
    router, _ = _router(live)
    for _ in range(3):
        _serve(router)
    assert router.breaker("v1").status == "open"
    live.mode = "ok"
    assert all(a and a.version == "v1" for a in _serve(router).answers)


def test_an_unknown_version_in_the_state_raises_and_the_table_stays() -> None:
    router, _ = _router(Constant("v1"))
    before = router.table
    with pytest.raises(ManifestError):
        router.table_for(ControlState(revision=1, live="v9"))
    assert router.table is before


def test_versions_the_state_no_longer_names_are_unloaded() -> None:
    router, _ = _router(Constant("v0"), Constant("v1"), Constant("v2"), Constant("v3"))
    router.table = router.table_for(ControlState(revision=1, live="v1", shadow="v2"))
    assert router.loaded_versions == {"v0", "v1", "v2"}
    router.table = router.table_for(ControlState(revision=2, live="v3"))
    assert router.loaded_versions == {"v0", "v3"}  # v0 served at start-up and stays
