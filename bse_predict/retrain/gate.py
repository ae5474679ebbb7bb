"""The gate before a shadow: the new version must not be significantly worse than the live one.

On the holdout rows both answered (:class:`~bse_predict.retrain.holdout_scores.HoldoutScores`,
every target pooled), the per-row log-loss difference ``new - live`` gets a
paired block-bootstrap interval (:func:`bse_predict.evaluation.bootstrap.paired_bootstrap`,
the evaluation's own, with blocks of ``block_days`` whole UTC days, at least the
label horizon: overlapping labels and co-moving symbols stay inside a block).
The new version is refused when the interval's lower bound is above
``max_loss_increase_nats`` (0 by default: worse beyond the interval's doubt).
It need not be better: the sequential test on live outcomes decides that.
A holdout with fewer than ``min_rows`` rows is no evidence either way: refused. So is a
version whose served model training marked not servable (:mod:`bse_predict.serving.servable`),
before anything is scored: no worker would serve it.
"""

from __future__ import annotations

from dataclasses import dataclass

from configs.settings import RetrainGateConfig
from bse_predict.evaluation.bootstrap import comparison_verdict, day_blocks, paired_bootstrap
from bse_predict.evaluation.schema import Interval
from bse_predict.retrain.holdout_scores import HoldoutScores

__all__ = ["GateDecision", "gate_decision"]


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    rows: int
    blocks: int
    live_log_loss: float
    new_log_loss: float
    difference: Interval | None
    """Mean log loss per row, new minus live (nats), with its interval; None when too few rows."""
    per_target: dict[str, dict[str, float]]

    @classmethod
    def not_servable(cls, problem: str) -> GateDecision:
        """Refused before the holdout: training marked the new version's served model not servable."""
        return cls(False, f"refused, not servable: {problem}", 0, 0, float("nan"), float("nan"), None, {})

    def fields(self) -> dict[str, object]:
        """The decision as fields of a ``control.events`` record."""
        difference = None if self.difference is None else {
            "estimate": self.difference.estimate, "lower": self.difference.lower, "upper": self.difference.upper}
        return {"passed": self.passed, "rows": self.rows, "blocks": self.blocks, "live_log_loss": self.live_log_loss,
                "new_log_loss": self.new_log_loss, "loss_difference_nats": difference, "per_target": self.per_target}


def gate_decision(scores: HoldoutScores, config: RetrainGateConfig, min_rows: int) -> GateDecision:
    """Pass or refuse the new version on ``scores``; the reason says why in one line."""
    per_target = scores.per_target()
    live_mean = float(scores.live_loss.mean()) if scores.rows else float("nan")
    new_mean = float(scores.new_loss.mean()) if scores.rows else float("nan")
    if scores.rows < min_rows:
        return GateDecision(False, f"{scores.rows} holdout rows, fewer than retrain.min_holdout_rows ({min_rows}): "
                                   "no evidence either way", scores.rows, 0, live_mean, new_mean, None, per_target)
    blocks = day_blocks(scores.open_time_ms, config.block_days)
    difference, improvement = paired_bootstrap(scores.new_loss, scores.live_loss, blocks, config.samples,
                                               config.confidence_level, config.seed)
    margin = config.max_loss_increase_nats
    ci = (f"new - live log loss {difference.estimate:+.4f} nats per row "
          f"[{difference.lower:+.4f}, {difference.upper:+.4f}] at {config.confidence_level:.0%}, "
          f"{scores.rows} rows in {int(blocks.max()) + 1} blocks of {config.block_days} d")
    passed = difference.lower <= margin
    bound = "0" if margin == 0 else f"{margin:+g}"
    verdict = comparison_verdict(improvement)
    reason = (f"not significantly worse ({verdict}): {ci}" if passed
              else f"refused, the interval's lower bound is above {bound} ({verdict}): {ci}")
    return GateDecision(passed, reason, scores.rows, int(blocks.max()) + 1, live_mean, new_mean, difference, per_target)
