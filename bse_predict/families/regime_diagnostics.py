"""How well the regime model's states identify market regimes: the evaluation report's diagnostics
(occupancy, persistence, forward return and volatility per regime, stability across refits).
See docs/models/hmm.md for what the numbers mean and what they showed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bse_predict.families.regime_model import RETURN_FIELD, RegimeModel, match_states

__all__ = ["regime_diagnostics"]


def _run_lengths(states: np.ndarray, k: int) -> dict[int, float]:
    edges = np.flatnonzero(np.diff(states)) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [len(states)]]))
    return {s: float(lengths[states[starts] == s].mean()) if np.any(states[starts] == s) else float("nan")
            for s in range(k)}


def _separation(values: np.ndarray, states: np.ndarray, sample: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    from scipy.stats import kruskal

    means = {name: float(values[states == s].mean()) if np.any(states == s) else float("nan")
             for s, name in enumerate(names)}
    groups = [values[sample][states[sample] == s] for s in range(len(names))]
    groups = [g for g in groups if len(g) >= 2]
    p = float(kruskal(*groups).pvalue) if len(groups) >= 2 else float("nan")
    return {"mean": means, "kruskal_p": p, "n_samples": int(sum(len(g) for g in groups))}


def regime_diagnostics(model: RegimeModel, history: np.ndarray, training: Sequence[np.ndarray] | None = None,
                       refit_seed: int | None = None, horizon_hours: int = 24) -> dict[str, Any]:
    """How well the states identify regimes on a contiguous hourly history float[T, 4].

    The history is filtered in one causal pass (argmax of α_t = the regime at hour t).
    - ``occupancy``: share of hours per regime.
    - ``persistence``: diagonal of A, the dwell time it implies (1 / (1 - A_ii)) and the
      mean observed run of the filtered argmax, in hours.
    - ``forward_return``/``forward_volatility``: sum of log returns and realised volatility
      (root of the summed squared log returns) over the next ``horizon_hours``; means per
      regime over every hour, Kruskal–Wallis p-value on non-overlapping hours (every
      ``horizon_hours``-th) so overlapping horizons do not inflate the evidence.
    - ``stability`` (when ``training`` is given): refit on ``training`` with another seed,
      align the states (:func:`align_states`), and report the share of hours whose argmax
      regime is the same, and whether the refit's own names agreed with the matching.
    """
    names = model.state_names_
    k = model.n_states
    states = np.argmax(model.filter(model.observations(history)), axis=1)
    returns = np.asarray(history, dtype=np.float64)[:, RETURN_FIELD]
    cum = np.concatenate([[0.0], np.cumsum(returns)])
    cum_sq = np.concatenate([[0.0], np.cumsum(returns * returns)])
    n = len(returns) - horizon_hours
    if n <= 0:
        raise ValueError(f"the history needs more than {horizon_hours} hours")
    forward_return = cum[horizon_hours + 1:] - cum[1:n + 1]
    forward_vol = np.sqrt(np.maximum(cum_sq[horizon_hours + 1:] - cum_sq[1:n + 1], 0.0))
    sample = np.zeros(n, dtype=bool)
    sample[::horizon_hours] = True
    dwell = _run_lengths(states, k)
    diagonal = np.diag(model.transmat_)
    report: dict[str, Any] = {
        "states": list(names),
        "hours": int(len(states)),
        "occupancy": {name: float(np.mean(states == s)) for s, name in enumerate(names)},
        "persistence": {
            "transition_diagonal": {name: float(diagonal[s]) for s, name in enumerate(names)},
            "expected_dwell_hours": {name: float(1.0 / (1.0 - diagonal[s])) for s, name in enumerate(names)},
            "mean_dwell_hours": {name: dwell[s] for s, name in enumerate(names)},
        },
        f"forward_return_{horizon_hours}h": _separation(forward_return, states[:n], sample, names),
        f"forward_volatility_{horizon_hours}h": _separation(forward_vol, states[:n], sample, names),
    }
    if training is not None:
        seed = model.seed + 1 if refit_seed is None else refit_seed
        refit = RegimeModel(**{**model.get_params(), "seed": seed}).fit(training)
        perm = match_states(model, refit)
        aligned = refit.permuted(perm, names=names)
        refit_states = np.argmax(aligned.filter(aligned.observations(history)), axis=1)
        report["stability"] = {
            "refit_seed": seed,
            "same_regime_share": float(np.mean(refit_states == states)),
            "names_agree": [refit.state_names_[j] for j in perm] == list(names),
        }
    return report
