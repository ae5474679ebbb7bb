"""Inference per tick, as ``bse-predict bench`` and ``benchmarks/inference_per_tick.py`` time it: every
model set called in turn, round after round; an ensemble also member by member, beside its forest."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.settings import load_settings
from bse_predict.candles.files import CandleSeries
from bse_predict.stream.bench_inference import MEMBER_PREFIX, forest_ms, inference_per_tick, interleaved_median_ms
from tests.conftest import ENSEMBLE_VERSION


def test_calls_are_timed_in_turn_round_after_round() -> None:
    order: list[str] = []
    medians = interleaved_median_ms({name: (lambda n=name: order.append(n)) for name in ("a", "b", "c")}, rounds=4)
    assert order == ["a", "b", "c"] * 5  # one untimed round, then four timed ones, never two of one call in a row
    assert set(medians) == {"a", "b", "c"} and all(ms >= 0 for ms in medians.values())


def test_forest_is_the_versions_own_then_the_members_then_the_served_model() -> None:
    member = f"{MEMBER_PREFIX}ensemble_member_random_forest"
    assert forest_ms({"onnx": 9.0, member: 2.0, "random_forest": 3.0}) == 3.0
    assert forest_ms({"onnx": 9.0, member: 2.0}) == 2.0
    assert forest_ms({"onnx": 9.0}) == 9.0


@pytest.mark.slow  # a version trained on ../shared/data
def test_an_ensemble_version_is_timed_whole_and_member_by_member(
    ensemble_models: Path, futures_series: dict[str, CandleSeries]
) -> None:
    settings = load_settings(models_dir=str(ensemble_models))
    series = list(futures_series.values())
    times = inference_per_tick(settings, ENSEMBLE_VERSION, None, series, 200, rounds=3)
    members = {f"{MEMBER_PREFIX}ensemble_member_random_forest", f"{MEMBER_PREFIX}ensemble_member_hmm_regime"}
    assert set(times) == {"onnx", "ensemble", "ensemble_members", *members}
    assert all(ms > 0 for ms in times.values())
    assert forest_ms(times) == times[f"{MEMBER_PREFIX}ensemble_member_random_forest"]
