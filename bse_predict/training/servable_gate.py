"""Never worse than knowing nothing: training refuses to mark a model servable when its holdout log
loss is significantly worse than climatology's.

For each exported entry and target, on the version's holdout rows (the newest
share of every symbol, purged, never used to fit a member or a combiner): per
row, the entry's log loss minus the log loss of climatology (the training
rows' class shares, :func:`bse_predict.scoring.probabilities.climatology_shares`). The mean
difference gets the paired block bootstrap of the evaluation
(:func:`bse_predict.evaluation.bootstrap.paired_bootstrap`, blocks of whole days, at least the
label horizon, because labels overlap and symbols move together). When the
whole interval lies above 0 the entry is *significantly worse* than knowing
nothing and is not servable; otherwise it is. With fewer blocks than ``min_blocks`` the
interval cannot reach its level (every block worse by chance alone is too likely), so the
entry is servable and its reason says it was not judged. The probabilities scored are the
served graph's own (a served model carries no calibrator: what is scored is
what would be published).
"""

from __future__ import annotations

import math

import numpy as np

from configs.models import ServableGateConfig
from bse_predict.evaluation.bootstrap import day_blocks, paired_bootstrap
from bse_predict.scoring.probabilities import climatology_shares, row_log_loss
from bse_predict.serving.manifest import ModelEntry, ServableRecord

__all__ = ["servable_verdict", "gate_block_days", "refused", "describe"]


def gate_block_days(config: ServableGateConfig, horizon_hours: int) -> int:
    """The bootstrap's block length: the configured days, else the horizon rounded up to whole days."""
    return config.block_days or max(1, math.ceil(horizon_hours / 24))


def servable_verdict(probabilities: np.ndarray, labels: np.ndarray, train_labels: np.ndarray,
                     open_time_ms: np.ndarray, config: ServableGateConfig, block_days: int) -> ServableRecord:
    """The verdict on one entry's holdout rows (see the module docstring)."""
    if not config.enabled:
        return ServableRecord(servable=True, reason="not checked: training.servable_gate.enabled is false")
    if len(labels) == 0:
        return ServableRecord(servable=True, reason="not checked: no holdout rows (training.holdout_fraction 0)")
    loss = row_log_loss(probabilities, labels)
    reference = row_log_loss(np.tile(climatology_shares(train_labels), (len(labels), 1)), labels)
    blocks = day_blocks(open_time_ms, block_days)
    difference, _ = paired_bootstrap(loss, reference, blocks, config.bootstrap_samples, config.confidence_level,
                                     config.seed)
    block_count = int(blocks.max()) + 1
    level = f"{config.confidence_level:.0%}"
    numbers = (f"holdout log loss {loss.mean():.4f} vs climatology {reference.mean():.4f}, difference "
               f"{difference.estimate:+.4f} [{difference.lower:+.4f}, {difference.upper:+.4f}] at {level} "
               f"({len(labels)} rows, {block_count} blocks of {block_days} days)")
    judged = block_count >= config.min_blocks
    worse = judged and difference.lower > 0
    if not judged:
        reason = (f"servable, not judged: fewer holdout blocks than training.servable_gate.min_blocks "
                  f"({config.min_blocks}): {numbers}")
    elif worse:
        reason = f"NOT SERVABLE: significantly worse than climatology: {numbers}"
    else:
        reason = f"servable: not significantly worse than climatology: {numbers}"
    return ServableRecord(servable=not worse, reason=reason, log_loss=float(loss.mean()),
                          log_loss_climatology=float(reference.mean()),
                          difference=(difference.estimate, difference.lower, difference.upper),
                          confidence_level=config.confidence_level, rows=len(labels),
                          blocks=block_count, block_days=block_days)


def refused(entries: tuple[ModelEntry, ...] | list[ModelEntry]) -> list[ModelEntry]:
    """The entries training refused to mark servable."""
    return [e for e in entries if e.servable is not None and not e.servable.servable]


def describe(entry: ModelEntry) -> str:
    """One line: the entry, its target and its verdict."""
    verdict = entry.servable.reason if entry.servable is not None else "not checked"
    return f"{entry.name} {entry.target}: {verdict}"
