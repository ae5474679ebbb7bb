"""One call's explanation: every feature's share of its probabilities, and the line a person reads.

An :class:`Explanation` is the full list (what the dashboard's call view shows):
for each column the model read, its value, whether that value is high or low
against the training rows, and its contribution to p_up, p_down and p_none, in
probability (points of probability: 0.02 is two points). A feature *pushes up*
when it raises p_up more than p_down (its contribution to p_up − p_down is
positive) and *pushes down* when the reverse; the list is ordered by the size
of that push. With the model's base answer and the unexplained part (the
ensemble members that are not trees) the contributions add up to the
published probabilities.

"High" and "low" say on which side of the training median the value lies, from
the version's training bins (``feature_bins`` of the manifest, kept for drift):
high when the value's bin lies wholly above it, low when wholly below; nothing
is said where that is not known (the regime columns, a bin across the median).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bse_predict.candles.schema import ModelRef
from bse_predict.explain.contributions import Contributions
from bse_predict.families.regime_model import regime_feature_label
from bse_predict.features.labels import FEATURE_LABELS
from bse_predict.monitoring.drift import FeatureBins

__all__ = ["ClassShares", "FeatureContribution", "Explanation", "Level", "explain_row", "explanation_line",
           "training_level", "feature_label"]

Level = Literal["high", "low"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClassShares(_Frozen):
    """Three numbers per class, in probability."""

    p_up: float
    p_down: float
    p_none: float

    @classmethod
    def of(cls, values: np.ndarray) -> ClassShares:
        p_up, p_down, p_none = (float(v) for v in values)
        return cls(p_up=p_up, p_down=p_down, p_none=p_none)


class FeatureContribution(ClassShares):
    """One column's value and its contribution to each class probability."""

    name: str
    label: str
    value: float
    level: Level | None

    @property
    def push(self) -> float:
        """Its contribution to p_up − p_down: > 0 pushes up, < 0 pushes down."""
        return self.p_up - self.p_down


class Explanation(_Frozen):
    """A call's explanation: ``base + Σ contributions + unexplained = output``, class by class, where
    ``output`` is the prediction's probabilities for ``target``."""

    prediction_id: str
    target: str
    model: ModelRef
    method: str
    space: Literal["probability"] = "probability"
    base: ClassShares
    unexplained: ClassShares
    output: ClassShares
    contributions: tuple[FeatureContribution, ...]
    """Every column, the largest push first."""


def feature_label(name: str) -> str:
    """The readable label of a column (``member:column`` for a column only one ensemble member reads so)."""
    member, _, column = name.rpartition(":")
    label = FEATURE_LABELS.get(column) or regime_feature_label(column) or column
    return f"{label} ({member})" if member else label


def training_level(value: float, bins: FeatureBins | None) -> Level | None:
    """High or low against the training median (see the module docstring); None when not known."""
    if bins is None or not np.isfinite(value):
        return None
    index = int(np.searchsorted(bins.edges, value, side="right"))
    below = float(sum(bins.expected[:index]))
    if below >= 0.5:
        return "high"
    if below + bins.expected[index] <= 0.5:
        return "low"
    return None


def explain_row(contributions: Contributions, row: int, prediction_id: str, target: str, model: ModelRef,
                bins: Mapping[str, FeatureBins]) -> Explanation:
    """Row ``row`` of ``contributions`` as the explanation of one call."""
    values = contributions.values[row]
    push = values[:, 0] - values[:, 1]
    order = sorted(range(len(contributions.names)), key=lambda f: (-abs(push[f]), contributions.names[f]))
    columns = []
    for f in order:
        name, value = contributions.names[f], float(contributions.inputs[row, f])
        p_up, p_down, p_none = (float(v) for v in values[f])
        columns.append(FeatureContribution(name=name, label=feature_label(name), value=value,
                                           level=training_level(value, bins.get(name)),
                                           p_up=p_up, p_down=p_down, p_none=p_none))
    return Explanation(prediction_id=prediction_id, target=target, model=model, method=contributions.method,
                       base=ClassShares.of(contributions.bias[row]),
                       unexplained=ClassShares.of(contributions.unexplained[row]),
                       output=ClassShares.of(contributions.output()[row]), contributions=tuple(columns))


def _phrase(column: FeatureContribution) -> str:
    return f"{column.label} {column.level}" if column.level else column.label


def explanation_line(explanation: Explanation, per_side: int = 2) -> str | None:
    """"pushing up: 168 h range position high, 24 h volatility low; pushing down: 6 h RSI high": the
    ``per_side`` largest pushes each way; None when no feature moved the call."""
    up = [c for c in explanation.contributions if c.push > 0][:per_side]
    down = [c for c in explanation.contributions if c.push < 0][:per_side]
    sides = [f"pushing {word}: {', '.join(map(_phrase, columns))}" for word, columns in (("up", up), ("down", down))
             if columns]
    return "; ".join(sides) or None
