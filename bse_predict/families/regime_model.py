"""The regime model: a Gaussian HMM fitted with hmmlearn, read only with the forward filter.

This module is the model itself (observations, fitting, state names, the numpy filter, the
summary columns the hybrid families read). Its ONNX graphs are in
:mod:`bse_predict.families.regime_graphs`, the evaluation report's diagnostics in
:mod:`bse_predict.families.regime_diagnostics`; :mod:`bse_predict.families.regimes` gathers all three.

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
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from bse_predict.features.sequences import SEQUENCE_FIELDS, SEQUENCE_LENGTH, SEQUENCE_LOOKBACK, sequence_rows

__all__ = [
    "OBSERVATION_NAMES",
    "FOUR_STATE_NAMES",
    "VOLATILITY_FLOOR",
    "TRANSITION_FLOOR",
    "RETURN_FIELD",
    "RANGE_FIELD",
    "CHUNK_ROWS",
    "RegimeModel",
    "unfitted_regime_model",
    "raw_observations",
    "stitch_windows",
    "history_fields",
    "match_states",
    "align_states",
    "regime_feature_names",
    "regime_feature_label",
    "regime_features",
]

OBSERVATION_NAMES = ("return_z", "volatility_z")
FOUR_STATE_NAMES = ("bear", "accumulation", "distribution", "bull")
VOLATILITY_FLOOR = 1e-4
TRANSITION_FLOOR = 1e-8
RETURN_FIELD = SEQUENCE_FIELDS.index("log_return")
"""Where ``log_return`` is among the sequence fields (the last axis of a sequence)."""
RANGE_FIELD = SEQUENCE_FIELDS.index("log_range")
"""Where ``log_range`` is among the sequence fields."""
CHUNK_ROWS = 4096
"""Windows filtered at a time, to bound the memory of the batched filter."""


def raw_observations(fields: np.ndarray) -> np.ndarray:
    """float[..., T, 4] sequence fields -> float64[..., T, 2]: log_return, log(log_range + 1e-4)."""
    f = np.asarray(fields, dtype=np.float64)
    return np.stack([f[..., RETURN_FIELD], np.log(f[..., RANGE_FIELD] + VOLATILITY_FLOOR)], axis=-1)


def stitch_windows(sequences: np.ndarray) -> list[np.ndarray]:
    """Overlapping windows float[n, T, F] (consecutive rows one hour apart) -> the hourly
    stretches they cover, without repeats: float[T_i, F] each. A row that is not the
    one-hour shift of the previous row (a gap, a dropped row) starts a new stretch, which may
    repeat up to 167 hours of the one before (the fit sees it as a separate sequence)."""
    if len(sequences) == 0:
        return []
    pairs = len(sequences) - 1
    shifted = np.zeros(pairs, dtype=bool)  # shifted[i]: row i + 1 is row i moved on by one hour
    for i in range(0, pairs, CHUNK_ROWS):
        j = min(i + CHUNK_ROWS, pairs)
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


@dataclass(eq=False)
class RegimeModel:
    """A K-state Gaussian HMM over (return, volatility) hours: the fields are its hyperparameters;
    fitted state ends in ``_``."""

    n_states: int = 4
    covariance_type: str = "diag"
    n_iter: int = 100
    tol: float = 1e-2
    min_covar: float = 1e-3
    seed: int = 7

    def get_params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

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
        parts = [self.filter_last(self.observations(sequences[i:i + CHUNK_ROWS]))
                 for i in range(0, len(sequences), CHUNK_ROWS)]
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


def unfitted_regime_model(family: Any) -> RegimeModel:
    """A new model with the HMM hyperparameters ``family`` keeps under the same names
    (``n_states``, ``covariance_type``, ``n_iter``, ``tol``, ``min_covar``, ``seed``)."""
    return RegimeModel(**{f.name: getattr(family, f.name) for f in fields(RegimeModel)})


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
_STATE_PROBABILITY = "regime_p_"
_SUMMARY_LABELS = {"regime_hours_in_state": "hours in the current HMM regime",
                   "regime_exit_probability": "chance of leaving the HMM regime",
                   "regime_changed": "HMM regime just changed"}
"""The columns after the state probabilities, with their readable labels."""


def regime_feature_names(model: RegimeModel) -> list[str]:
    return [f"{_STATE_PROBABILITY}{name}" for name in model.state_names_] + list(_SUMMARY_LABELS)


def regime_feature_label(name: str) -> str | None:
    """The readable label of a column of :func:`regime_feature_names`; None for any other name."""
    if name.startswith(_STATE_PROBABILITY):
        return f"HMM {name.removeprefix(_STATE_PROBABILITY)} regime probability"
    return _SUMMARY_LABELS.get(name)


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
    for i in range(0, len(sequences), CHUNK_ROWS):
        alpha = model.filter(model.observations(sequences[i:i + CHUNK_ROWS]))
        state = np.argmax(alpha, axis=2)
        same = state == state[:, -1:]
        hours = np.where(same.all(axis=1), same.shape[1], np.argmin(same[:, ::-1], axis=1))
        last = alpha[:, -1]
        changed = (state[:, -1] != state[:, -2]) if state.shape[1] > 1 else np.zeros(len(state), bool)
        parts.append(np.column_stack([last, hours, last @ leave, changed.astype(np.float64)]))
    names = regime_feature_names(model)
    return (np.concatenate(parts) if parts else np.empty((0, len(names)))), names
