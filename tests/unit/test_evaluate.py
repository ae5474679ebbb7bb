"""`evaluate` end to end on a small real slice, through the Python API and the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from bse_predict.cli import app
from configs.settings import Settings, load_settings
from bse_predict.evaluation.evaluate import LeakageSuspected, default_factory, evaluate
from bse_predict.evaluation.schema import EvaluationOptions, EvaluationReport
from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import SymbolDataset
from bse_predict.families import BasePredictor, get_model
from bse_predict.families.random_forest import RandomForestPredictor
from bse_predict.labels.first_touch import UNKNOWN
from tests.conftest import FUTURES, REPO_ROOT

SYMBOLS = ("BTCUSDT", "ETHUSDT")
ROWS = 1500
BASELINES = ("climatology", "always_up", "momentum_24h", "logistic")
OVERRIDES: dict[str, Any] = {
    "market": {"targets_pct": [2]},
    "models": {"families": {"random_forest": {"params": {**RandomForestPredictor.fast_params, "seed": 3}}}},
}
runner = CliRunner()


class ToySequence(BasePredictor):
    """A sequence-input family (not registered): logistic regression on the summed last 24 h of returns."""

    family = "toy_sequence"
    input_kind = "sequence"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def prepare_data(self, dataset: SymbolDataset, target: str) -> tuple[np.ndarray, np.ndarray]:
        known = dataset.labels[target] != UNKNOWN
        return dataset.sequences(known), dataset.labels[target][known].astype(np.int64)

    def train(self, X: np.ndarray, y: np.ndarray, validation_data: Any = None) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression

        self.model_ = LogisticRegression().fit(X[:, -24:, 0].sum(axis=1, keepdims=True), y)
        return {}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        full = np.zeros((len(X), 3))
        full[:, self.model_.classes_] = self.model_.predict_proba(X[:, -24:, 0].sum(axis=1, keepdims=True))
        return full

    def export_onnx(self, path: Path) -> None:
        raise NotImplementedError("a test family")


class LabelReadingForest(RandomForestPredictor):
    """A forest whose inputs carry the label: the bug the leakage guard exists for."""

    family = "leaky_forest"
    fast_params: ClassVar[dict[str, Any]] = RandomForestPredictor.fast_params

    def prepare_data(self, dataset: SymbolDataset, target: str) -> tuple[np.ndarray, np.ndarray]:
        X, y = super().prepare_data(dataset, target)
        return np.column_stack([X, y]), y

    def get_feature_importance(self) -> dict[str, float]:
        return {}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(**OVERRIDES)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory, futures_series: dict[str, CandleSeries],
            settings: Settings) -> tuple[EvaluationReport, Path]:
    out = tmp_path_factory.mktemp("evaluation")
    base = default_factory(settings)

    def factory(family: str, target: str) -> BasePredictor:
        return ToySequence() if family == "toy_sequence" else base(family, target)

    options = EvaluationOptions(families=("random_forest", "toy_sequence"), folds=2, max_rows_per_symbol=ROWS)
    report = evaluate([futures_series[s] for s in SYMBOLS], settings, out, options, model_factory=factory,
                      show_progress=False)
    return report, out


def test_outputs_exist_and_validate(api_run: tuple[EvaluationReport, Path]) -> None:
    report, out = api_run
    loaded = EvaluationReport.model_validate_json((out / "metrics.json").read_text(encoding="utf-8"))
    assert loaded.targets["2%"].models["random_forest"].pooled == report.targets["2%"].models["random_forest"].pooled
    assert set(report.plots) >= {"reliability_2pct.png", "fold_auc.png", "feature_importance_2pct.png"}
    for name in report.plots:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text(encoding="utf-8")
    for needle in ("## Target 2%", "| *reference* |", "XGBoost beats RandomForest", "### Paired bootstrap",
                   *BASELINES, "random_forest", "toy_sequence"):
        assert needle in text
    assert report.leakage.passed and report.data[0].rows == ROWS


def test_folds_are_purged_and_cover_the_test_rows(api_run: tuple[EvaluationReport, Path]) -> None:
    report, _ = api_run
    result = report.targets["2%"]
    assert len(result.folds) == 2 and result.folds[0].test_end_ms == result.folds[1].test_start_ms
    horizon_ms = report.market["horizon_hours"] * 3_600_000
    for fold in result.folds:
        assert fold.newest_train_ms is not None and fold.newest_train_ms + horizon_ms < fold.test_start_ms
        assert fold.fit_rows + fold.calibration_rows <= fold.train_rows and fold.calibration_rows > 0
    assert sum(f.test_rows for f in result.folds) == result.models["random_forest"].pooled.rows


def test_every_model_is_scored_on_the_same_rows_beside_its_baselines(api_run: tuple[EvaluationReport, Path]) -> None:
    result = api_run[0].targets["2%"]
    assert set(result.models) == {"random_forest", "toy_sequence", *BASELINES}
    climatology = result.models["climatology"]
    for name, model in result.models.items():
        groups = [model.pooled, *model.by_fold, *model.by_symbol.values()]
        references = [climatology.pooled, *climatology.by_fold, *climatology.by_symbol.values()]
        assert set(model.by_symbol) == set(SYMBOLS) and len(model.by_fold) == 2
        for g, ref in zip(groups, references, strict=True):
            assert g is not None and ref is not None
            assert (g.rows, g.log_loss_climatology, g.brier_climatology) == (ref.rows, ref.log_loss, ref.brier)
            assert sum(g.mean_probabilities) == pytest.approx(1.0) and sum(g.label_shares) == pytest.approx(1.0)
            assert g.auc_up_vs_down is None or 0.0 <= g.auc_up_vs_down <= 1.0
            assert 0.0 <= g.ece <= 1.0 and g.log_loss > 0 and 0.0 <= g.brier <= 2.0
            assert [t.threshold for t in g.thresholds] == [0.55, 0.60, 0.65]
        assert name == "climatology" or abs(model.pooled.auc_up_vs_down - 0.5) < 0.15, name
    forest = result.models["random_forest"]
    assert forest.kind == "family" and forest.pooled_uncalibrated is not None
    assert forest.timings.fit_seconds > 0 and len(forest.feature_importance) == 82
    assert result.models["always_up"].pooled.auc_up_vs_down == 0.5


def test_every_per_symbol_auc_has_its_interval_in_the_report(api_run: tuple[EvaluationReport, Path]) -> None:
    report, out = api_run
    result = report.targets["2%"]
    text = (out / "report.md").read_text(encoding="utf-8")
    for name, model in result.models.items():
        assert set(model.auc_by_symbol) == set(SYMBOLS), name
        for symbol, auc in model.auc_by_symbol.items():
            assert auc.pooled is not None and auc.fold_demeaned is not None
            assert auc.pooled.estimate == pytest.approx(model.by_symbol[symbol].auc_up_vs_down, abs=1e-12)
            assert auc.pooled.lower <= auc.pooled.estimate <= auc.pooled.upper
            assert auc.blocks <= model.auc.blocks  # the days this symbol occupies
            cell = (f"{auc.pooled.estimate:.3f} [{auc.pooled.lower:.3f}, {auc.pooled.upper:.3f}] · "
                    f"{auc.fold_demeaned.estimate:.3f} [{auc.fold_demeaned.lower:.3f}, "
                    f"{auc.fold_demeaned.upper:.3f}]")
            assert cell in text, (name, symbol)


def test_bootstrap_compares_every_model_with_random_forest(api_run: tuple[EvaluationReport, Path]) -> None:
    result = api_run[0].targets["2%"]
    assert result.reference == "random_forest"
    against_forest = {(c.model, c.metric) for c in result.comparisons if c.reference == "random_forest"}
    others = [m for m in result.models if m != "random_forest"]
    assert against_forest == {(m, metric) for m in others for metric in ("log_loss", "brier")}
    for c in result.comparisons:
        assert c.relative_improvement.lower <= c.relative_improvement.upper and c.block_days == 3
    assert any("not tested" in v for v in result.verdicts)
    # plain families have no members: no "better than its best member" claim about them
    assert not any("best member" in v for v in result.verdicts)


def test_command_line_matches_the_api_and_is_deterministic(api_run: tuple[EvaluationReport, Path],
                                                           tmp_path: Path) -> None:
    config = tmp_path / "evaluate.yaml"
    config.write_text(yaml.safe_dump(OVERRIDES), encoding="utf-8")
    data = [arg for s in SYMBOLS for arg in ("--data", str(FUTURES / f"{s}-1h.csv.gz"))]
    result = runner.invoke(app, ["evaluate", *data, "--out", str(tmp_path / "out"), "--config", str(config),
                                 "--targets", "2", "--folds", "2", "--max-rows", str(ROWS),
                                 "--families", "random_forest"])
    assert result.exit_code == 0, result.output
    assert "evaluation written to" in result.output
    cli = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    api = api_run[0].targets["2%"].models
    for name in ("random_forest", *BASELINES):
        pooled = cli["targets"]["2%"]["models"][name]["pooled"]
        assert pooled["log_loss"] == pytest.approx(api[name].pooled.log_loss, abs=1e-9)
        assert pooled["auc_up_vs_down"] == pytest.approx(api[name].pooled.auc_up_vs_down, abs=1e-9)


@pytest.mark.parametrize(("arguments", "reason"), [
    (["--families", "no_such_family"], "unknown model families"),
    (["--calibrator", "beta"], "--calibrator"),
    (["--folds", "0"], "folds"),
])
def test_bad_options_exit_non_zero_with_one_line(arguments: list[str], reason: str, tmp_path: Path) -> None:
    data = ["--data", str(REPO_ROOT / "tests" / "data" / "candles" / "TINYUSDT-1h.csv")]  # refused before any row is read
    result = runner.invoke(app, ["evaluate", *data, "--out", str(tmp_path), *arguments])
    assert result.exit_code == 2 and reason in result.output


def test_help_names_the_options() -> None:
    result = runner.invoke(app, ["evaluate", "--help"])
    assert result.exit_code == 0 and "--folds" in result.output and "--config" in result.output


def test_a_label_in_the_inputs_trips_the_leakage_guard(futures_series: dict[str, CandleSeries], settings: Settings,
                                                      tmp_path: Path) -> None:
    options = EvaluationOptions(families=("leaky_forest",), folds=2, max_rows_per_symbol=1000, bootstrap_samples=50)
    with pytest.raises(LeakageSuspected, match="leaky_forest on target 2%, fold .*: fold-demeaned AUC"):
        evaluate([futures_series["BTCUSDT"]], settings, tmp_path, options, show_progress=False,
                 model_factory=lambda family, target: LabelReadingForest(**LabelReadingForest.fast_params))
    written = EvaluationReport.model_validate_json((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert not written.leakage.passed and "LEAKAGE SUSPECTED" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert get_model("random_forest").family == "random_forest"  # the test families never entered the registry


def test_regime_plots_show_filtered_regimes_and_the_transition_matrix(futures_series, tmp_path) -> None:
    """With hmm_regime evaluated, the report gets regimes over price, the transition matrix and
    the regime diagnostics as notes."""
    from configs.settings import load_settings
    from bse_predict.evaluation.evaluate import evaluate
    from bse_predict.evaluation.schema import EvaluationOptions
    from bse_predict.families import get_model

    settings = load_settings(market={"targets_pct": [2]},
                             models={"families": {"hmm_regime": {"params": get_model("hmm_regime").fast_params}}})
    series = [futures_series["BTCUSDT"].tail(4000), futures_series["ETHUSDT"].tail(4000)]
    evaluate(series, settings, tmp_path, EvaluationOptions(families=("hmm_regime",), folds=2), show_progress=False)
    assert (tmp_path / "regimes_over_price.png").stat().st_size > 10_000
    assert (tmp_path / "transition_matrix.png").stat().st_size > 5_000
    report = (tmp_path / "report.md").read_text()
    assert "BTCUSDT regimes" in report and "forward 24 h volatility" in report
