"""Market regimes: a Gaussian HMM fitted with hmmlearn, read only with the forward filter.

Observations. Each hour of a sequence (:mod:`bse_predict.features.sequences`) gives two
numbers, standardised with the means and standard deviations of the training
history (stored on the model): ``log_return`` and ``log(log_range + 1e-4)``,
the log of the hour's high/low range as a volatility proxy (the log makes the
skewed range nearly Gaussian; the 1 bp floor keeps a flat candle finite).
``close_position`` and ``log_volume_ratio`` are left out: regimes here are
return and volatility states, and two dimensions keep the states readable.

Fitting (hmmlearn, training only). The training windows overlap by 167 hours;
:func:`stitch_windows` turns them back into the non-overlapping hourly history
(a new stretch wherever a row is not the one-hour shift of the previous one),
and ``GaussianHMM.fit`` sees those stretches with ``lengths``. Diagonal
covariances are the default: on BTC futures (43k training hours, K = 4) six
seeds of the diagonal model found the same optimum (argmax regime equal on
91-99% of 10.9k later hours, names always agreeing), while the full model fell
into three different optima (argmax equal on 54-66% of hours between them), for
no better likelihood (docs/models/hmm.md).

States. After fitting, the states are reordered so that index ``i`` always has
the same meaning, and named from their means: for four states ``bear`` (lowest
mean return), ``accumulation`` and ``distribution`` (the two middle returns,
lower and higher volatility) and ``bull`` (highest mean return); for any other
count ``regime_0`` .. ``regime_{K-1}`` by increasing mean return.
:func:`match_states` pairs the states of two fits by the distance of their means
(``linear_sum_assignment``) and :func:`align_states` gives a refit the previous
fit's order and names.

The forward filter (prediction time, numpy only). ``α_t ∝ p(x_t | state) ·
Σ_i α_{t-1}(i) A_ij``, normalised every hour with the log-sum-exp of the log
densities; ``α_t`` uses the hours up to ``t`` and nothing after. A window starts
from the stationary distribution of ``A`` (the model's ``start_``) at its first
hour: a 168-hour window begins at an arbitrary hour, not at the start of a
process. hmmlearn's ``predict``/``predict_proba`` are never used on live data:
Viterbi and the smoothed posteriors read the whole sequence, future included.
``filter(x)[t]`` equals ``to_hmmlearn().predict_proba(x[:t+1])[-1]``
(tests/unit/test_regimes.py).

Transition probabilities are floored at 1e-8 (rows renormalised) so that every
log is finite and the stationary distribution is unique.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from bse_predict.features.sequences import SEQUENCE_FIELDS, SEQUENCE_LENGTH, SEQUENCE_LOOKBACK, sequence_rows

__all__ = [
    "OBSERVATION_NAMES",
    "FOUR_STATE_NAMES",
    "RegimeModel",
    "raw_observations",
    "stitch_windows",
    "history_fields",
    "match_states",
    "align_states",
    "regime_feature_names",
    "regime_features",
    "regime_diagnostics",
    "filter_graph",
    "regime_feature_graph",
    "REGIME_FEATURES_OUTPUT",
]

OBSERVATION_NAMES = ("return_z", "volatility_z")
FOUR_STATE_NAMES = ("bear", "accumulation", "distribution", "bull")
VOLATILITY_FLOOR = 1e-4
TRANSITION_FLOOR = 1e-8
_RETURN = SEQUENCE_FIELDS.index("log_return")
_RANGE = SEQUENCE_FIELDS.index("log_range")
_CHUNK_ROWS = 4096
REGIME_FEATURES_OUTPUT = "regime_features"


def raw_observations(fields: np.ndarray) -> np.ndarray:
    """float[..., T, 4] sequence fields -> float64[..., T, 2]: log_return, log(log_range + 1e-4)."""
    f = np.asarray(fields, dtype=np.float64)
    return np.stack([f[..., _RETURN], np.log(f[..., _RANGE] + VOLATILITY_FLOOR)], axis=-1)


def stitch_windows(sequences: np.ndarray) -> list[np.ndarray]:
    """Overlapping windows float[n, T, F] (consecutive rows one hour apart) -> the hourly
    stretches they cover, without repeats: float[T_i, F] each. A row that is not the
    one-hour shift of the previous row (a gap, a dropped row) starts a new stretch, which may
    repeat up to 167 hours of the one before (the fit sees it as a separate sequence)."""
    if len(sequences) == 0:
        return []
    pairs = len(sequences) - 1
    shifted = np.zeros(pairs, dtype=bool)  # shifted[i]: row i + 1 is row i moved on by one hour
    for i in range(0, pairs, _CHUNK_ROWS):
        j = min(i + _CHUNK_ROWS, pairs)
        shifted[i:j] = np.all(sequences[i + 1:j + 1, :-1] == sequences[i:j, 1:], axis=(1, 2))
    starts = np.concatenate([[0], np.flatnonzero(~shifted) + 1, [len(sequences)]])
    return [np.concatenate([sequences[a], sequences[a + 1:b, -1]])
            for a, b in zip(starts[:-1], starts[1:], strict=True)]


def history_fields(grid_ohlcv: np.ndarray, end_row: int | None = None) -> np.ndarray:
    """The sequence fields of every hour of a gap-filled history as one contiguous
    float32[T, 4] (oldest first), ending at ``end_row`` (default the last row): back-to-back
    168-hour windows, so the hours come from the one definition in bse_predict.features.sequences."""
    last = len(grid_ohlcv) - 1 if end_row is None else end_row
    ends = np.arange(last, SEQUENCE_LOOKBACK - 2, -SEQUENCE_LENGTH)[::-1]
    return sequence_rows(grid_ohlcv, ends).reshape(-1, len(SEQUENCE_FIELDS))


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    return top + np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True))


def _stationary(transmat: np.ndarray) -> np.ndarray:
    k = len(transmat)
    system = np.vstack([transmat.T - np.eye(k), np.ones((1, k))])
    target = np.concatenate([np.zeros(k), [1.0]])
    pi = np.clip(np.linalg.lstsq(system, target, rcond=None)[0], 0.0, None)
    return pi / pi.sum()


def _canonical_order(means: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Fitted state indices in canonical order, and their names (see the module docstring)."""
    k = len(means)
    by_return = np.argsort(means[:, 0], kind="stable")
    if k != 4:
        return by_return, tuple(f"regime_{i}" for i in range(k))
    middle = by_return[1:3][np.argsort(means[by_return[1:3], 1], kind="stable")]
    return np.array([by_return[0], middle[0], middle[1], by_return[3]]), FOUR_STATE_NAMES


