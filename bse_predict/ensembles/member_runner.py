"""Serve an ensemble member by member: each member's own ONNX entry side by side, with a deadline.

The other way to serve an ensemble than its one graph per target
(:mod:`bse_predict.ensembles.graph`): every member entry named by the ensemble's
:class:`~bse_predict.serving.manifest.CombinerRecord` is loaded as its own
:class:`~bse_predict.serving.onnx_runner.ServedModelSet` (all targets), the members run at
once on a thread pool (onnxruntime releases the GIL while it computes), and
the combination is :func:`bse_predict.ensembles.combiners.combine`, the trainer's own numpy
arithmetic. What this mode can do that one graph cannot:

- **timeouts**: a member that has not answered ``member_timeout_ms`` after the
  call started is told to stop (``RunOptions.terminate``) and dropped for this
  call; so is a member still busy with an earlier call (it is never queued
  behind itself). The other members are renormalised and the rows marked
  ``degraded``, exactly as for a member that raised or answered NaN;
- **live weights**: a :class:`LiveWeights` source may replace each target's
  fitted weight vector (adaptive re-weighting from the outcomes stream,
  :mod:`bse_predict.ensembles.adaptive_weights`); with one, the member probabilities of every row come
  back in :attr:`ModelOutputs.member_probabilities` for that re-weighting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import SecretStr

from configs.settings import EnsembleServingConfig
from bse_predict.ensembles.combiners import combine
from bse_predict.errors import ManifestError
from bse_predict.serving.manifest import CombinerRecord, Manifest, load_manifest
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.serving.model_set import ManifestModelSet, ModelOutputs

__all__ = ["ServedEnsemble", "LiveWeights", "combiners_of", "load_model_set"]

log = logging.getLogger(__name__)

LiveWeights = Callable[[str], Mapping[str, np.ndarray]]
"""version -> {target: the weight vector to combine with now}, read once per batch (a target not in it
combines with its fitted weights)."""


def combiners_of(manifest: Manifest, model_name: str) -> dict[str, CombinerRecord]:
    """The ensemble entry's combination per target; a :class:`ManifestError` if it has none."""
    combiners = {target: entry.combiner for target, entry in manifest.entries_for(model_name).items()}
    missing = sorted(t for t, c in combiners.items() if c is None)
    if missing:
        raise ManifestError(f"{model_name} of version {manifest.version} records no member combination for "
                            f"targets {missing}: it can only be served as one graph")
    return {t: c for t, c in combiners.items() if c is not None}


@dataclass
class _Member:
    name: str
    model_set: ServedModelSet
    in_flight: Future[ModelOutputs] | None = None
    run_options: ort.RunOptions = field(default_factory=ort.RunOptions)
    seconds: float = float("inf")
    """A moving average of its call time; unknown at first, so it starts first."""

    def run(self, feed: dict[str, np.ndarray], run_options: ort.RunOptions) -> ModelOutputs:
        started = time.perf_counter()
        answer = self.model_set.predict_outputs(feed, run_options)
        took = time.perf_counter() - started
        self.seconds = took if self.seconds == float("inf") else 0.8 * self.seconds + 0.2 * took
        return answer


