"""``bse-predict tune`` on small generated candles: the study on disk and its resumption, the config block,
the nested split (the outer folds lie after, and purged from, every row the search read), the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from bse_predict.candles.files import CandleSeries
from bse_predict.candles.synthetic import synthetic_series
from bse_predict.cli import app
from bse_predict.evaluation.fold_predictions import fold_masks
from bse_predict.evaluation.walk_forward import make_folds
from bse_predict.families import BasePredictor, get_model
from bse_predict.families.base import check_family_params
from bse_predict.families.xgboost_family import XGBoostPredictor
from bse_predict.training.dataset import build_dataset
from bse_predict.tuning.errors import TuningError
from bse_predict.tuning.nested_folds import target_folds
from bse_predict.tuning.schema import TuneOptions, TuneReport
from bse_predict.tuning.spaces import SEARCH_SPACES, search_space
from bse_predict.tuning.study import DEFAULT_ATTR
from bse_predict.tuning.tune import study_files, tune
from configs.settings import Settings, load_settings

HOURS = 2000
END_MS = 1_767_225_600_000
HORIZON_MS = 72 * 3_600_000
FAST: dict[str, Any] = {**XGBoostPredictor.fast_params, "seed": 3}
runner = CliRunner()


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(market={"targets_pct": [2]}, models={"families": {"xgboost": {"params": FAST}}})


@pytest.fixture(scope="module")
def series() -> list[CandleSeries]:
    return [synthetic_series(symbol, HOURS, seed, END_MS) for seed, symbol in enumerate(("AAAUSDT", "BBBUSDT"))]


def _options(**changes: Any) -> TuneOptions:
    return TuneOptions(**{"family": "xgboost", "study_name": "xgb", "trials": 2, "bootstrap_samples": 50, **changes})


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, series: list[CandleSeries],
              settings: Settings) -> tuple[Path, TuneReport]:
    study_dir = tmp_path_factory.mktemp("tune")
    return study_dir, tune(series, settings, _options(), study_dir, show_progress=False)


def test_the_study_is_stored_and_resumed(first_run: tuple[Path, TuneReport], series: list[CandleSeries],
                                         settings: Settings) -> None:
    study_dir, report = first_run
    study_file, _, _ = study_files(study_dir, "xgb")
    stored = optuna.load_study(study_name="xgb", storage=f"sqlite:///{study_file}")
    assert report.trials_total == 2 and len(stored.trials) >= 2
    configured = stored.trials[0]
    assert configured.user_attrs.get(DEFAULT_ATTR) is True
    assert configured.params["learning_rate"] == pytest.approx(FAST["learning_rate"])
    resumed = tune(series, settings, _options(trials=3), study_dir, show_progress=False)
    assert resumed.trials_total == 5
    trials = optuna.load_study(study_name="xgb", storage=f"sqlite:///{study_file}").trials
    assert len(trials) == 5
    assert trials[2].params != trials[1].params  # the sampler's seed moved on: no trial proposed twice
    assert resumed.best_inner_log_loss <= report.best_inner_log_loss


def test_a_study_run_with_another_setup_is_refused(first_run: tuple[Path, TuneReport], series: list[CandleSeries],
                                                   settings: Settings) -> None:
    study_dir, _ = first_run
    with pytest.raises(TuningError, match="folds"):
        tune(series, settings, _options(folds=5), study_dir, show_progress=False)


def test_the_written_block_validates_as_a_config(first_run: tuple[Path, TuneReport]) -> None:
    study_dir, _ = first_run
    report = TuneReport.model_validate_json(study_files(study_dir, "xgb")[2].read_text(encoding="utf-8"))
    layered = load_settings(Path(report.config_file))
    check_family_params(layered)
    params = layered.models.params_for("xgboost", "2%")
    assert {k: params[k] for k in report.best_params} == report.best_params
    assert params["n_estimators"] == FAST["n_estimators"]  # parameters outside the space keep their values
    assert set(report.best_params) == set(SEARCH_SPACES["xgboost"])
    assert get_model("xgboost", **params).get_hyperparameters()["learning_rate"] == report.best_params["learning_rate"]


def test_the_report_scores_the_outer_folds_beside_climatology(first_run: tuple[Path, TuneReport]) -> None:
    _, report = first_run
    (outer,) = report.outer
    assert outer.rows > 0 and 0 < outer.effective_rows <= outer.rows
    for interval in (outer.tuned_minus_default, outer.tuned_minus_climatology, outer.default_minus_climatology):
        assert interval.lower <= interval.estimate <= interval.upper
    assert outer.tuned_minus_climatology.estimate == pytest.approx(outer.log_loss_tuned - outer.log_loss_climatology)
    assert report.default_inner_log_loss is not None and report.best_inner_log_loss <= report.default_inner_log_loss


@pytest.mark.parametrize("outer_folds", [1, 2])
def test_the_outer_folds_lie_after_and_purged_from_every_row_the_search_saw(
        series: list[CandleSeries], settings: Settings, outer_folds: int) -> None:
    options = _options(folds=4, outer_folds=outer_folds)
    datasets = [build_dataset(s, [2], 72) for s in series]
    data = target_folds(datasets, "2%", "xgboost", options, 3_600_000, HORIZON_MS)
    times = data.rows.open_time_ms
    seen = data.seen()
    assert len(data.inner) == 4 - outer_folds and len(data.outer) == outer_folds
    assert seen.any() and np.all(times[seen] + HORIZON_MS < data.outer_start_ms)
    for m in data.outer:
        assert m.test.any() and np.all(times[m.test] >= data.outer_start_ms) and not (m.test & seen).any()
    # the purge did cut something: uncut, the last inner test block holds rows whose label reads outer candles
    folds = make_folds(times, 4, options.initial_train_fraction)
    uncut = fold_masks(data.rows, folds, HORIZON_MS, 24 * 3_600_000, options.calibration_fraction)[3 - outer_folds]
    assert np.any(times[uncut.test] + HORIZON_MS >= data.outer_start_ms)


@pytest.mark.parametrize("family", sorted(SEARCH_SPACES))
def test_every_space_names_constructor_parameters_of_a_family_with_shared_inputs(family: str) -> None:
    """The search pools one copy of inputs per target, built before any trial: right only for a family
    whose inputs do not depend on its hyperparameters (the base ``prepare_data``)."""
    model = get_model(family)
    assert type(model).prepare_data is BasePredictor.prepare_data
    assert set(SEARCH_SPACES[family]) <= set(model.get_hyperparameters())


def test_a_family_without_a_space_is_named_clearly() -> None:
    with pytest.raises(TuningError, match="not tunable yet; tunable: random_forest, xgboost, lightgbm"):
        search_space("hmm_regime")
    with pytest.raises(TuningError, match="unknown model family 'forest'"):
        search_space("forest")


def _write_csv(series: CandleSeries, folder: Path) -> None:
    rows = np.column_stack([series.open_time_ms, series.ohlcv])
    np.savetxt(folder / f"{series.symbol}-1h.csv", rows, delimiter=",", header="open_time_ms,open,high,low,close,volume",
               comments="", fmt=["%d"] + ["%.8f"] * 5)


def test_the_command_tunes_and_refuses_a_bad_family(tmp_path: Path, series: list[CandleSeries]) -> None:
    for one in series:
        _write_csv(one, tmp_path)
    config = tmp_path / "fast.yaml"
    config.write_text("models:\n  families:\n    lightgbm:\n      params: {n_estimators: 30, learning_rate: 0.1, "
                      "early_stopping_rounds: 10, n_jobs: 1}\n", encoding="utf-8")
    common = ["tune", "--data", str(tmp_path), "--study-dir", str(tmp_path / "tune"), "--targets", "2",
              "--config", str(config), "--trials", "1"]
    bad = runner.invoke(app, [*common, "--family", "nope"])
    assert bad.exit_code == 2 and "unknown model family 'nope'" in bad.output
    untunable = runner.invoke(app, [*common, "--family", "lstm"])
    assert untunable.exit_code == 2 and "not tunable yet" in untunable.output
    done = runner.invoke(app, [*common, "--family", "lightgbm"])
    assert done.exit_code == 0, done.output
    assert "outer folds (never searched)" in done.output and "2%: tuned" in done.output
    assert (tmp_path / "tune" / "lightgbm.yaml").is_file() and (tmp_path / "tune" / "lightgbm.db").is_file()
