"""A circuit breaker per served model, as pure functions over a frozen state.

Each call of a model on a batch is one *outcome*: a failure when it raised,
answered a NaN or out-of-range probability, or took longer than the latency
budget. Over the last ``window_calls`` outcomes, ``failures_to_open`` failures
open the breaker: the model is not called, the fallback answers. After
``open_s`` seconds it turns half-open: the next calls are probes; a failed
probe opens it again, ``probes_to_close`` good probes in a row close it.

The time (seconds, any monotonic origin) is passed in: nothing here reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from configs.settings import BreakerConfig

__all__ = ["BreakerConfig", "BreakerState", "BreakerStatus", "allows", "record", "bad_rows"]

BreakerStatus = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerState:
    status: BreakerStatus = "closed"
    recent: tuple[bool, ...] = ()  # True = failed, newest last, at most window_calls long
    opened_at_s: float | None = None
    good_probes: int = 0
    reason: str | None = None  # why it last opened


def allows(state: BreakerState, now_s: float, config: BreakerConfig) -> bool:
    """Whether the model may be called now (closed, half-open, or open long enough to probe)."""
    if state.status != "open":
        return True
    assert state.opened_at_s is not None
    return now_s - state.opened_at_s >= config.open_s


def record(state: BreakerState, failed: bool, now_s: float, config: BreakerConfig, reason: str | None = None) -> BreakerState:
    """The state after one call's outcome."""
    if state.status == "open":
        if not allows(state, now_s, config):
            return state  # a call that started before it opened: already counted
        state = replace(state, status="half_open", good_probes=0)
    if state.status == "half_open":
        if failed:
            return BreakerState("open", (), now_s, 0, reason)
        if state.good_probes + 1 >= config.probes_to_close:
            return BreakerState()
        return replace(state, good_probes=state.good_probes + 1)
    recent = (*state.recent, failed)[-config.window_calls:]
    if sum(recent) >= config.failures_to_open:
        return BreakerState("open", (), now_s, 0, reason)
    return replace(state, recent=recent)


def bad_rows(probabilities: dict[str, np.ndarray], rows: int) -> np.ndarray:
    """bool[rows]: rows where any target's probabilities are NaN, infinite, outside [0, 1]
    or do not sum to 1 (within 1e-3), or where a target's output has the wrong shape."""
    bad = np.zeros(rows, dtype=bool)
    for p in probabilities.values():
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (rows, 3):
            return np.ones(rows, dtype=bool)
        with np.errstate(invalid="ignore"):
            bad |= ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1) | (p > 1).any(axis=1) | (np.abs(p.sum(axis=1) - 1) > 1e-3)
    return bad
