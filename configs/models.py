"""The models: the zoo of families and which one serves, how training splits the data, when a
prediction is a signal, and the backtest's position rule. Also ``purge_rows: horizon``, the one
parameter value filled in at load (:class:`configs.settings.Settings` does it, knowing the market)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from configs.base import FrozenBlock

__all__ = ["PURGE_THE_HORIZON", "TargetThresholds", "SignalThresholds", "BacktestConfig", "FamilyConfig",
           "ModelConfig", "ServableGateConfig", "TrainingConfig", "fill_the_horizon", "find_purge_rows"]

PURGE_THE_HORIZON = "horizon"
"""``purge_rows: horizon`` in a family's params: replaced at load by ``market.horizon_candles``."""


class TargetThresholds(FrozenBlock):
    strong: float = Field(0.65, gt=0.5, le=1.0)
    normal: float = Field(0.56, gt=0.5, le=1.0)


class SignalThresholds(FrozenBlock):
    """Confidence thresholds (``strong``/``normal`` for every target unless ``per_target`` names it),
    the optional rule that a signal needs a positive expected value after costs, and those costs
    (one side each, in percent: a round trip pays 2 × (taker fee + slippage); the backtest charges
    the same)."""

    strong: float = Field(0.65, gt=0.5, le=1.0)
    normal: float = Field(0.56, gt=0.5, le=1.0)
    per_target: dict[str, TargetThresholds] = {}
    require_positive_ev: bool = False
    taker_fee_pct: float = Field(0.05, ge=0.0)
    slippage_pct: float = Field(0.02, ge=0.0)

    def for_target(self, target: str | None) -> TargetThresholds:
        chosen = self.per_target.get(target) if target is not None else None
        return chosen or TargetThresholds(strong=self.strong, normal=self.normal)

    @property
    def round_trip_cost_pct(self) -> float:
        return 2.0 * (self.taker_fee_pct + self.slippage_pct)


class BacktestConfig(FrozenBlock):
    max_open_per_symbol_target: int = Field(1, gt=0)


class FamilyConfig(FrozenBlock):
    """One model family: on or off, its hyperparameters, and per-target overrides ("5%": {...})."""

    enabled: bool = True
    params: dict[str, Any] = {}
    per_target: dict[str, dict[str, Any]] = {}


class ModelConfig(FrozenBlock):
    """The model zoo: which families train, with which hyperparameters, and which one serves. No Python
    default: the zoo is ``models`` in ``configs/default.yaml``, the one source of the shipped defaults."""

    served: str
    families: dict[str, FamilyConfig]

    def enabled(self) -> list[str]:
        return [name for name, family in self.families.items() if family.enabled]

    def params_for(self, family: str, target: str) -> dict[str, Any]:
        """A family's constructor arguments for ``target``. An ensemble (params with ``members``)
        gets each member's own block as ``member_params`` unless it gives them itself."""
        config = self.families[family]
        params = {**config.params, **config.per_target.get(target, {})}
        if "members" in params and params.get("member_params") is None:
            params["member_params"] = {m: self.params_for(m, target) for m in params["members"] if m in self.families}
        return params


class ServableGateConfig(FrozenBlock):
    """When training refuses to mark a model servable: its holdout log loss minus climatology's, per row,
    has a paired block-bootstrap interval wholly above 0 (significantly worse than knowing nothing)."""

    enabled: bool = True
    block_days: int | None = Field(None, ge=1)
    """Days per bootstrap block; ``None``: the label horizon rounded up to whole days."""
    confidence_level: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(1000, ge=100)
    min_blocks: int = Field(6, ge=2)
    """Fewer holdout blocks than this: no verdict (servable, said so). With n blocks all worse by
    chance with probability 2^-n, 6 is the fewest that keeps that under 2.5%, the one-sided level."""
    seed: int = 0


class TrainingConfig(FrozenBlock):
    max_rows_per_symbol: int | None = None
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    validation_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    servable_gate: ServableGateConfig = ServableGateConfig()
    workers: int | None = Field(None, ge=1)
    """Processes fitting (family, target) pairs side by side; ``None``: one per CPU; 1: in the trainer's process."""

    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


def fill_the_horizon(node: Any, horizon_candles: int) -> Any:
    """``node`` (a ``models`` block, as data) with every ``purge_rows: horizon`` set to ``horizon_candles``
    (and a number from the environment, a string there, made a number)."""
    if isinstance(node, BaseModel):
        node = node.model_dump()
    if not isinstance(node, dict):
        return node
    filled = {key: fill_the_horizon(value, horizon_candles) for key, value in node.items()}
    rows = filled.get("purge_rows")
    if rows == PURGE_THE_HORIZON:
        filled["purge_rows"] = horizon_candles
    elif isinstance(rows, str) and rows.strip().isdigit():
        filled["purge_rows"] = int(rows)
    return filled


def find_purge_rows(node: Any, where: str) -> list[tuple[str, Any]]:
    """(path, value) of every ``purge_rows`` inside ``node`` (nested parameter blocks included)."""
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        found += [(f"{where}.{key}", value)] if key == "purge_rows" else find_purge_rows(value, f"{where}.{key}")
    return found

