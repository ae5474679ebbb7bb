"""Inference per tick with each model's targets merged into one session (as served) against one session per
target (as served before), and the ensemble member by member against the RandomForest either way.

Both ways are loaded in this one process and called in turn, round after round, on one tick of
real candles (the bench's fleet, every symbol in one batch). Prints one JSON object of medians
(ms) of wall time and of this process's CPU time. Run from the repository root:

    .venv/bin/python benchmarks/target_merge.py --version V [--symbols 100] [--rounds 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import numpy as np

from configs.settings import load_settings
from bse_predict.cli.stream import DEFAULT_DATA
from bse_predict.ensembles.member_runner import ServedEnsemble
from bse_predict.features.inputs import build_inputs
from bse_predict.serving import onnx_runner
from bse_predict.serving.manifest import load_manifest, newest_version
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.stream.bench_inference import ROUNDS, interleaved_median_ms
from bse_predict.stream.bench_load import bench_symbols


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=None, help="a version serving an ensemble with a random_forest model")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--data", type=Path, action="append", default=None)
    args = parser.parse_args()
    settings = load_settings()
    serving = settings.worker.ensemble.model_copy(update={"member_timeout_ms": 60_000.0})  # every member to its end
    version = args.version or newest_version(settings.models_dir)
    folder = settings.models_dir / version
    history = load_manifest(folder).min_history
    series = bench_symbols(args.data or DEFAULT_DATA, args.symbols, history)
    sets: dict[str, ServedModelSet | ServedEnsemble] = {}
    for label in ("per target", "merged"):
        with mock.patch.object(onnx_runner, "merge_targets", onnx_runner.merge_targets if label == "merged"
                               else lambda models: None):
            sets[f"random_forest, {label}"] = ServedModelSet.load(folder, model_name="random_forest")
            ensemble = ServedEnsemble.load(folder, serving)
        sets[f"ensemble_members, {label}"] = ensemble
        sets.update({f"{m.model_name}, {label}": m for m in ensemble.member_sets})
    windows = np.stack([s.ohlcv[-history:] for s in series])
    open_times = np.array([int(s.open_time_ms[-1]) for s in series], dtype=np.int64)
    inputs = build_inputs({k for s in sets.values() for k in s.input_kinds}, windows, open_times)
    calls = {name: (lambda s=s: s.predict_outputs({k: inputs[k] for k in s.input_kinds})) for name, s in sets.items()}
    report: dict[str, object] = {"version": version, "symbols": args.symbols, "rounds": args.rounds}
    for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        times = interleaved_median_ms(calls, args.rounds, clock)
        report[f"{clock_name}_ms"] = times
        report[f"{clock_name}_ensemble_over_random_forest"] = {
            label: round(times[f"ensemble_members, {label}"] / times[f"random_forest, {label}"], 2)
            for label in ("per target", "merged")}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
