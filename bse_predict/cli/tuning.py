"""``bse-predict tune``: a hyperparameter search for one family over purged walk-forward folds. The search
modules (Optuna, scikit-learn) are imported inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bse_predict.cli.shared import ConfigOption, DataOption, HorizonOption, TargetsOption, command_settings, console, one_line_errors

if TYPE_CHECKING:
    from bse_predict.tuning.schema import TuneReport

__all__ = ["tune"]


@one_line_errors
def tune(
    data: DataOption,
    family: Annotated[str, typer.Option("--family", help="The family to tune: random_forest, xgboost or lightgbm.")],
    config: ConfigOption = None,
    targets: TargetsOption = None,
    horizon_hours: HorizonOption = None,
    trials: Annotated[int, typer.Option("--trials", help="Trials to add to the study (a study of the same name resumes).")] = 20,
    study_dir: Annotated[Path, typer.Option("--study-dir", help="Folder of the study (SQLite), its config block and report.")] = Path("var/tune"),
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study name (default: the family).")] = None,
    folds: Annotated[int, typer.Option("--folds", help="Expanding walk-forward test blocks, inner and outer.")] = 4,
    outer_folds: Annotated[int, typer.Option("--outer-folds", help="The last blocks, never seen by the search, that score it.")] = 1,
    max_rows: Annotated[int | None, typer.Option("--max-rows", help="Use the newest N rows per symbol.")] = None,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Stop trials worse than the median early.")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampler and the bootstrap.")] = 0,
) -> None:
    """Search a family's hyperparameters with Optuna: the objective is the calibrated out-of-fold log loss on
    the earlier walk-forward folds; the best parameters are then scored against the configured ones and
    climatology on the later folds, which the search never saw (nested, purged by the label horizon).

    Writes STUDY_DIR/NAME.db (the study; run again to add trials), NAME.yaml and NAME.json (the report).

    NAME.yaml holds the best parameters as a models.families block: pass it as --config, or paste it.

    Exits 2 with a one-line reason on bad input, an unknown or untunable family, or a changed setup."""
    from bse_predict.candles.files import read_candle_files
    from bse_predict.tuning.schema import TuneOptions
    from bse_predict.tuning.spaces import search_space
    from bse_predict.tuning.tune import tune as run_tune

    settings = command_settings(config, targets, horizon_hours, families=True)
    search_space(family)
    options = TuneOptions(family=family, study_name=study_name or family, trials=trials, folds=folds,
                          outer_folds=outer_folds, max_rows_per_symbol=max_rows, prune=prune, seed=seed)
    series = read_candle_files(data, settings.market.timeframe)
    _print_report(run_tune(series, settings, options, study_dir))


def _print_report(report: TuneReport) -> None:
    from bse_predict.tuning.summary import summary_lines

    for line in summary_lines(report):
        console.print(line, markup=False, highlight=False)
    console.print(f"config block written to {report.config_file}", markup=False, highlight=False)
