"""The search space of every tunable family, declared in one place as Optuna distributions.

Each space names constructor parameters of the family (``models.families.<family>.params``); the
parameters it leaves out keep their configured values. Ranges contain the shipped defaults, so the
defaults can be tried first (:func:`defaults_inside`). The boosters keep ``n_estimators`` fixed:
early stopping on their purged validation slice picks the number of rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial

from bse_predict.families import list_models
from bse_predict.tuning.errors import TuningError

__all__ = ["SEARCH_SPACES", "search_space", "defaults_inside", "suggest"]

SEARCH_SPACES: dict[str, dict[str, BaseDistribution]] = {
    "random_forest": {
        "n_estimators": IntDistribution(100, 300, step=50),
        "max_depth": IntDistribution(3, 14),
        "min_samples_leaf": IntDistribution(10, 500, log=True),
        "max_features": CategoricalDistribution(["sqrt", "log2", 0.2, 0.35, 0.5]),
        "max_samples": FloatDistribution(0.1, 0.5),
    },
    "xgboost": {
        "max_depth": IntDistribution(2, 6),
        "learning_rate": FloatDistribution(0.01, 0.15, log=True),
        "subsample": FloatDistribution(0.4, 1.0),
        "colsample_bytree": FloatDistribution(0.2, 1.0),
        "min_child_weight": FloatDistribution(5.0, 500.0, log=True),
        "reg_lambda": FloatDistribution(0.1, 100.0, log=True),
    },
    "lightgbm": {
        "num_leaves": IntDistribution(4, 31),
        "max_depth": IntDistribution(2, 6),
        "learning_rate": FloatDistribution(0.01, 0.15, log=True),
        "subsample": FloatDistribution(0.4, 1.0),
        "colsample_bytree": FloatDistribution(0.2, 1.0),
        "min_child_samples": IntDistribution(20, 1000, log=True),
        "reg_lambda": FloatDistribution(0.1, 100.0, log=True),
    },
}


def search_space(family: str) -> dict[str, BaseDistribution]:
    """The family's space; a clear error for a family that is unknown or has no space yet."""
    if family not in list_models():
        raise TuningError(f"unknown model family {family!r}; known: {', '.join(list_models())}")
    if family not in SEARCH_SPACES:
        raise TuningError(f"family {family!r} is not tunable yet; tunable: {', '.join(SEARCH_SPACES)}")
    return SEARCH_SPACES[family]


def _inside(distribution: BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(distribution, IntDistribution) and (isinstance(value, bool) or not isinstance(value, int)):
        return False
    if isinstance(distribution, FloatDistribution | IntDistribution) and isinstance(value, int | float):
        return distribution.low <= value <= distribution.high
    return False


def defaults_inside(space: Mapping[str, BaseDistribution], params: Mapping[str, Any]) -> dict[str, Any]:
    """The configured values of the space's parameters that lie inside it (the first trial tries them)."""
    return {name: params[name] for name, distribution in space.items()
            if name in params and _inside(distribution, params[name])}


def suggest(trial: Trial, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """One value of every parameter of ``space``, asked of the trial (its sampler chooses)."""
    params: dict[str, Any] = {}
    for name, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, distribution.choices)
        elif isinstance(distribution, IntDistribution):
            params[name] = trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                             log=distribution.log)
        elif isinstance(distribution, FloatDistribution):
            params[name] = trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                                               log=distribution.log)
        else:
            raise TuningError(f"parameter {name!r}: unsupported distribution {type(distribution).__name__}")
    return params
