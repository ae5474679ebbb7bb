"""Inference per tick of a served ensemble, member by member, against its RandomForest alone.

One tick = one window per symbol (real candles, the bench's fleet), every symbol in
one batch, all targets. Every model set is called in turn, round after round, in this
one process, so the machine's load hits all of them alike; prints one JSON object of
medians (ms) of wall time and of this process's CPU time (every thread; a loaded machine
moves it much less), and the ratios to the RandomForest (the version's ``random_forest`` model,
else the ensemble's forest member). Run from the repository root:

    .venv/bin/python benchmarks/inference_per_tick.py --version V [--symbols 100] [--rounds 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from configs.settings import load_settings
from bse_predict.cli.stream import DEFAULT_DATA
from bse_predict.serving.manifest import load_manifest, newest_version
from bse_predict.stream.bench_inference import ROUNDS, forest_ms, inference_per_tick
from bse_predict.stream.bench_load import bench_symbols


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=None, help="a version serving an ensemble (default: newest)")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--data", type=Path, action="append", default=None)
    parser.add_argument("--member-timeout-ms", type=float, default=60_000.0,
                        help="members mode: the deadline of each member (generous: time every member to its end)")
    args = parser.parse_args()
    settings = load_settings()
    serving = settings.worker.ensemble.model_copy(update={"member_timeout_ms": args.member_timeout_ms})
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"ensemble": serving})})
    version = args.version or newest_version(settings.models_dir)
    history = load_manifest(settings.models_dir / version, settings.model_signing_secret).min_history
    series = bench_symbols(args.data or DEFAULT_DATA, args.symbols, history)
    report: dict[str, object] = {"version": version, "symbols": args.symbols, "rounds": args.rounds}
    for label, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        times = inference_per_tick(settings, version, version, series, history, args.rounds, clock)
        forest = forest_ms(times) or float("nan")
        report[f"{label}_ms"] = times
        report[f"{label}_over_random_forest"] = {k: round(v / forest, 2) for k, v in times.items()}
    print(json.dumps(report, indent=2))

if __name__ == "__main__":
    main()
