"""The gate before a shadow: not significantly worse than the live version on the holdout, by a paired
block bootstrap whose blocks span the label horizon."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from configs.settings import RetrainGateConfig, load_settings
from bse_predict.retrain.gate import gate_decision
from bse_predict.retrain.holdout_scores import HoldoutScores
from bse_predict.scoring.probabilities import row_log_loss

DAY = 86_400_000
START = 1_767_225_600_000  # 2026-01-01


def _scores(live_p: np.ndarray, new_p: np.ndarray, labels: np.ndarray, hours: int) -> HoldoutScores:
    times = START + 3_600_000 * (np.arange(len(labels)) % hours)
    return HoldoutScores(times, np.full(len(labels), "1%"), row_log_loss(live_p, labels), row_log_loss(new_p, labels))


def _labels(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(3, size=rows, p=[0.4, 0.4, 0.2])


def _sharp(labels: np.ndarray, hit: float, seed: int) -> np.ndarray:
    """Probabilities that give the outcome ``hit`` on most rows, a random class otherwise."""
    rng = np.random.default_rng(seed)
    called = np.where(rng.random(len(labels)) < 0.7, labels, rng.integers(0, 3, len(labels)))
    p = np.full((len(labels), 3), (1.0 - hit) / 2)
    p[np.arange(len(labels)), called] = hit
    return p


CONFIG = RetrainGateConfig(samples=500)


def test_an_equal_model_passes() -> None:
    labels = _labels(3000, 1)
    p = _sharp(labels, 0.6, 2)
    decision = gate_decision(_scores(p, p.copy(), labels, 1000), CONFIG, min_rows=200)
    assert decision.passed and decision.difference is not None
    assert decision.difference.estimate == 0.0 and "not significantly worse" in decision.reason


def test_a_significantly_worse_model_is_refused() -> None:
    labels = _labels(3000, 3)
    live = _sharp(labels, 0.6, 4)
    worse = np.tile([0.1, 0.1, 0.8], (len(labels), 1))  # confident in the rarest outcome
    decision = gate_decision(_scores(live, worse, labels, 1000), CONFIG, min_rows=200)
    assert not decision.passed
    assert decision.difference is not None and decision.difference.lower > 0
    assert decision.reason.startswith("refused") and decision.new_log_loss > decision.live_log_loss
    assert decision.blocks == 14  # 1000 hours in blocks of 3 days


def test_a_better_model_passes_and_a_slightly_noisier_one_is_not_refused() -> None:
    labels = _labels(3000, 5)
    live = _sharp(labels, 0.5, 6)
    assert gate_decision(_scores(live, _sharp(labels, 0.6, 6), labels, 1000), CONFIG, 200).passed
    noisy = np.clip(live + np.random.default_rng(7).normal(0, 0.01, live.shape), 0.01, 1)
    noisy /= noisy.sum(axis=1, keepdims=True)
    assert gate_decision(_scores(live, noisy, labels, 1000), CONFIG, 200).passed


def test_a_negative_margin_asks_for_a_clear_improvement() -> None:
    labels = _labels(3000, 8)
    p = _sharp(labels, 0.6, 9)
    strict = RetrainGateConfig(samples=500, max_loss_increase_nats=-0.05)
    decision = gate_decision(_scores(p, p.copy(), labels, 1000), strict, 200)
    assert not decision.passed and "above -0.05" in decision.reason


def test_too_few_holdout_rows_are_no_evidence() -> None:
    labels = _labels(50, 10)
    p = _sharp(labels, 0.6, 11)
    decision = gate_decision(_scores(p, p, labels, 50), CONFIG, min_rows=200)
    assert not decision.passed and decision.difference is None and "fewer than" in decision.reason


def test_the_blocks_must_span_the_label_horizon() -> None:
    with pytest.raises(ValidationError, match="block_days"):
        load_settings(retrain={"gate": {"block_days": 2}})  # 48 h < the 72 h horizon
    assert load_settings(retrain={"gate": {"block_days": 1}}, market={"horizon_hours": 24}).retrain.gate.block_days == 1


def test_the_purge_must_be_at_least_the_horizon() -> None:
    with pytest.raises(ValidationError, match="purge_hours"):
        load_settings(retrain={"purge_hours": 48})
    assert load_settings(retrain={"purge_hours": 96}).retrain.purge_hours == 96


def test_the_decision_fields_go_on_control_events_as_json() -> None:
    import orjson

    labels = _labels(600, 12)
    p = _sharp(labels, 0.6, 13)
    fields = gate_decision(_scores(p, p, labels, 300), CONFIG, 200).fields()
    decoded = orjson.loads(orjson.dumps(fields))
    assert decoded["passed"] is True and decoded["per_target"]["1%"]["rows"] == 600
