"""``bse-predict bench`` on the real stack, small: the relay floor, the worker with a shadow version set by a
signed control message, and the same worker of another checkout (here this one) as ``onnx@before``."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from configs.settings import Settings
from bse_predict.connections.topics import delete_topics_under
from bse_predict.stream.bench import BenchOptions, run_bench
from tests.support.golden import GOLDEN_DIR

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_bench_compares_before_and_after_with_a_shadow_version_served(isolated: Settings, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(GOLDEN_DIR / "models", models_dir)
    settings = isolated.model_copy(update={"models_dir": models_dir, "control_secret": None})
    options = BenchOptions(symbols=3, rate=30.0, seconds=1.0, settle_seconds=1.0, burst_candles=30,
                           data=(GOLDEN_DIR / "candles",), version="v-golden", shadow_version="v-golden-b",
                           compare_with=REPO, phases=("relay", "onnx"), phase_timeout_s=90.0)
    said: list[str] = []
    report = run_bench(settings, options, tmp_path / "logs", said.append)

    phases = report["phases"]
    assert set(phases) == {"relay", "onnx", "onnx@before"}
    assert report["errors"] == {"relay": 0, "onnx": 0, "onnx@before": 0}
    for name in ("onnx", "onnx@before"):
        result = phases[name]
        assert result["sent"] == 30 and result["missing"] == 0 and result["burst_received"] == 30
        # the shadow answered every candle the live version did, the window fill's last tick included
        assert result["shadow_outputs"] >= result["sent"] + result["burst_received"]
        assert result["worker_cpu_ms_per_candle"] > 0  # the worker's CPU time went up over the phase
    assert phases["relay"]["shadow_outputs"] is None
    assert report["ratios"]["p99_onnx_after_over_before"] is not None
    assert report["ratios"]["worker_cpu_per_candle_onnx_after_over_before"] is not None
    assert any("shadow v-golden-b by a signed control message" in line for line in said)
    # every phase deleted its own topics: none is left to delete
    assert asyncio.run(delete_topics_under(settings, f"{settings.topic_prefix}bench-")) == []
