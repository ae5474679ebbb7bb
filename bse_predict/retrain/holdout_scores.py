"""The live and the new version scored on the same holdout rows, as the worker would serve them.

Each holdout row's window is cut from the same gap-filled grid the trainer
builds (:func:`bse_predict.training.dataset.build_dataset`), and each model
answers through its served runner (:func:`bse_predict.serving.model_set.predict_windows`:
the worker's input building and ONNX sessions), so the gate compares what the
fleet would publish, not the trainer's native estimators. Per row and target:
the log loss of the outcome (:func:`bse_predict.scoring.probabilities.row_log_loss`,
the one home of the formula). No IO, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bse_predict.candles.files import CandleSeries
from bse_predict.labels.first_touch import UNKNOWN
from bse_predict.retrain.errors import RetrainError
from bse_predict.retrain.holdout import RetrainWindow, final_holdout_rows
from bse_predict.scoring.probabilities import row_log_loss
from bse_predict.serving.model_set import Predictor, predict_windows
from bse_predict.serving.signals import target_label
from bse_predict.training.dataset import FIRST_ROW, build_dataset

__all__ = ["HoldoutScores", "holdout_history_ms", "score_holdout"]


@dataclass(frozen=True)
class HoldoutScores:
    """One entry per (holdout candle, target): its open time, target, and both models' log loss."""

    open_time_ms: np.ndarray
    target: np.ndarray
    live_loss: np.ndarray
    new_loss: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.open_time_ms)

    def per_target(self) -> dict[str, dict[str, float]]:
        """Mean log loss of each model and the row count, per target."""
        out = {}
        for target in sorted(set(self.target.tolist())):
            mask = self.target == target
            out[target] = {"rows": int(mask.sum()), "live_log_loss": float(self.live_loss[mask].mean()),
                           "new_log_loss": float(self.new_loss[mask].mean())}
        return out


def holdout_history_ms(step_ms: int) -> int:
    """How far before the holdout the candles must reach so that its first row has every input's lookback."""
    return FIRST_ROW * step_ms


def _windows(grid_ohlcv: np.ndarray, grid_rows: np.ndarray, length: int) -> np.ndarray:
    """float64[n, length, 5]: the gap-filled window ending at each grid row."""
    return sliding_window_view(grid_ohlcv, (length, grid_ohlcv.shape[1]))[grid_rows - length + 1, 0]


def _checked(model: Predictor, answer: dict[str, np.ndarray], targets: Sequence[str]) -> dict[str, np.ndarray]:
    """``answer``, or RetrainError when a row is not a probability triple (a failed member, a broken export)."""
    for target in targets:
        p = answer[target]
        bad = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1) | (np.abs(p.sum(axis=1) - 1.0) > 1e-3)
        if bad.any():
            raise RetrainError("gate", f"version {model.version} answered {int(bad.sum())} of {len(p)} holdout rows "
                                       f"of target {target} with NaN or invalid probabilities")
    return answer


def score_holdout(series: Sequence[CandleSeries], window: RetrainWindow, live: Predictor, new: Predictor,
                  targets_pct: Sequence[float], horizon_candles: int, batch_rows: int = 256) -> HoldoutScores:
    """Both models' log loss on every final holdout row of ``series`` (each clipped to start at least
    :func:`holdout_history_ms` before the holdout), on the targets both answer, in batches of
    ``batch_rows`` (the worker's ``batch_max_events``). A row either model answers with NaN or an
    invalid triple stops the gate (RetrainError): a comparison cannot be made on it."""
    targets = [t for t in (target_label(p) for p in targets_pct) if t in live.targets and t in new.targets]
    if not targets:
        raise RetrainError("gate", f"the live version {live.version} answers {', '.join(live.targets)} and the new "
                                   f"one {', '.join(new.targets)}: no common target to compare on")
    length = max(live.min_history, new.min_history)
    step_ms = series[0].step_ms if series else 0
    parts: dict[str, list[np.ndarray]] = {"time": [], "target": [], "live": [], "new": []}
    for one in series:
        data = build_dataset(one, targets_pct, horizon_candles)
        final = final_holdout_rows(data.open_time_ms, window, horizon_candles * step_ms)
        final &= data.grid_rows >= length - 1
        if not final.any():
            continue
        times = data.open_time_ms[final]
        windows = _windows(data.grid_ohlcv, data.grid_rows[final], length)
        answers: dict[str, list[dict[str, np.ndarray]]] = {"live": [], "new": []}
        for start in range(0, len(times), batch_rows):
            batch, batch_times = windows[start:start + batch_rows], times[start:start + batch_rows]
            for name, model in (("live", live), ("new", new)):
                answer = predict_windows(model, np.ascontiguousarray(batch[:, -model.min_history:]), batch_times)
                answers[name].append(_checked(model, answer, targets))
        for target in targets:
            labels = data.labels[target][final]
            known = labels != UNKNOWN
            parts["time"].append(times[known])
            parts["target"].append(np.full(int(known.sum()), target))
            for name in ("live", "new"):
                p = np.concatenate([a[target] for a in answers[name]])
                parts[name].append(row_log_loss(p[known], labels[known]))
    if not parts["time"]:
        return HoldoutScores(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=str), np.zeros(0), np.zeros(0))
    return HoldoutScores(np.concatenate(parts["time"]), np.concatenate(parts["target"]),
                         np.concatenate(parts["live"]), np.concatenate(parts["new"]))
