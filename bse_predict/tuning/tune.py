"""``bse-predict tune``: a hyperparameter search over purged walk-forward folds, scored honestly.

Candle series -> per-symbol datasets -> per target: pooled rows and nested folds
(:mod:`bse_predict.tuning.nested_folds`) -> an Optuna study on disk whose objective is the mean
out-of-fold log loss on the inner (earlier) folds (:mod:`bse_predict.tuning.study`) -> the best
parameters scored beside the configured ones and climatology on the outer (later) folds, which the
search never read (:mod:`bse_predict.tuning.outer`) -> ``<study>.yaml`` (the config block) and
``<study>.json`` (:class:`TuneReport`) beside ``<study>.db`` in the study folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from bse_predict.evaluation.fold_predictions import FamilySplit
from bse_predict.serving.signals import target_label
from bse_predict.training.dataset import build_dataset
from bse_predict.tuning.config_block import config_block, write_config_block
from bse_predict.tuning.errors import TuningError
from bse_predict.tuning.fold_scores import climatology_fold_loss
from bse_predict.tuning.nested_folds import TargetFolds, target_folds
from bse_predict.tuning.outer import score_outer
from bse_predict.tuning.schema import TuneOptions, TuneReport
from bse_predict.tuning.spaces import search_space
from bse_predict.tuning.study import default_trial_value, enqueue_configured, make_objective, open_study
from bse_predict.tuning.summary import summary_lines

__all__ = ["tune", "study_files"]


def study_files(study_dir: Path, study_name: str) -> tuple[Path, Path, Path]:
    """(SQLite study, YAML config block, JSON report) of a study."""
    return tuple(study_dir / f"{study_name}{suffix}" for suffix in (".db", ".yaml", ".json"))  # type: ignore[return-value]


def tune(series: Sequence[CandleSeries], settings: Settings, options: TuneOptions, study_dir: Path,
         show_progress: bool = True) -> TuneReport:
    """Add ``options.trials`` trials to the study, score the best on the outer folds, write the block and
    the report; return the report."""
    space = search_space(options.family)
    if not series:
        raise TuningError("no candle series to tune on")
    market = settings.market
    horizon_ms = market.horizon_hours * 3_600_000
    split = FamilySplit(options.calibrator, settings.training.validation_fraction, horizon_ms)
    max_rows = options.max_rows_per_symbol or settings.training.max_rows_per_symbol
    targets = [target_label(pct) for pct in market.targets_pct]
    configured = {t: settings.models.params_for(options.family, t) if options.family in settings.models.families
                  else {} for t in targets}
    study_file, config_file, report_file = study_files(study_dir, options.study_name)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not show_progress) as progress:
        build = progress.add_task("features and labels", total=len(series))
        datasets = []
        for one in series:
            datasets.append(build_dataset(one, market.targets_pct, market.horizon_candles, max_rows))
            progress.advance(build)
        data = [target_folds(datasets, t, options.family, options, market.timeframe_ms, horizon_ms) for t in targets]
        study = open_study(study_file, options.study_name, _setup(options, data, market.horizon_hours),
                           options.seed, options.prune)
        enqueue_configured(study, space, configured[targets[0]])
        _run_trials(study, make_objective(options.family, space, configured, data, split), options.trials, progress)
        best = study.best_trial
        outer_task = progress.add_task("outer folds: tuned, configured, climatology",
                                       total=len(data) * options.outer_folds)
        outer = tuple(score_outer(options.family, {**configured[d.rows.target], **best.params},
                                  configured[d.rows.target], d, split, options, market.horizon_hours,
                                  lambda: progress.advance(outer_task)) for d in data)
    states = [t.state for t in study.trials]
    report = TuneReport(
        family=options.family, study_name=options.study_name, study_file=str(study_file),
        config_file=str(config_file), targets=tuple(targets), options=options, trials_total=len(states),
        trials_complete=states.count(optuna.trial.TrialState.COMPLETE),
        trials_pruned=states.count(optuna.trial.TrialState.PRUNED), best_trial=best.number,
        best_params=dict(best.params), best_inner_log_loss=float(best.value),
        default_inner_log_loss=default_trial_value(study), climatology_inner_log_loss=_inner_climatology(data),
        outer=outer)
    write_config_block(config_file, config_block(settings, options.family, dict(best.params)), "\n".join(summary_lines(report)))
    report_file.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return report


def _run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], trials: int,
                progress: Progress) -> None:
    done = len(study.trials)
    task = progress.add_task(f"trials (study has {done})", total=trials)

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        best = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        progress.update(task, advance=1, description=f"trials: best inner log loss {min(best):.4f}" if best else None)

    study.optimize(objective, n_trials=trials, callbacks=[advance])
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise TuningError(f"study {study.study_name!r} has no completed trial")


def _setup(options: TuneOptions, data: Sequence[TargetFolds], horizon_hours: int) -> dict[str, object]:
    """What makes two runs' trials comparable: the family, the folds and the rows the search sees."""
    kept = options.model_dump(include={"family", "folds", "outer_folds", "initial_train_fraction", "embargo_hours",
                                       "calibration_fraction", "calibrator"})
    rows = {d.rows.target: {"symbols": list(d.rows.symbols), "seen_rows": int(d.seen().sum()),
                            "first_ms": int(d.rows.open_time_ms.min()), "outer_start_ms": d.outer_start_ms}
            for d in data}
    return {**kept, "horizon_hours": horizon_hours, "rows": rows}


def _inner_climatology(data: Sequence[TargetFolds]) -> float:
    return float(np.mean([np.concatenate([climatology_fold_loss(d.rows, m) for m in d.inner]).mean() for d in data]))