class RegimeModel:
    """A K-state Gaussian HMM over (return, volatility) hours; fitted state ends in ``_``."""

    def __init__(self, n_states: int = 4, covariance_type: str = "diag", n_iter: int = 100, tol: float = 1e-2,
                 min_covar: float = 1e-3, seed: int = 7) -> None:
        self.n_states = n_states
        self.covariance_type = covariance_type
        self.n_iter = n_iter
        self.tol = tol
        self.min_covar = min_covar
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"n_states": self.n_states, "covariance_type": self.covariance_type, "n_iter": self.n_iter,
                "tol": self.tol, "min_covar": self.min_covar, "seed": self.seed}

    # ------------------------------------------------------------ fitting
    def fit(self, stretches: Sequence[np.ndarray]) -> RegimeModel:
        """Fit on hourly histories, each float[T_i, 4] sequence fields (see :func:`stitch_windows`)."""
        from hmmlearn.hmm import GaussianHMM
        from threadpoolctl import threadpool_limits

        raw = [raw_observations(s) for s in stretches]
        history = np.concatenate(raw)
        self.obs_mean_ = history.mean(axis=0)
        self.obs_std_ = history.std(axis=0)
        z = (history - self.obs_mean_) / self.obs_std_
        lengths = [len(r) for r in raw]
        hmm = GaussianHMM(n_components=self.n_states, covariance_type=self.covariance_type,
                          min_covar=self.min_covar, n_iter=self.n_iter, tol=self.tol, random_state=self.seed)
        with threadpool_limits(1):  # k-means and EM on [hours, 2]: threads only contend (30x slower on 2 cores)
            hmm.fit(z, lengths)
        order, names = _canonical_order(hmm.means_)
        transmat = hmm.transmat_[np.ix_(order, order)]
        self._set_parameters(hmm.means_[order], hmm.covars_[order], transmat, names)
        self.converged_ = bool(hmm.monitor_.converged)
        self.n_fit_iter_ = int(hmm.monitor_.iter)
        self.n_hours_ = len(z)
        self.log_likelihood_per_hour_ = float(self.to_hmmlearn().score(z, lengths) / len(z))
        return self

    def _set_parameters(self, means: np.ndarray, covars: np.ndarray, transmat: np.ndarray,
                        names: Sequence[str]) -> None:
        transmat = np.maximum(transmat, TRANSITION_FLOOR)
        self.means_ = np.array(means, dtype=np.float64)
        self.covars_ = np.array(covars, dtype=np.float64)
        self.transmat_ = transmat / transmat.sum(axis=1, keepdims=True)
        self.start_ = _stationary(self.transmat_)
        self.state_names_ = tuple(names)
        chol = np.linalg.cholesky(self.covars_)
        self.chol_precision_ = np.transpose(np.linalg.inv(chol), (0, 2, 1))
        """P_k with (x-μ)ᵀ Σ_k⁻¹ (x-μ) = |(x-μ) P_k|²."""
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        self.log_norm_ = -0.5 * (self.means_.shape[1] * np.log(2.0 * np.pi) + log_det)

    def permuted(self, order: Sequence[int], names: Sequence[str] | None = None) -> RegimeModel:
        """A copy whose state ``i`` is this model's state ``order[i]``."""
        order = np.asarray(order)
        out = copy.deepcopy(self)
        out._set_parameters(self.means_[order], self.covars_[order], self.transmat_[np.ix_(order, order)],
                            [self.state_names_[i] for i in order] if names is None else names)
        return out

    def to_hmmlearn(self) -> Any:
        """An hmmlearn GaussianHMM with these parameters (start = ``start_``), to check the filter against."""
        from hmmlearn.hmm import GaussianHMM

        hmm = GaussianHMM(n_components=self.n_states, covariance_type="full", init_params="", params="")
        hmm.n_features = self.means_.shape[1]
        hmm.startprob_ = self.start_
        hmm.transmat_ = self.transmat_
        hmm.means_ = self.means_
        hmm.covars_ = self.covars_
        return hmm

    # ------------------------------------------------------------ prediction (numpy only)
    def observations(self, sequences: np.ndarray) -> np.ndarray:
        """float[..., T, 4] sequence fields -> standardised float64[..., T, 2]."""
        return (raw_observations(sequences) - self.obs_mean_) / self.obs_std_

    def log_emission(self, observations: np.ndarray) -> np.ndarray:
        """float[..., T, d] -> float64[..., T, K]: log N(x_t; μ_k, Σ_k)."""
        diff = observations[..., None, :] - self.means_  # [..., K, d]
        y = sum(diff[..., e:e + 1] * self.chol_precision_[:, e, :] for e in range(diff.shape[-1]))
        return self.log_norm_ - 0.5 * np.sum(y * y, axis=-1)

    def filter(self, observations: np.ndarray) -> np.ndarray:
        """Forward filter: float[B, T, d] (or [T, d]) -> float64[B, T, K] (or [T, K]),
        row t = P(state_t | x_0..x_t), from ``start_`` at the first hour."""
        return self._forward(observations, keep_all=True)

    def filter_last(self, observations: np.ndarray) -> np.ndarray:
        """The forward filter's last hour only: float[B, T, d] -> float64[B, K]."""
        return self._forward(observations, keep_all=False)

    def current_probabilities(self, sequences: np.ndarray) -> np.ndarray:
        """Sequences float[n, T, 4] -> filtered regime probabilities at their last hour, float64[n, K]."""
        parts = [self.filter_last(self.observations(sequences[i:i + _CHUNK_ROWS]))
                 for i in range(0, len(sequences), _CHUNK_ROWS)]
        return np.concatenate(parts) if parts else np.empty((0, self.n_states))

    def _forward(self, observations: np.ndarray, keep_all: bool) -> np.ndarray:
        single = observations.ndim == 2
        log_b = self.log_emission(observations[None] if single else observations)
        batch, hours, k = log_b.shape
        log_alpha = np.log(self.start_) + log_b[:, 0]
        log_alpha -= _logsumexp(log_alpha, axis=1)
        out = np.empty((batch, hours, k)) if keep_all else None
        for t in range(hours):
            if t > 0:
                # Σ_i α_{t-1}(i) A_ij with α_{t-1} normalised (it sums to 1, no underflow), then logs
                log_alpha = log_b[:, t] + np.log(np.exp(log_alpha) @ self.transmat_)
                log_alpha -= _logsumexp(log_alpha, axis=1)
            if out is not None:
                out[:, t] = np.exp(log_alpha)
        result = out if out is not None else np.exp(log_alpha)
        return result[0] if single else result