class ServedEnsemble(ManifestModelSet):
    """An ensemble entry of a version, served member by member (see the module docstring)."""

    def __init__(self, manifest: Manifest, model_name: str, members: dict[str, ServedModelSet],
                 combiners: dict[str, CombinerRecord], config: EnsembleServingConfig,
                 live_weights: LiveWeights | None = None) -> None:
        super().__init__(manifest, model_name)
        self._members = [_Member(name, members[name]) for name in next(iter(combiners.values())).members]
        self._combiners = combiners
        self._specs = {target: c.spec() for target, c in combiners.items()}
        self._config = config
        self._live_weights = live_weights
        self._pool = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="ensemble-member")
        self._lock = threading.Lock()
        self.failures: Counter[str] = Counter()
        """Calls a member was dropped from, by ``member:reason`` (timeout, busy, error)."""

    @classmethod
    def load(cls, version_dir: Path, config: EnsembleServingConfig, model_name: str | None = None,
             live_weights: LiveWeights | None = None, providers: list[str] | None = None,
             signing_key: SecretStr | None = None) -> ServedEnsemble:
        manifest = load_manifest(version_dir, signing_key)
        name = model_name or manifest.served_model
        combiners = combiners_of(manifest, name)
        member_names = {c.members for c in combiners.values()}
        if len(member_names) != 1:
            raise ManifestError(f"{name} combines different members per target: {sorted(member_names)}")
        members = {m: ServedModelSet.load(version_dir, providers=providers, model_name=m, signing_key=signing_key)
                   for m in next(iter(member_names))}
        return cls(manifest, name, members, combiners, config, live_weights)

    # ------------------------------------------------------------ the Predictor interface
    # version and model_name: ManifestModelSet
    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self._combiners)

    @property
    def combiners(self) -> dict[str, CombinerRecord]:
        return dict(self._combiners)

    @property
    def input_kinds(self) -> tuple[str, ...]:
        return tuple(sorted({k for m in self._members for k in m.model_set.input_kinds}))

    @property
    def min_history(self) -> int:
        return max(m.model_set.min_history for m in self._members)

    @property
    def member_sets(self) -> tuple[ServedModelSet, ...]:
        """Each member's own model set, in the combination's order."""
        return tuple(m.model_set for m in self._members)

    def providers(self) -> dict[str, str]:
        return {f"{m.name} {t}": p for m in self._members for t, p in m.model_set.providers().items()}

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 16, 64, 256)) -> None:
        for member in self._members:
            member.model_set.warm_up(batch_sizes)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.predict_outputs(inputs).probabilities

    def predict_outputs(self, inputs: dict[str, np.ndarray]) -> ModelOutputs:
        rows = len(next(iter(inputs.values())))
        answers = self._run_members(inputs)
        member_probs = {target: np.stack([self._probabilities(a, target, rows) for a in answers])
                        for target in self.targets}
        regime_member = self._regime_member(answers)
        unknown = np.full((rows, 1), np.nan)  # without its regime member, regime weights fall back to the global ones
        probabilities, degraded, regimes = {}, np.zeros(rows, dtype=bool), {}
        live_weights = self._live_weights(self.version) if self._live_weights else {}
        for target, probs in member_probs.items():
            regimes[target] = regime_member.target_regimes.get(target, unknown) if regime_member else unknown
            probabilities[target], bad = combine(self._specs[target], probs, regimes[target], live_weights.get(target))
            degraded |= bad
        states = regime_member.regime_states if regime_member else ()
        regime = regime_member.regime_probabilities if regime_member else None
        # the members' rows only travel on when live re-weighting needs them (each row is sliced downstream)
        return ModelOutputs(probabilities, degraded, states, regime, regimes if regime_member else {},
                            member_probs if self._live_weights is not None else None)

    # ------------------------------------------------------------ running the members
    def _run_members(self, inputs: dict[str, np.ndarray]) -> list[ModelOutputs | None]:
        """Every member's answer, or None where it was busy, raised or missed the deadline."""
        started: list[tuple[_Member, Future[ModelOutputs]]] = []
        answers: dict[str, ModelOutputs | None] = {}
        with self._lock:  # one call at a time decides what is busy
            # the slowest first: on two threads that ends the call about 10 % sooner than member order
            for member in sorted(self._members, key=lambda m: m.seconds, reverse=True):
                if member.in_flight is not None and not member.in_flight.done():
                    self._dropped(member.name, "busy")
                    answers[member.name] = None
                    continue
                member.run_options = ort.RunOptions()
                feed = {k: inputs[k] for k in member.model_set.input_kinds}
                member.in_flight = self._pool.submit(member.run, feed, member.run_options)
                started.append((member, member.in_flight))
        _, late = wait([f for _, f in started], timeout=self._config.member_timeout_ms / 1000.0)
        for member, future in started:
            if future in late:
                member.run_options.terminate = True  # it stops at its next node; its answer is not waited for
                self._dropped(member.name, "timeout")
                answers[member.name] = None
                continue
            error = future.exception()
            if error is not None:
                self._dropped(member.name, "error", error)
                answers[member.name] = None
            else:
                answers[member.name] = future.result()
        return [answers[m.name] for m in self._members]

    def _dropped(self, member: str, reason: str, error: BaseException | None = None) -> None:
        key = f"{member}:{reason}"
        self.failures[key] += 1
        if self.failures[key] in (1, 10, 100) or self.failures[key] % 1000 == 0:
            log.warning("ensemble %s %s: member %s dropped (%s, %d times so far)%s", self.version, self._model_name,
                        member, reason, self.failures[key], f": {error}" if error else "")

    @staticmethod
    def _probabilities(answer: ModelOutputs | None, target: str, rows: int) -> np.ndarray:
        if answer is None:
            return np.full((rows, 3), np.nan)
        return answer.probabilities[target]

    def _regime_member(self, answers: list[ModelOutputs | None]) -> ModelOutputs | None:
        """The answer of the member whose filtered regime picks the weights, or with other strategies of the
        first member that has a regime (the prediction reports it, as the one graph does); None if it was
        dropped."""
        name = next((c.regime_member for c in self._combiners.values() if c.regime_member), None)
        for member, answer in zip(self._members, answers, strict=True):
            if (name is None or member.name == name) and answer is not None \
                    and answer.regime_probabilities is not None:
                return answer
        return None

def load_model_set(version_dir: Path, config: EnsembleServingConfig, model_name: str | None = None,
                   live_weights: LiveWeights | None = None,
                   signing_key: SecretStr | None = None) -> ServedModelSet | ServedEnsemble:
    """What the worker (and the backtest, to run the worker's code) serves for one model of a
    version: an ensemble with a recorded combination member by member in ``members`` mode, any
    other model (and every model in ``graph`` mode) as its one graph per target. ``signing_key``
    (``Settings.model_signing_secret``): the manifest must be signed under it."""
    if config.mode == "members":
        manifest = load_manifest(version_dir, signing_key)
        entries = manifest.entries_for(model_name or manifest.served_model)
        if all(entry.combiner is not None for entry in entries.values()):
            return ServedEnsemble.load(version_dir, config, model_name, live_weights, signing_key=signing_key)
    return ServedModelSet.load(version_dir, intra_op_threads=1, model_name=model_name, signing_key=signing_key)
