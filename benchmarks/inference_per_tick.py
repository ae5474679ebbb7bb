"""Inference per tick of a served ensemble, member by member, against its RandomForest alone.

One tick = one window per symbol (real candles, the bench's fleet), every symbol in
one batch, all targets. Every model set is called in turn, round after round, in this
one process, so the machine's load hits all of them alike; prints one JSON object of
medians (ms) and the ratios to the RandomForest (the version's ``random_forest`` model,
else the ensemble's forest member). Run from the repository root:

    .venv/bin/python benchmarks/inference_per_tick.py --version V [--symbols 100] [--rounds 60]
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()
    settings = load_settings()
    version = args.version or newest_version(settings.models_dir)
    history = load_manifest(settings.models_dir / version, settings.model_signing_secret).min_history
    series = bench_symbols(args.data or DEFAULT_DATA, args.symbols, history)
    times = inference_per_tick(settings, version, version, series, history, args.rounds)
    forest = forest_ms(times) or float("nan")
    print(json.dumps({"version": version, "symbols": args.symbols, "rounds": args.rounds, "median_ms": times,
                      "over_random_forest": {k: round(v / forest, 2) for k, v in times.items()}}, indent=2))


if __name__ == "__main__":
    main()