# ------------------------------------------------------------------ matching across refits
def match_states(previous: RegimeModel, new: RegimeModel) -> np.ndarray:
    """``perm`` with ``new`` state ``perm[i]`` matching ``previous`` state ``i``: the assignment
    of least total distance between means, compared in ``previous``'s standardised units."""
    from scipy.optimize import linear_sum_assignment

    new_raw = new.means_ * new.obs_std_ + new.obs_mean_
    new_in_previous = (new_raw - previous.obs_mean_) / previous.obs_std_
    cost = np.linalg.norm(previous.means_[:, None, :] - new_in_previous[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def align_states(previous: RegimeModel, new: RegimeModel) -> RegimeModel:
    """``new`` reordered to ``previous``'s states, with ``previous``'s names."""
    return new.permuted(match_states(previous, new), names=previous.state_names_)


# ------------------------------------------------------------------ summary features (the hybrid's columns)
def regime_feature_names(model: RegimeModel) -> list[str]:
    return [f"regime_p_{name}" for name in model.state_names_] + [
        "regime_hours_in_state", "regime_exit_probability", "regime_changed"]


def regime_features(model: RegimeModel, sequences: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per window float[n, T, 4] -> (float64[n, K + 3], names):

    - ``regime_p_<state>``: filtered probabilities at the last hour (sum to 1);
    - ``regime_hours_in_state``: hours the filtered argmax has been the current one, the
      last hour included (1 .. T; T when it held the whole window);
    - ``regime_exit_probability``: Σ_i α_T(i) (1 - A_ii), the chance of leaving next hour;
    - ``regime_changed``: 1.0 when the argmax at the last hour differs from the hour before.
    """
    parts = []
    leave = 1.0 - np.diag(model.transmat_)
    for i in range(0, len(sequences), _CHUNK_ROWS):
        alpha = model.filter(model.observations(sequences[i:i + _CHUNK_ROWS]))
        state = np.argmax(alpha, axis=2)
        same = state == state[:, -1:]
        hours = np.where(same.all(axis=1), same.shape[1], np.argmin(same[:, ::-1], axis=1))
        last = alpha[:, -1]
        changed = (state[:, -1] != state[:, -2]) if state.shape[1] > 1 else np.zeros(len(state), bool)
        parts.append(np.column_stack([last, hours, last @ leave, changed.astype(np.float64)]))
    names = regime_feature_names(model)
    return (np.concatenate(parts) if parts else np.empty((0, len(names)))), names


# ------------------------------------------------------------------ diagnostics for the evaluation report
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
    returns = np.asarray(history, dtype=np.float64)[:, _RETURN]
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


# ------------------------------------------------------------------ ONNX
class _Builder:
    """Collects the nodes and constants of a graph; real constants in ``float_type``."""

    def __init__(self, float_type: Any = np.float32) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.float_type = float_type

    def const(self, name: str, value: Any, dtype: Any = None) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype or self.float_type), name))
        return name

    def ints(self, name: str, value: Any) -> str:
        return self.const(name, value, np.int64)

    def node(self, op: str, inputs: list[str], output: str | list[str], **attrs: Any) -> str:
        from onnx import helper

        outputs = [output] if isinstance(output, str) else output
        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attrs))
        return outputs[0]


def _log_densities(g: _Builder, model: RegimeModel, source: str = "sequence") -> str:
    """``sequence`` [N, T, 4] -> log N(z_t; μ_k, Σ_k) as [K, N, T]; batch and hour stay innermost
    so that each broadcast and reduction runs over long contiguous spans (with K and d innermost
    onnxruntime was ten times slower)."""
    fields = g.node("Transpose", [source], "fields", perm=[2, 0, 1])  # [4, N, T]
    ret = g.node("Gather", [fields, g.ints("row_return", [_RETURN])], "raw_return", axis=0)
    rng = g.node("Gather", [fields, g.ints("row_range", [_RANGE])], "raw_range", axis=0)
    vol = g.node("Log", [g.node("Add", [rng, g.const("volatility_floor", VOLATILITY_FLOOR)], "range_floored")],
                 "raw_vol")
    raw = g.node("Concat", [ret, vol], "raw_obs", axis=0)
    z = g.node("Div", [g.node("Sub", [raw, g.const("obs_mean", model.obs_mean_[:, None, None])], "obs_centred"),
                       g.const("obs_std", model.obs_std_[:, None, None])], "obs")  # [d, N, T]
    # y_ke = Σ_d (z_d - μ_kd) P_kde; log p_k = c_k - |y_k|² / 2
    diff = g.node("Sub", [g.node("Unsqueeze", [z, g.ints("ax0", [0])], "obs_k"),
                          g.const("means", model.means_[:, :, None, None])], "diff")  # [K, d, N, T]
    terms = g.node("Mul", [g.node("Unsqueeze", [diff, g.ints("ax2", [2])], "diff_e"),
                           g.const("chol_precision", model.chol_precision_[:, :, :, None, None])],
                   "whitened_terms")  # [K, d, d, N, T]
    y = g.node("ReduceSum", [terms, g.ints("ax1", [1])], "whitened", keepdims=0)  # [K, d, N, T]
    quad = g.node("ReduceSum", [g.node("Mul", [y, y], "whitened_sq"), g.ints("ax1q", [1])], "quad", keepdims=0)
    return g.node("Sub", [g.const("log_norm", model.log_norm_[:, None, None]),
                          g.node("Mul", [quad, g.const("half", 0.5)], "half_quad")], "log_density")


def _tree_recursion(g: _Builder, model: RegimeModel, density: str, hours: int) -> str:
    """α_T ∝ start · D_0 · M_1 ⋯ M_{T-1} (D_0 = diag(b_0), M_t = A · diag(b_t)), the product taken as
    a balanced tree of batched K×K products, each rescaled by its largest entry -> [K, N]."""
    k = model.n_states
    steps = np.broadcast_to(model.transmat_, (hours, k, k)).copy()
    steps[0] = np.eye(k)
    b_hours = g.node("Unsqueeze", [g.node("Transpose", [density], "tree_b", perm=[2, 0, 1]),
                                   g.ints("tree_ax1", [1])], "tree_b_col")  # [T, 1, K, N]
    mats = g.node("Mul", [b_hours, g.const("tree_steps", steps[..., None])], "tree_m_0")  # [T, K, K, N]
    def hours_slice(source: str, name: str, start: int, end: int, step: int = 1) -> str:
        bounds = [g.ints(f"{name}_start", [start]), g.ints(f"{name}_end", [end]), g.ints(f"{name}_axis", [0]),
                  g.ints(f"{name}_step", [step])]
        return g.node("Slice", [source, *bounds], name)

    n, level = hours, 0
    while n > 1:
        pairs = n // 2
        left = hours_slice(mats, f"tree_left_{level}", 0, 2 * pairs, 2)
        right = hours_slice(mats, f"tree_right_{level}", 1, 2 * pairs, 2)
        # (left @ right)[i, j] = Σ_l left[i, l] right[l, j]: columns [p, K, 1, N] times rows [p, 1, K, N]
        columns = [f"tree_left_{level}_col{i}" for i in range(k)]
        rows = [f"tree_right_{level}_row{i}" for i in range(k)]
        g.node("Split", [left], columns, axis=2)
        g.node("Split", [right], rows, axis=1)
        product = g.node("Sum", [g.node("Mul", [c, r], f"tree_term_{level}_{i}")
                                 for i, (c, r) in enumerate(zip(columns, rows, strict=True))], f"tree_product_{level}")
        if n % 2:  # an odd matrix out waits for the next level, in its place at the end
            product = g.node("Concat", [product, hours_slice(mats, f"tree_rest_{level}", n - 1, n)],
                             f"tree_joined_{level}", axis=0)
        scale = g.node("ReduceMax", [product], f"tree_scale_{level}", axes=[1, 2], keepdims=1)
        mats = g.node("Div", [product, scale], f"tree_m_{level + 1}")
        n, level = pairs + n % 2, level + 1
    weighted = g.node("Mul", [mats, g.const("tree_start", model.start_[None, :, None, None])], "tree_weighted")
    return g.node("ReduceSum", [weighted, g.ints("tree_ax01", [0, 1])], "alpha_kn", keepdims=0)  # [K, N]


def filter_graph(model: RegimeModel, outcome_map: np.ndarray | None = None,
                 hours: int = SEQUENCE_LENGTH) -> Any:
    """The forward filter as an ONNX graph (opset 17, IR capped).

    Input ``sequence`` float32[batch, hours, 4]; outputs ``regime_probabilities``
    float32[batch, K] (α at the last hour) and, with ``outcome_map`` float[K, 3],
    ``probabilities`` = α_T @ outcome_map; the metadata property ``regime_states``
    names the states. The graph standardises the two observation columns, computes
    the Gaussian log densities per state (constants: means, P_k, log normalisers),
    rescales them per hour (b_t = exp(log p_t - max_k log p_t), which the
    normalisation cancels) and runs the recursion as a product of matrices taken as a
    balanced tree (:func:`_tree_recursion`): matrix products are associative, so the
    numbers are those of the hour-by-hour filter up to float32 rounding, with 8 levels
    of batched K×K products instead of 168 sequential steps (measured: as fast as the
    unrolled steps at 100 rows, three times faster for one row; docs/models/hmm.md).
    """
    from onnx import TensorProto, helper

    k = model.n_states
    g = _Builder()
    log_b = _log_densities(g, model)
    top = g.node("ReduceMax", [log_b], "log_density_max", axes=[0], keepdims=1)
    density = g.node("Exp", [g.node("Sub", [log_b, top], "log_density_rel")], "density_rel")  # [K, N, T]
    alpha = _tree_recursion(g, model, density, hours)
    flat = g.node("Transpose", [alpha], "alpha_nk", perm=[1, 0])
    total = g.node("ReduceSum", [flat, g.ints("ax1n", [1])], "alpha_total", keepdims=1)
    g.node("Div", [flat, total], "regime_probabilities")
    outputs = [helper.make_tensor_value_info("regime_probabilities", TensorProto.FLOAT, [None, k])]
    if outcome_map is not None:
        g.node("MatMul", ["regime_probabilities", g.const("outcome_map", outcome_map)], "probabilities")
        outputs.insert(0, helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3]))
    return _checked_model(g, "hmm_forward_filter", model, hours, outputs)


def _checked_model(g: _Builder, name: str, model: RegimeModel, hours: int, outputs: list[Any]) -> Any:
    """The graph of ``g`` on the ``sequence`` input as a checked model (opset 17, IR capped),
    naming the states in the metadata property ``regime_states``."""
    from onnx import TensorProto, checker, helper

    from bse_predict.families.onnx_limits import TARGET_OPSET, cap_ir_version

    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info("sequence", TensorProto.FLOAT, [None, hours, len(SEQUENCE_FIELDS)])],
        outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET)],
                              producer_name="bse-predict")
    helper.set_model_props(proto, {"regime_states": ",".join(model.state_names_)})
    cap_ir_version(proto)
    checker.check_model(proto, full_check=True)
    return proto


def _filter_every_hour(g: _Builder, model: RegimeModel, density: str) -> str:
    """The hour-by-hour forward filter as a ``Scan`` -> α_t for every hour, [T, N, K].

    The state starts at ``start_``; because ``start_`` is the stationary distribution of
    ``A``, the first step ``(start_ A) ⊙ b_0 = start_ ⊙ b_0`` is the filter's first hour."""
    from onnx import helper, numpy_helper

    k = model.n_states
    real = helper.np_dtype_to_tensor_dtype(np.dtype(g.float_type))
    body = helper.make_graph(
        [helper.make_node("MatMul", ["alpha_in", "scan_transmat"], ["predicted"]),
         helper.make_node("Mul", ["predicted", "b_t"], ["unnormalised"]),
         helper.make_node("ReduceSum", ["unnormalised", "scan_axis1"], ["total"], keepdims=1),
         helper.make_node("Div", ["unnormalised", "total"], ["alpha_out"]),
         helper.make_node("Identity", ["alpha_out"], ["alpha_hour"])],
        "forward_step",
        [helper.make_tensor_value_info("alpha_in", real, [None, k]),
         helper.make_tensor_value_info("b_t", real, [None, k])],
        [helper.make_tensor_value_info("alpha_out", real, [None, k]),
         helper.make_tensor_value_info("alpha_hour", real, [None, k])],
        [numpy_helper.from_array(model.transmat_.astype(g.float_type), "scan_transmat"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "scan_axis1")])
    hours_first = g.node("Transpose", [density], "every_b", perm=[2, 1, 0])  # [T, N, K]
    rows = g.node("Slice", [g.node("Shape", ["sequence"], "sequence_shape"), g.ints("rows_start", [0]),
                            g.ints("rows_end", [1])], "batch_rows")
    start = g.node("Expand", [g.const("start_row", model.start_[None, :]),
                              g.node("Concat", [rows, g.ints("k_states", [k])], "start_shape", axis=0)], "start_alpha")
    g.node("Scan", [start, hours_first], ["alpha_last_scan", "alpha_every_hour"], body=body, num_scan_inputs=1)
    return "alpha_every_hour"


def regime_feature_graph(model: RegimeModel, hours: int = SEQUENCE_LENGTH) -> Any:
    """:func:`regime_features` as an ONNX graph (opset 17, IR capped): input ``sequence``
    float32[batch, hours, 4], output ``regime_features`` float32[batch, K + 3] with the columns
    of :func:`regime_feature_names`. The filter runs hour by hour (a ``Scan``) because the
    time in state needs the filtered regime of every hour, not only the last.

    It computes in float64, like the trainer's numpy filter, and rounds to float32 only at
    the end: trees split these columns at float32 thresholds, and a filter run in float32
    differs by ~1e-7, enough to send a row to the other side of a split (measured: 5.6e-4
    in probability on the full futures history)."""
    from onnx import TensorProto, helper

    k = model.n_states
    g = _Builder(np.float64)
    wide = g.node("Cast", ["sequence"], "sequence_f64", to=TensorProto.DOUBLE)
    log_b = _log_densities(g, model, wide)
    top = g.node("ReduceMax", [log_b], "log_density_max", axes=[0], keepdims=1)
    density = g.node("Exp", [g.node("Sub", [log_b, top], "log_density_rel")], "density_rel")  # [K, N, T]
    alpha = _filter_every_hour(g, model, density)  # [T, N, K]
    state = g.node("ArgMax", [alpha], "state_every_hour", axis=2, keepdims=0)  # [T, N]
    last_state = g.node("Gather", [state, g.ints("hour_last", hours - 1)], "state_last", axis=0)  # [N]
    # hours in state = T - (1 + the latest hour whose state differs from the last), T when none does
    differs = g.node("Cast", [g.node("Not", [g.node("Equal", [state, last_state], "same_as_last")], "differs_bool")],
                     "differs", to=TensorProto.DOUBLE)
    position = g.const("hour_position", np.arange(1, hours + 1)[:, None])  # [T, 1]
    latest = g.node("ReduceMax", [g.node("Mul", [differs, position], "differs_at")], "latest_differing",
                    axes=[0], keepdims=0)  # [N]
    in_state = g.node("Sub", [g.const("hours_total", float(hours)), latest], "hours_in_state")
    last = g.node("Gather", [alpha, g.ints("hour_last_alpha", hours - 1)], "alpha_last", axis=0)  # [N, K]
    exit_p = g.node("MatMul", [last, g.const("leave", (1.0 - np.diag(model.transmat_))[:, None])], "exit_probability")
    before = g.node("Gather", [state, g.ints("hour_before", max(hours - 2, 0))], "state_before", axis=0)
    changed = g.node("Cast", [g.node("Not", [g.node("Equal", [last_state, before], "same_as_before")], "changed_bool")],
                     "changed", to=TensorProto.DOUBLE)
    column = g.ints("as_column", [1])
    columns = g.node("Concat", [last, g.node("Unsqueeze", [in_state, column], "hours_column"), exit_p,
                                g.node("Unsqueeze", [changed, column], "changed_column")], "columns_f64", axis=1)
    g.node("Cast", [columns], REGIME_FEATURES_OUTPUT, to=TensorProto.FLOAT)
    return _checked_model(g, "hmm_regime_features", model, hours,
                          [helper.make_tensor_value_info(REGIME_FEATURES_OUTPUT, TensorProto.FLOAT, [None, k + 3])])
