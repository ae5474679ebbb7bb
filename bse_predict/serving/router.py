"""The worker's model router: which loaded version answers each symbol, with breakers and fallback.

It holds every version the control state names (each loaded and verified
once per process) in an immutable :class:`RoutingTable` that the control loop
swaps in whole, so a batch never sees half a change. :meth:`ModelRouter.serve`
runs in the inference thread: per batch it groups rows by their arm
(:func:`bse_predict.serving.routing.arm_for`), calls each version once behind its circuit
breaker (:mod:`bse_predict.serving.breaker`), sends the rows a failing or open model could
not answer to the fallback version (``degraded``), and runs the shadow
version on every row for ``predictions.shadow``.

When the fallback fails too (or none is set), those rows get no prediction:
nothing stale is reused; they are counted (``unserved``) and logged.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from bse_predict.serving.breaker import BreakerConfig, BreakerState, BreakerStatus, allows, bad_rows, record
from bse_predict.control.state_machine import ControlState
from configs.settings import Settings
from bse_predict.errors import BsePredictError, ManifestError
from bse_predict.features.inputs import BatchInputs
from bse_predict.serving.model_set import ModelOutputs, Predictor, predict_input_outputs
from bse_predict.serving.routing import Arm, arm_for
from bse_predict.candles.schema import RegimeInfo

__all__ = ["RoutingTable", "RowAnswer", "RoutedBatch", "ModelRouter", "MODEL_ERRORS"]

log = logging.getLogger(__name__)

# What a served model may raise on a batch: the runner's ModelError (a BsePredictError) and numpy's
# errors on malformed outputs. Anything else is a bug and crashes.
MODEL_ERRORS: tuple[type[BaseException], ...] = (BsePredictError, ValueError, FloatingPointError)


@dataclass(frozen=True)
class RoutingTable:
    """What is served, with its loaded models; swapped whole when the control state changes."""

    revision: int
    live: Predictor
    arms: tuple[tuple[Arm, Predictor], ...] = ()
    shadow: Predictor | None = None
    fallback: Predictor | None = None

    def models(self) -> list[Predictor]:
        found = [self.live, *(p for _, p in self.arms)]
        found += [p for p in (self.shadow, self.fallback) if p is not None]
        return found

    @property
    def min_history(self) -> int:
        return max(p.min_history for p in self.models())

    def route(self, symbol: str) -> tuple[str, Predictor]:
        """(variant, model) for a symbol: its arm when a split stands, else the live version as "control"."""
        if not self.arms:
            return "control", self.live
        arm = arm_for(symbol, [a for a, _ in self.arms])
        return arm.variant, next(p for a, p in self.arms if a is arm)


@dataclass(frozen=True)
class _RowOutput:
    probabilities: dict[str, np.ndarray]  # target -> float64[3]
    degraded: bool  # the model itself answered degraded (an ensemble dropped a member)
    regime: RegimeInfo | None
    members: dict[str, np.ndarray] | None = None  # an ensemble served member by member: target -> float[M, 3]


@dataclass(frozen=True)
class RowAnswer:
    """One row's probabilities per target and who answered; ``degraded``: a fallback or a degraded ensemble."""

    probabilities: dict[str, np.ndarray]  # target -> float64[3]
    version: str
    model_name: str
    variant: str
    degraded: bool = False
    regime: RegimeInfo | None = None
    members: dict[str, np.ndarray] | None = None
    """Each member's probabilities (target -> float[M, 3]) when the model is an ensemble served member by member."""

    @classmethod
    def of(cls, out: _RowOutput, model: Predictor, variant: str, fallback: bool = False) -> RowAnswer:
        return cls(out.probabilities, model.version, model.model_name, variant, fallback or out.degraded, out.regime,
                   out.members)


def _regime(outputs: ModelOutputs, index: int) -> RegimeInfo | None:
    """The contract's ``regime``: the most probable filtered state and its probability."""
    if outputs.regime_probabilities is None:
        return None
    p = outputs.regime_probabilities[index]
    state = int(np.argmax(p))
    return RegimeInfo(state=outputs.regime_states[state], p=round(float(p[state]), 6))


