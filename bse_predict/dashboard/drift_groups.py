"""Drift per feature family (core, no IO): the features' PSI, grouped by the family that names them.

A feature column is ``{family}_{suffix}`` (:data:`~bse_predict.features.definitions.FEATURE_FAMILIES`:
``rsi``, ``volatility``, ``range_position``, ``volume_ratio``, ...); a family's periods drift together
when the market changes regime, so the operations page shows one row per family: its largest and mean
PSI over the features judged (those with ``drift.min_rows`` live rows), the feature with the largest,
and how many are above ``drift.psi_threshold``. The PSI itself comes from
:func:`~bse_predict.monitoring.drift.feature_psi`, computed by the drift monitor's reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from bse_predict.features.definitions import FEATURE_FAMILY_OF

__all__ = ["GroupPsi", "group_psi"]

OTHER = "other"
"""The family of a column the feature definition does not name (a version trained on older features)."""


class GroupPsi(NamedTuple):
    family: str
    features: int  # judged features of the family
    max_psi: float
    mean_psi: float
    worst: str  # the feature with max_psi
    over: int  # features above the threshold


def group_psi(psi_by_feature: Mapping[str, float], threshold: float) -> list[GroupPsi]:
    """One :class:`GroupPsi` per family with a judged feature, the largest PSI first."""
    families: dict[str, dict[str, float]] = {}
    for name, value in psi_by_feature.items():
        families.setdefault(FEATURE_FAMILY_OF.get(name, OTHER), {})[name] = value
    groups = []
    for family, values in families.items():
        worst = max(values, key=lambda name: values[name])
        groups.append(GroupPsi(family, len(values), values[worst], sum(values.values()) / len(values), worst,
                               sum(value > threshold for value in values.values())))
    return sorted(groups, key=lambda g: (-g.max_psi, g.family))
