"""The servable gate: a model significantly worse than climatology on the holdout is not marked
servable, and training says so (manifest and command line); a model with skill, or climatology
itself, passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from configs.models import ServableGateConfig
from configs.settings import load_settings
from bse_predict.candles.files import CandleSeries
from bse_predict.cli.training import _print_servable
from bse_predict.scoring.probabilities import climatology_shares
from bse_predict.serving.manifest import load_manifest
from bse_predict.training.servable_gate import refused, servable_verdict
from bse_predict.training.train import train_version
from tests.conftest import TRAINING_OVERRIDES

HOUR_MS = 3_600_000
ROWS = 2000
GATE = ServableGateConfig(bootstrap_samples=500)


def _outcomes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Holdout outcomes drawn from known shares, and training outcomes from the same shares."""
    rng = np.random.default_rng(seed)
    return rng.choice(3, size=ROWS, p=[0.4, 0.35, 0.25]), rng.choice(3, size=5000, p=[0.4, 0.35, 0.25])


def _times() -> np.ndarray:
    return np.arange(ROWS, dtype=np.int64) * HOUR_MS


def test_a_confident_coin_flip_is_refused_and_the_reason_gives_the_interval() -> None:
    y, y_train = _outcomes(0)
    coin = np.full((ROWS, 3), 0.05)
    coin[np.arange(ROWS), np.random.default_rng(1).integers(0, 3, ROWS)] = 0.9  # sure, and right a third of the time
    verdict = servable_verdict(coin, y, y_train, _times(), GATE, 3)
    assert not verdict.servable and verdict.difference is not None and verdict.difference[1] > 0
    assert verdict.reason.startswith("NOT SERVABLE: significantly worse than climatology")
    assert f"{verdict.difference[1]:+.4f}" in verdict.reason and verdict.blocks == ROWS // 72 + 1


def test_a_model_with_skill_and_climatology_itself_are_servable() -> None:
    y, y_train = _outcomes(2)
    skilled = np.tile([0.4, 0.35, 0.25], (ROWS, 1))
    skilled[np.arange(ROWS), y] += 0.2
    skilled /= skilled.sum(axis=1, keepdims=True)
    verdict = servable_verdict(skilled, y, y_train, _times(), GATE, 3)
    assert verdict.servable and verdict.difference is not None and verdict.difference[2] < 0
    itself = servable_verdict(np.tile(climatology_shares(y_train), (ROWS, 1)), y, y_train, _times(), GATE, 3)
    assert itself.servable and itself.difference == (0.0, 0.0, 0.0)
    assert itself.reason.startswith("servable: not significantly worse")


def test_a_model_barely_worse_on_few_rows_is_not_refused() -> None:
    """Worse on average but within the noise of a few 72-hour blocks: no evidence, so servable."""
    y, y_train = _outcomes(3)
    shrunk = np.tile([0.36, 0.36, 0.28], (200, 1))
    verdict = servable_verdict(shrunk, y[:200], y_train, _times()[:200], GATE, 3)
    assert verdict.servable and verdict.difference is not None and verdict.difference[1] <= 0


def test_too_few_blocks_give_no_verdict_and_say_so() -> None:
    """Five 3-day blocks: all five worse happens by chance 1 time in 32, above the level, so no verdict."""
    y, y_train = _outcomes(5)
    coin = np.full((ROWS, 3), 0.05)
    coin[np.arange(ROWS), np.random.default_rng(6).integers(0, 3, ROWS)] = 0.9
    few = 5 * 72
    unjudged = servable_verdict(coin[:few], y[:few], y_train, _times()[:few], GATE, 3)
    assert unjudged.servable and unjudged.blocks == 5 and unjudged.difference[1] > 0
    assert unjudged.reason.startswith("servable, not judged: fewer holdout blocks than training.servable_gate."
                                      "min_blocks (6)")
    judged = servable_verdict(coin[:few], y[:few], y_train, _times()[:few], GATE.model_copy(update={"min_blocks": 5}), 3)
    assert not judged.servable and judged.reason.startswith("NOT SERVABLE")


def test_the_gate_can_be_turned_off_and_says_so() -> None:
    y, y_train = _outcomes(4)
    verdict = servable_verdict(np.tile([0.0, 0.0, 1.0], (ROWS, 1)), y, y_train, _times(),
                               ServableGateConfig(enabled=False), 3)
    assert verdict.servable and "not checked" in verdict.reason


def test_training_marks_a_planted_bad_model_not_servable_and_prints_why(
        tmp_path: Path, futures_series: dict[str, CandleSeries], capsys: pytest.CaptureFixture[str]) -> None:
    """One unpruned tree on real hours: probabilities of 0 and 1 that are wrong half the time."""
    overrides = {**TRAINING_OVERRIDES, "models": {**TRAINING_OVERRIDES["models"], "families": {
        **TRAINING_OVERRIDES["models"]["families"],
        "random_forest": {"enabled": True, "params": {"n_estimators": 1, "max_depth": None, "min_samples_leaf": 1,
                                                      "max_features": None, "seed": 3}}}}}
    settings = load_settings(models_dir=str(tmp_path), market={"targets_pct": [2]}, **overrides)
    folder = train_version(list(futures_series.values()), settings, "v-bad", show_progress=False)
    manifest = load_manifest(folder)
    (entry,) = manifest.models
    assert entry.servable is not None and not entry.servable.servable and refused(manifest.models) == [entry]
    assert entry.servable.rows == manifest.metrics["random_forest/2%"]["rows"]
    assert entry.servable.log_loss == pytest.approx(manifest.metrics["random_forest/2%"]["log_loss"])
    _print_servable(folder, settings)
    printed = capsys.readouterr().out
    assert "1 of 1 models are NOT SERVABLE" in printed and "random_forest 2%: NOT SERVABLE" in printed