@dataclass
class RoutedBatch:
    """Everything the router decided for one batch; built by :meth:`ModelRouter.serve` alone."""

    answers: list[RowAnswer | None]  # None: no model could answer this row
    shadow: list[RowAnswer | None] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    tripped: list[tuple[str, str]] = field(default_factory=list)
    """(version, reason) of each breaker this batch opened."""
    breaker_changes: list[tuple[str, BreakerStatus, str | None]] = field(default_factory=list)
    """(version, new status, why it opened or None) of each change of a breaker in this batch, in order."""


class ModelRouter:
    """See the module docstring. ``loader(version)`` loads and verifies one version (blocking)."""

    def __init__(self, initial: Predictor, loader: Callable[[str], Predictor], breaker: BreakerConfig,
                 clock_s: Callable[[], float] = time.monotonic) -> None:
        self._loader = loader
        self._loaded: dict[str, Predictor] = {initial.version: initial}
        self._breaker_config = breaker
        self._breakers: Mapping[str, BreakerState] = MappingProxyType({})  # replaced whole, never changed in place
        self._clock_s = clock_s
        self.table = RoutingTable(revision=0, live=initial)
        self.default_live = initial.version

    @classmethod
    def alone(cls, predictor: Predictor, settings: Settings) -> ModelRouter:
        """A router serving one predictor and nothing else (no control plane)."""
        def no_loading(version: str) -> Predictor:
            raise ManifestError(f"this router serves {predictor.version} alone; it cannot load {version}")

        return cls(predictor, no_loading, settings.control.breaker)

    @property
    def min_history(self) -> int:
        return self.table.min_history

    def breaker(self, version: str) -> BreakerState:
        return self._breakers.get(version, BreakerState())

    def load(self, version: str) -> Predictor:
        """The loaded version, loading (and verifying) it on first use; raises what the loader raises."""
        if version not in self._loaded:
            self._loaded[version] = self._loader(version)
        return self._loaded[version]

    @property
    def loaded_versions(self) -> frozenset[str]:
        return frozenset(self._loaded)

    def table_for(self, state: ControlState) -> RoutingTable:
        """The table a control state asks for, loading what is missing (blocking: run it off the loop).
        Versions the state no longer names are unloaded (the start-up version stays: it serves when the
        state names no live version); the table in service keeps its own until it is swapped."""
        live = self.load(state.live) if state.live is not None else self._loaded[self.default_live]
        arms = tuple((arm, self.load(arm.version)) for arm in state.arms)
        shadow = self.load(state.shadow) if state.shadow is not None else None
        fallback = self.load(state.fallback) if state.fallback is not None else None
        table = RoutingTable(state.revision, live, arms, shadow, fallback)
        named = {model.version for model in table.models()} | {self.default_live}
        self._loaded = {version: model for version, model in self._loaded.items() if version in named}
        return table

    # -- the inference thread ---------------------------------------------------------------

    def serve(self, symbols: Sequence[str], inputs: BatchInputs) -> RoutedBatch:
        """Each row's answer from its arm (or the fallback), the shadow's answers, and what it counted and
        tripped; ``inputs`` is built once for the batch and read by every model called."""
        table = self.table  # one table for the whole batch
        batch = RoutedBatch(answers=[None] * len(symbols))
        groups: dict[str, list[int]] = {}
        models: dict[str, Predictor] = {}
        for row, symbol in enumerate(symbols):
            variant, model = table.route(symbol)
            groups.setdefault(variant, []).append(row)
            models[variant] = model
        needs_fallback: dict[int, str] = {}  # row -> the variant whose model could not answer it
        for variant, rows in groups.items():
            model = models[variant]
            answered = self._call(model, rows, inputs, batch, force=not self._can_divert(table, model))
            for row in rows:
                if row in answered:
                    batch.answers[row] = RowAnswer.of(answered[row], model, variant)
                else:
                    needs_fallback[row] = variant
        if needs_fallback:
            self._fall_back(table, needs_fallback, inputs, batch)
        if table.shadow is not None:
            shadow = table.shadow
            answered = self._call(shadow, list(range(len(symbols))), inputs, batch)
            batch.shadow = [RowAnswer.of(answered[r], shadow, "shadow") if r in answered else None
                            for r in range(len(symbols))]
        return batch

    def _fall_back(self, table: RoutingTable, variants: dict[int, str], inputs: BatchInputs, batch: RoutedBatch) -> None:
        """The fallback answers the rows in ``variants`` (degraded; the variant stays the symbol's arm)."""
        fallback = table.fallback
        rows = sorted(variants)
        answered: dict[int, _RowOutput] = {}
        if fallback is not None:
            answered = self._call(fallback, rows, inputs, batch)
        for row in rows:
            if row in answered:
                assert fallback is not None
                batch.answers[row] = RowAnswer.of(answered[row], fallback, variants[row], fallback=True)
                batch.counts["degraded"] += 1
            else:
                batch.counts["unserved"] += 1
        if len(answered) < len(rows):
            log.warning("%d rows unanswered: the served model failed and %s; nothing published for them",
                        len(rows) - len(answered), "the fallback failed too" if fallback else "no fallback is set")

    def _can_divert(self, table: RoutingTable, model: Predictor) -> bool:
        """Whether an open breaker of ``model`` may send its rows elsewhere: to a fallback that is another
        version and whose own breaker lets it answer. Without one, the model is still asked: a slow answer
        beats none, and rows it answers badly are dropped anyway."""
        fallback = table.fallback
        return (fallback is not None and fallback.version != model.version
                and allows(self.breaker(fallback.version), self._clock_s(), self._breaker_config))

    def _call(self, model: Predictor, rows: list[int], inputs: BatchInputs, batch: RoutedBatch,
              force: bool = False) -> dict[int, _RowOutput]:
        """{row: output} for the rows this model answered validly; breaker updated.
        An open breaker skips the call unless ``force``."""
        counts = batch.counts
        version = model.version
        now_s = self._clock_s()
        state = self.breaker(version)
        if not force and not allows(state, now_s, self._breaker_config):
            counts[f"breaker_open.{version}"] += 1
            return {}
        started = time.perf_counter()
        try:
            outputs = predict_input_outputs(model, inputs.rows(model.input_kinds, rows))
        except MODEL_ERRORS as error:
            self._record(version, state, True, now_s, f"error: {type(error).__name__}: {error}"[:200], batch)
            counts[f"model_error.{version}"] += 1
            return {}
        latency_ms = (time.perf_counter() - started) * 1000.0
        bad = bad_rows(outputs.probabilities, len(rows))
        slow = latency_ms > self._breaker_config.latency_budget_ms
        reason = (f"{int(bad.sum())} of {len(rows)} rows NaN or out of range" if bad.any()
                  else f"latency {latency_ms:.0f} ms over the {self._breaker_config.latency_budget_ms:.0f} ms budget")
        self._record(version, state, bool(bad.any()) or slow, now_s, reason, batch)
        if bad.any():
            counts[f"bad_outputs.{version}"] += int(bad.sum())
        if slow:
            counts[f"slow.{version}"] += 1
        degraded = np.asarray(outputs.degraded, dtype=bool)
        members = outputs.member_probabilities
        return {row: _RowOutput({t: p[i] for t, p in outputs.probabilities.items()}, bool(degraded[i]),
                                _regime(outputs, i), {t: m[:, i] for t, m in members.items()} if members else None)
                for i, row in enumerate(rows) if not bad[i]}

    def _record(self, version: str, before: BreakerState, failed: bool, now_s: float, reason: str,
                batch: RoutedBatch) -> None:
        after = record(before, failed, now_s, self._breaker_config, reason if failed else None)
        if after.status != before.status:
            log.warning("breaker of %s: %s -> %s%s", version, before.status, after.status,
                        f" ({reason})" if after.status == "open" else "")
            if after.status == "open" and before.status == "closed":
                batch.tripped.append((version, reason))
        if after.status != before.status or after.opened_at_s != before.opened_at_s:  # also open -> failed probe -> open
            batch.breaker_changes.append((version, after.status, reason if after.status == "open" else None))
        self._breakers = MappingProxyType({**self._breakers, version: after})
