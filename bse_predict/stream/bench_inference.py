"""Inference alone, timed in process for ``bse-predict bench`` and ``benchmarks/inference.py``."""

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

__all__ = ["median_ms", "inference_per_tick"]


def median_ms(call: Callable[[], object], repeats: int = 30) -> float:
    """Median milliseconds of ``repeats`` calls after one untimed call."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(times)), 3)


def inference_per_tick(settings: Settings, version: str, ensemble_version: str | None,
                       series: Sequence[CandleSeries], history: int) -> dict[str, float]:
    """Median milliseconds of one tick's inference (every symbol in one batch, windows of the last
    ``history`` candles): the served model set of each version as one graph per target, and an
    ensemble also member by member (:class:`bse_predict.ensembles.member_runner.ServedEnsemble`, on
    ``worker.ensemble.threads`` threads)."""
    windows = np.stack([s.ohlcv[-history:] for s in series])
    open_times = np.array([int(s.open_time_ms[-1]) for s in series], dtype=np.int64)
    out: dict[str, float] = {}
    for name, v in (("onnx", version), ("ensemble", ensemble_version)):
        if v is None:
            continue
        served = ServedModelSet.load(settings.models_dir / v, signing_key=settings.model_signing_secret)
        inputs = build_inputs(served.input_kinds, windows, open_times)
        out[name] = median_ms(lambda: served.predict_outputs(inputs))
        manifest = load_manifest(settings.models_dir / v, settings.model_signing_secret)
        if name == "ensemble" and all(e.combiner for e in manifest.entries_for(served.model_name).values()):
            members = ServedEnsemble.load(settings.models_dir / v, settings.worker.ensemble,
                                           signing_key=settings.model_signing_secret)
            out["ensemble_members"] = median_ms(lambda: members.predict_outputs(inputs))
            members.close()
    return out
