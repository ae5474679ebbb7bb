"""Inference alone, timed in process for ``bse-predict bench`` and ``benchmarks/inference_per_tick.py``.

Every model set of a measurement is called in turn, round after round, and each
one's median is taken over the rounds: on a shared machine the neighbours' load
then hits every model set alike, so the ratios hold even when the absolute
figures move.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.ensembles.member_runner import ServedEnsemble
from bse_predict.features.inputs import build_inputs
from bse_predict.serving.manifest import load_manifest
from bse_predict.serving.onnx_runner import ServedModelSet

__all__ = ["median_ms", "interleaved_median_ms", "inference_per_tick", "forest_ms", "MEMBER_PREFIX", "ROUNDS"]

MEMBER_PREFIX = "member "
"""Keys of the ensemble's members alone in :func:`inference_per_tick`'s answer."""

ROUNDS = 60


def median_ms(call: Callable[[], object], repeats: int = 30) -> float:
    """Median milliseconds of ``repeats`` calls after one untimed call."""
    return interleaved_median_ms({"call": call}, repeats)["call"]


def interleaved_median_ms(calls: dict[str, Callable[[], object]], rounds: int = ROUNDS,
                          clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median milliseconds of each call over ``rounds`` rounds, every call once a round in turn
    (one untimed round first), read on ``clock`` (wall time; ``time.process_time`` for the CPU
    time of every thread of this process, which a loaded machine moves much less)."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = clock()
            call()
            times[name].append((clock() - started) * 1000)
    return {name: round(float(np.median(spent)), 3) for name, spent in times.items()}


def inference_per_tick(settings: Settings, version: str, ensemble_version: str | None,
                       series: Sequence[CandleSeries], history: int, rounds: int = ROUNDS,
                       clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median milliseconds of one tick's inference (every symbol in one batch, windows of the last
    ``history`` candles), all timed in turn: ``onnx``, the served model of ``version`` as one graph
    per target; ``random_forest``, that version's RandomForest alone when it has one beside another
    served model; ``ensemble``, the served model of ``ensemble_version`` (``version`` when not given
    and that serves an ensemble) as one graph per target; ``ensemble_members``, the same served member
    by member (:class:`bse_predict.ensembles.member_runner.ServedEnsemble`, on ``worker.ensemble.threads``
    threads), and ``member <name>`` each member alone (all its targets, one after another)."""
    windows = np.stack([s.ohlcv[-history:] for s in series])
    open_times = np.array([int(s.open_time_ms[-1]) for s in series], dtype=np.int64)
    kinds: set[str] = set()
    calls: dict[str, Callable[[], object]] = {}
    inputs: dict[str, np.ndarray] = {}
    manifest = load_manifest(settings.models_dir / version, settings.model_signing_secret)
    ensemble_version = ensemble_version or (version if _serves_ensemble(settings, version) else None)
    model_sets: list[tuple[str, ServedModelSet | ServedEnsemble]] = [("onnx", _load(settings, version))]
    if manifest.served_model != "random_forest" and "random_forest" in {m.name for m in manifest.models}:
        model_sets.append(("random_forest", _load(settings, version, "random_forest")))
    members: ServedEnsemble | None = None
    if ensemble_version is not None:
        model_sets.append(("ensemble", _load(settings, ensemble_version)))
        if _serves_ensemble(settings, ensemble_version):
            members = ServedEnsemble.load(settings.models_dir / ensemble_version, settings.worker.ensemble,
                                          signing_key=settings.model_signing_secret)
            model_sets.append(("ensemble_members", members))
            model_sets += [(f"{MEMBER_PREFIX}{m.model_name}", m) for m in members.member_sets]
    for _, model_set in model_sets:
        kinds |= set(model_set.input_kinds)
    inputs = build_inputs(kinds, windows, open_times)
    for name, model_set in model_sets:
        feed = {k: inputs[k] for k in model_set.input_kinds}
        calls[name] = lambda m=model_set, f=feed: m.predict_outputs(f)  # type: ignore[misc]
    try:
        return interleaved_median_ms(calls, rounds, clock)
    finally:
        if members is not None:
            members.close()


def forest_ms(times: dict[str, float]) -> float | None:
    """The RandomForest alone in :func:`inference_per_tick`'s answer: the version's own
    ``random_forest``, else the ensemble's forest member, else the served model (a forest version)."""
    for key in ("random_forest", f"{MEMBER_PREFIX}ensemble_member_random_forest", "onnx"):
        if key in times:
            return times[key]
    return None


def _load(settings: Settings, version: str, model_name: str | None = None) -> ServedModelSet:
    return ServedModelSet.load(settings.models_dir / version, model_name=model_name,
                               signing_key=settings.model_signing_secret)


def _serves_ensemble(settings: Settings, version: str) -> bool:
    """Whether the version's served model records a member combination for every target."""
    manifest = load_manifest(settings.models_dir / version, settings.model_signing_secret)
    return all(entry.combiner is not None for entry in manifest.entries_for(manifest.served_model).values())
