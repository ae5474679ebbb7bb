"""Per-call inference cost of a served version: ONNX against native scikit-learn.

Prints one JSON object: for batch sizes 1 and 100 (one row per symbol of a
tick), the median time of one call covering all targets, and rows per second.
Run from the repository root:

    .venv/bin/python benchmarks/inference.py [--version V] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from configs.settings import load_settings
from bse_predict.serving.manifest import newest_version
from bse_predict.serving.native_runner import NativeModelSet
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.stream.bench_inference import median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=None)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    settings = load_settings()
    version = args.version or newest_version(settings.models_dir)
    folder = Path(settings.models_dir) / version
    onnx_set, native_set = ServedModelSet.load(folder), NativeModelSet.load(folder)
    rng = np.random.default_rng(0)
    report: dict[str, object] = {"version": version, "targets": list(onnx_set.targets), "batches": {}}
    for rows in (1, 100):
        features = rng.normal(size=(rows, len(onnx_set.manifest.feature_names)))
        inputs = {"features": features}
        onnx_ms = median_ms(lambda: onnx_set.predict(inputs), args.repeats)
        native_ms = median_ms(lambda: native_set.predict(inputs), max(5, args.repeats // 5))
        report["batches"][str(rows)] = {
            "onnx_ms": round(onnx_ms, 3),
            "native_ms": round(native_ms, 3),
            "onnx_rows_per_s": round(rows / onnx_ms * 1000),
            "native_rows_per_s": round(rows / native_ms * 1000),
            "native_over_onnx": round(native_ms / onnx_ms, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
