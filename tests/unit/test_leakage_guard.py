"""The leakage guard on generated markets: it fires on a feature that peeks one hour ahead and not on a small
honest market, and the report is written with its verdict on top either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from bse_predict.candles.files import CandleSeries
from bse_predict.cli import app
from bse_predict.evaluation.evaluate import evaluate
from bse_predict.evaluation.leakage import check_leakage
from bse_predict.evaluation.schema import (
    AucIntervals,
    EvaluationOptions,
    EvaluationReport,
    Interval,
    ModelEvaluation,
    TargetEvaluation,
)
from bse_predict.families import base as family_registry
from bse_predict.families.random_forest import RandomForestPredictor
from bse_predict.labels.first_touch import UNKNOWN
from bse_predict.training.dataset import SymbolDataset
from configs.settings import load_settings
from tests.support.small_market import small_market_series

HOURS = 4000
FAST_FOREST = {**RandomForestPredictor.fast_params, "seed": 3}
runner = CliRunner()


class PeekingForest(RandomForestPredictor):
    """A forest with one more input: the next hour's log return, which is only known an hour later."""

    family = "peeking_forest"

    def prepare_data(self, dataset: SymbolDataset, target: str) -> tuple[np.ndarray, np.ndarray]:
        X, y = super().prepare_data(dataset, target)
        rows = dataset.grid_rows[dataset.labels[target] != UNKNOWN]
        close = dataset.grid_ohlcv[:, 3]
        ahead = np.log(close[np.minimum(rows + 1, len(close) - 1)] / close[rows])
        return np.column_stack([X, ahead]), y

    def get_feature_importance(self) -> dict[str, float]:
        return {}


def _write_candles(series: CandleSeries, folder: Path) -> Path:
    path = folder / f"{series.symbol}-1h.csv"
    rows = np.column_stack([series.open_time_ms, series.ohlcv])
    np.savetxt(path, rows, delimiter=",", header="open_time_ms,open,high,low,close,volume", comments="",
               fmt=["%d", "%.8f", "%.8f", "%.8f", "%.8f", "%.4f"])
    return path


def test_small_honest_market_passes_and_the_report_says_so(tmp_path: Path) -> None:
    """About 2,900 weekday hours, 24 independent 72-hour outcomes out of fold: on this draw the plain pooled
    AUC of two baselines leaves [0.35, 0.65] at 5% (the old point guard's false alarm); the interval does not."""
    settings = load_settings(models={"families": {"random_forest": {"params": FAST_FOREST}}})
    series = small_market_series("SMALLUSDT", HOURS, seed=15)
    options = EvaluationOptions(families=("random_forest",), folds=4, bootstrap_samples=300)
    report = evaluate([series], settings, tmp_path, options, show_progress=False)
    pooled = {name: m.pooled.auc_up_vs_down for name, m in report.targets["5%"].models.items()}
    assert {name for name, auc in pooled.items() if not 0.35 <= auc <= 0.65} == {"momentum_24h", "logistic"}
    assert report.leakage.passed and not report.leakage.findings
    lines = (tmp_path / "report.md").read_text(encoding="utf-8").splitlines()
    assert lines[2].startswith("**Verdict: No leakage suspected")
    for name in report.plots:
        assert (tmp_path / name).stat().st_size > 0
    assert set(report.targets) == {"1%", "2%", "5%"}
    for result in report.targets.values():
        pooled = result.models["random_forest"].pooled
        assert pooled.effective_outcomes is not None and pooled.effective_touched is not None
        assert pooled.rows / 72 <= pooled.effective_outcomes < pooled.rows / 10  # 72 h windows, with weekend gaps
        for name, model in result.models.items():
            demeaned = model.auc.fold_demeaned
            assert demeaned.lower <= 0.65 and demeaned.upper >= 0.35, (result.target, name, demeaned)


def test_a_feature_that_peeks_one_hour_ahead_fails_the_command_after_writing_the_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(family_registry._REGISTRY, PeekingForest.family, PeekingForest)
    data = _write_candles(small_market_series("SMALLUSDT", HOURS, seed=22), tmp_path)
    config = tmp_path / "fast.yaml"
    every_feature = {**FAST_FOREST, "max_features": None}  # each split may pick the peeking column
    config.write_text(yaml.safe_dump({"models": {"families": {"peeking_forest": {"params": every_feature}}}}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", "--data", str(data), "--out", str(out), "--config", str(config),
                                 "--targets", "1", "--folds", "3", "--families", "peeking_forest"])
    assert result.exit_code == 2, result.output
    assert "LEAKAGE SUSPECTED" in result.output and "evaluation written to" in result.output
    assert "error: leakage suspected: peeking_forest on target 1%, fold" in result.output
    lines = (out / "report.md").read_text(encoding="utf-8").splitlines()
    assert lines[2].startswith("**Verdict: LEAKAGE SUSPECTED") and "peeking_forest at 1% (fold" in lines[2]
    report = EvaluationReport.model_validate(json.loads((out / "metrics.json").read_text(encoding="utf-8")))
    assert [(f.model, f.target) for f in report.leakage.findings] == [("peeking_forest", "1%")]
    finding = report.leakage.findings[0]
    assert finding.auc.lower > 0.65 and finding.folds and set(finding.folds) <= {0, 1, 2}
    assert {"fold_auc.png", "reliability_1pct.png"} <= set(report.plots)
    assert all((out / name).stat().st_size > 0 for name in report.plots)


def _target_with(aucs: dict[str, AucIntervals]) -> TargetEvaluation:
    """A target whose models hold only the AUC intervals the guard reads."""
    models = {name: ModelEvaluation.model_construct(name=name, auc=auc) for name, auc in aucs.items()}
    return TargetEvaluation.model_construct(target="5%", models=models)


def _interval(values: tuple[float, float, float] | None) -> Interval | None:
    return None if values is None else Interval(estimate=values[0], lower=values[1], upper=values[2])


def _intervals(demeaned: tuple[float, float, float], *folds: tuple[float, float, float] | None) -> AucIntervals:
    return AucIntervals(pooled=_interval(demeaned), within_fold_mean=_interval(demeaned),
                        fold_demeaned=_interval(demeaned), by_fold=tuple(_interval(f) for f in folds),
                        blocks=30, block_days=3)


@pytest.mark.parametrize(("demeaned", "folds", "named"), [
    ((0.72, 0.55, 0.86), [(0.86, 0.6, 0.97), (0.45, 0.3, 0.6)], None),  # a high point AUC on few outcomes
    ((0.80, 0.70, 0.88), [(0.62, 0.5, 0.75), (0.95, 0.9, 0.99), (0.83, 0.7, 0.9)], (1, 2)),
    ((0.20, 0.12, 0.30), [(0.25, 0.1, 0.4), (0.15, 0.05, 0.3)], (1,)),  # inverted, no fold alone: the farthest
    ((0.70, 0.66, 0.75), [None, (0.70, 0.6, 0.8)], (1,)),
])
def test_the_guard_reads_the_interval_and_names_the_folds(demeaned: tuple[float, float, float],
                                                          folds: list[Any], named: tuple[int, ...] | None) -> None:
    check = check_leakage({"5%": _target_with({"hmm_regime": _intervals(demeaned, *folds)})}, 0.65)
    assert check.passed is (named is None)
    assert [f.folds for f in check.findings] == ([] if named is None else [named])
    if named is not None:
        assert check.failures[0].startswith(f"hmm_regime on target 5%, fold {', '.join(map(str, named))}: ")
    assert check_leakage({"5%": _target_with({"x": _intervals(demeaned, *folds)})}, None).passed
