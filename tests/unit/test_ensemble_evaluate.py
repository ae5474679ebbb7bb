"""``evaluate`` scores every ensemble strategy beside its members and the baselines, and compares
each strategy with its best member, and the ensemble with itself refitted without each member, by the
paired bootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.settings import load_settings
from bse_predict.evaluation.evaluate import evaluate
from bse_predict.evaluation.schema import EvaluationOptions
from bse_predict.candles.files import CandleSeries
from bse_predict.families.ensemble import EnsemblePredictor


def test_every_strategy_is_scored_and_compared_with_the_best_member(futures_series: dict[str, CandleSeries],
                                                                    tmp_path: Path) -> None:
    settings = load_settings(market={"targets_pct": [2]}, models={"families": {"ensemble": {"params": {
        "members": ["random_forest", "euclidean_knn"], "strategy": "weighted", "member_ablation": True,
        "member_params": {"random_forest": {"n_estimators": 12, "max_depth": 4, "min_samples_leaf": 40},
                          "euclidean_knn": {"k": 16, "max_pool": 400}}}}}})
    options = EvaluationOptions(families=("ensemble",), folds=2, max_rows_per_symbol=1500, bootstrap_samples=200)
    report = evaluate([futures_series[s] for s in ("BTCUSDT", "ETHUSDT")], settings, tmp_path, options,
                      show_progress=False)
    result = report.targets["2%"]
    strategies = {"ensemble", "ensemble_dynamic", "ensemble_stacking", "ensemble_adaptive"}
    members = {"ensemble_member_random_forest", "ensemble_member_euclidean_knn"}
    assert strategies | members | {"climatology", "always_up"} <= set(result.models)
    rows = {m.pooled.rows for m in result.models.values()}
    assert len(rows) == 1  # every model on the same test rows
    best = min(members, key=lambda n: result.models[n].pooled.log_loss)
    against = {c.model for c in result.comparisons if c.reference == best and c.metric == "log_loss"}
    assert strategies <= against
    claims = [v for v in result.verdicts if "better than its best member" in v]
    assert len(claims) == len(strategies) and all(best in v for v in claims)
    ablations = {f"ensemble_weighted_without_{m.removeprefix('ensemble_member_')}" for m in members}
    assert ablations <= set(result.models)
    left_out = {c.reference: c for c in result.comparisons if c.model == "ensemble" and c.reference in ablations}
    assert set(left_out) == ablations and all(c.rows == next(iter(rows)) for c in left_out.values())
    for name, comparison in left_out.items():
        without = result.models[name].pooled.log_loss
        assert comparison.mean_difference.estimate == pytest.approx(result.models["ensemble"].pooled.log_loss - without)
    earned = [v for v in result.verdicts if "(log loss with it against the weighted mixture refitted without it)" in v]
    assert len(earned) == 2 and any("euclidean_knn" in v for v in earned)
    assert not [v for v in result.verdicts if "weighted_without_" in v]  # worded once, by member, not by variant
    report_text = (tmp_path / "report.md").read_text()
    assert "ensemble_stacking" in report_text and "ensemble_member_euclidean_knn" in report_text


def test_the_ensemble_is_scored_as_served_its_combiners_fitted_on_the_calibration_slice(
        futures_series: dict[str, CandleSeries], tmp_path: Path) -> None:
    """Its combiners are its calibration: no second calibrator over the strategies (a member alone is
    calibrated like a family), and the rows they are fitted on are those a calibrator would get."""
    seen: list[tuple[int, int]] = []

    class Recording(EnsemblePredictor):
        def train(self, X, y, validation_data=None, validation_open_time_ms=None):  # type: ignore[no-untyped-def]
            seen.append((len(y), len(validation_data[1])))
            assert validation_open_time_ms is not None and len(validation_open_time_ms) == len(validation_data[1])
            return super().train(X, y, validation_data, validation_open_time_ms)

    settings = load_settings(market={"targets_pct": [2]})
    params = {"members": ["random_forest"], "member_params": {"random_forest": {
        "n_estimators": 8, "max_depth": 4, "min_samples_leaf": 40}}}
    options = EvaluationOptions(families=("ensemble",), folds=2, max_rows_per_symbol=1500, bootstrap_samples=50)
    report = evaluate([futures_series["BTCUSDT"]], settings, tmp_path, options,
                      model_factory=lambda family, target: Recording(**params), show_progress=False)
    result = report.targets["2%"]
    for name in ("ensemble", "ensemble_dynamic", "ensemble_stacking", "ensemble_adaptive"):
        model = result.models[name]
        assert model.pooled.log_loss == pytest.approx(model.pooled_uncalibrated.log_loss, abs=1e-5), name  # floor only
        assert "none calibration" in model.description, name
    member = result.models["ensemble_member_random_forest"]
    assert member.pooled.log_loss != pytest.approx(member.pooled_uncalibrated.log_loss, abs=1e-5)
    assert "temperature calibration" in member.description
    assert [(f.fit_rows, f.calibration_rows) for f in result.folds] == seen
