"""The Optuna study on disk: opened or resumed, its setup checked, trials run over the inner folds.

A study lives in one SQLite file. Resuming (the same name again) adds trials to it, but only when the
setup is the same (family, targets, folds, rows the search sees, ...): trials scored on other rows are
not comparable, so a changed setup is refused rather than mixed in. The sampler's seed moves on with
the number of trials already run, so a resumed search does not propose its first trials again. The
configured parameters are the study's first trial, so the search starts from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from bse_predict.evaluation.fold_predictions import FamilySplit
from bse_predict.tuning.errors import TuningError
from bse_predict.tuning.fold_scores import family_fold_loss
from bse_predict.tuning.nested_folds import TargetFolds
from bse_predict.tuning.spaces import defaults_inside, suggest

__all__ = ["DEFAULT_ATTR", "open_study", "enqueue_configured", "make_objective", "default_trial_value"]

DEFAULT_ATTR = "configured_params"
"""User attribute that marks the trial of the configured parameters."""
_SETUP_ATTR = "setup"
_STARTUP_TRIALS = 5


def open_study(path: Path, name: str, setup: dict[str, Any], seed: int, prune: bool) -> optuna.Study:
    """The study ``name`` in the SQLite file ``path``, created or resumed; refuses another setup."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}", direction="minimize",
                                load_if_exists=True)
    setup = json.loads(json.dumps(setup))
    stored = study.user_attrs.get(_SETUP_ATTR)
    if stored is None:
        study.set_user_attr(_SETUP_ATTR, setup)
    elif stored != setup:
        changed = sorted(k for k in set(stored) | set(setup) if stored.get(k) != setup.get(k))
        raise TuningError(f"study {name!r} in {path} was run with another setup (differs in: {', '.join(changed)}); "
                          "give another --study-name to start a new study")
    study.sampler = optuna.samplers.TPESampler(n_startup_trials=_STARTUP_TRIALS, seed=seed + len(study.trials))
    study.pruner = (optuna.pruners.MedianPruner(n_startup_trials=_STARTUP_TRIALS, n_warmup_steps=0) if prune
                    else optuna.pruners.NopPruner())
    return study


def enqueue_configured(study: optuna.Study, space: Mapping[str, BaseDistribution], params: Mapping[str, Any]) -> None:
    """A new study's first trial: the configured values that lie inside the space."""
    if not study.trials:
        study.enqueue_trial(defaults_inside(space, params), user_attrs={DEFAULT_ATTR: True})


def default_trial_value(study: optuna.Study) -> float | None:
    """The objective of the configured parameters' trial, when it completed."""
    for trial in study.trials:
        if trial.user_attrs.get(DEFAULT_ATTR) and trial.state == optuna.trial.TrialState.COMPLETE:
            return trial.value
    return None


def _objective_value(losses: Sequence[list[np.ndarray]]) -> float:
    """Mean over targets of each target's pooled log loss on the inner test rows scored so far."""
    return float(np.mean([np.concatenate(parts).mean() for parts in losses if parts]))


def make_objective(family: str, space: Mapping[str, BaseDistribution], base_params: Mapping[str, dict[str, Any]],
                   targets: Sequence[TargetFolds], split: FamilySplit) -> Callable[[optuna.Trial], float]:
    """The trial's mean out-of-fold log loss over the inner folds of every target; reported after each
    fold, so that the pruner can stop a hopeless trial."""

    def objective(trial: optuna.Trial) -> float:
        searched = suggest(trial, space)
        losses: list[list[np.ndarray]] = [[] for _ in targets]
        step = 0
        for parts, data in zip(losses, targets, strict=True):
            params = {**base_params[data.rows.target], **searched}
            for m in data.inner:
                parts.append(family_fold_loss(family, params, data.X, data.rows, m, split))
                trial.report(_objective_value(losses), step)
                step += 1
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return _objective_value(losses)

    return objective
