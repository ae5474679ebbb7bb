"""The ensemble family: any registered families as members, combined by one of four strategies.

Training fits every member on the training rows, then fits every combiner
(:mod:`bse_predict.ensembles.combiners`) on the members' predictions for rows they never saw:
``validation_data`` when the caller passes it (the trainer passes a purged
per-symbol slice), else the newest ``validation_fraction`` of the rows behind a
purge of ``purge_rows``. The stacking meta-learner therefore only ever sees
out-of-fold predictions. Members are not refitted on the validation rows
(training time stays that of the members once).

With ``climatology_member`` (the default) class shares join the averaging
strategies as one more member, last, served as a constant of the graph: its
weight is fitted like the others' on the validation rows with the training
rows' shares (out of sample, as the members are), and it serves the shares of
every row given (the validation rows are the newest, and base rates drift).
``weight_penalty`` pulls the weights toward climatology alone (toward equal
weights without it), and a useless member may get 0: the mixture shrinks
toward climatology as far as the members earn no better
(:mod:`bse_predict.ensembles.weight_fit`). ``weight_penalty`` ``None`` chooses it
from ``weight_penalties`` on the same purged inner folds
(:mod:`bse_predict.ensembles.penalty_choice`). ``stacking_c`` ``None`` chooses the
stacking L2 strength from ``stacking_cs`` on ``inner_folds`` purged folds of
open time over the out-of-fold rows (their times given as
``validation_open_time_ms``); stacking that loses to the weighted mixture
there is dropped, and ``stacking`` then serves the weighted mixture
(:mod:`bse_predict.ensembles.stacking_choice`). ``member_ablation`` also fits,
for each member, the weighted mixture refitted without it (the same penalty
choice, its weight 0) as the strategy ``weighted_without_<member>``: scored on
the same rows as the ensemble, the pair says what the member earns.

``strategy`` picks what :meth:`predict_proba` and :meth:`export_onnx` answer;
every other fitted strategy is available by name (:meth:`predict_strategy`,
:meth:`export_strategy`, :meth:`variants`) so that one training serves the
comparison of all of them. The ``regime`` strategy needs an ``hmm_regime``
member (its forward-filtered regime picks the weights).

A member that raises or answers NaN for some rows is dropped for those rows
and the prediction is marked degraded (:meth:`predict_with_status`); the ONNX
graph (:mod:`bse_predict.ensembles.graph`) does the same in-graph.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bse_predict.training.dataset import SymbolDataset
from bse_predict.ensembles.combiners import (
    STRATEGIES,
    CombinerSpec,
    StackingCombiner,
    adaptive_predictions,
    combine,
    dynamic_weights,
    failed_rows,
    log_loss,
    row_weights,
    weighted_average,
    with_climatology,
)
from bse_predict.ensembles.graph import ensemble_graph
from bse_predict.ensembles.penalty_choice import choose_penalty
from bse_predict.ensembles.stacking_choice import choose_stacking
from bse_predict.ensembles.weight_fit import fit_weights
from bse_predict.explain.contributions import Contributions, weighted_sum
from bse_predict.explain.errors import NotExplainable
from bse_predict.families.base import BasePredictor, get_model, register
from bse_predict.families.random_forest import RandomForestPredictor
from bse_predict.families.xgboost_family import XGBoostPredictor
from bse_predict.features.inputs import InputRows
from bse_predict.labels.first_touch import UNKNOWN
from bse_predict.scoring.probabilities import climatology_shares
from bse_predict.serving.manifest import CombinerRecord

__all__ = ["WITHOUT", "EnsemblePredictor"]

log = logging.getLogger(__name__)

_POWERS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
_STACKING_CS = (0.001, 0.01, 0.1, 1.0)
_PENALTIES = (0.001, 0.003, 0.01, 0.03, 0.1, 1.0)
_HOUR_MS = 3_600_000
"""``purge_rows`` counts hours: the rows of one symbol are hourly candles."""
WITHOUT = "weighted_without_"
"""The prefix of the member-ablation strategies: ``weighted_without_<member>``."""


@register
class EnsemblePredictor(BasePredictor):
    family = "ensemble"
    uses_validation = True
    uses_validation_times = True
    calibrates_itself = True
    fast_params: ClassVar[dict[str, Any]] = {
        "members": ("random_forest", "xgboost"),
        "member_params": {"random_forest": RandomForestPredictor.fast_params, "xgboost": XGBoostPredictor.fast_params},
        "purge_rows": 24,
    }

    def __init__(self, members: Sequence[str] = ("random_forest", "xgboost"), strategy: str = "weighted",
                 member_params: dict[str, dict[str, Any]] | None = None, weight_floor: float = 0.02,
                 stacking_c: float | None = None, regime_min_rows: int = 300, validation_fraction: float = 0.25,
                 purge_rows: int = 72, adaptive_rate: float = 0.02, climatology_member: bool = True,
                 weight_penalty: float | None = None, weight_penalties: Sequence[float] = _PENALTIES,
                 stacking_cs: Sequence[float] = _STACKING_CS, inner_folds: int = 3, member_ablation: bool = False,
                 seed: int = 7) -> None:
        self.members = members
        self.strategy = strategy
        self.member_params = member_params
        self.weight_floor = weight_floor
        self.stacking_c = stacking_c
        self.climatology_member = climatology_member
        self.weight_penalty = weight_penalty
        self.weight_penalties = weight_penalties
        self.stacking_cs = stacking_cs
        self.inner_folds = inner_folds
        self.member_ablation = member_ablation
        self.regime_min_rows = regime_min_rows
        self.validation_fraction = validation_fraction
        self.purge_rows = purge_rows
        self.adaptive_rate = adaptive_rate
        self.seed = seed

    # ------------------------------------------------------------ inputs
    def _member_models(self) -> list[BasePredictor]:
        params = self.member_params or {}
        if len(set(self.members)) != len(self.members) or not self.members:
            raise ValueError(f"ensemble members must be distinct and at least one: {list(self.members)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown ensemble strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}")
        return [get_model(name, **params.get(name, {})) for name in self.members]

    @property
    def input_kind(self) -> str:  # type: ignore[override]
        """The one input kind of its members; ``input_kinds`` when they read several."""
        return self.input_kinds[0]

    @property
    def input_kinds(self) -> tuple[str, ...]:
        return tuple(sorted({kind for member in self._member_models() for kind in member.input_kinds}))

    def prepare_data(self, dataset: SymbolDataset, target: str) -> tuple[np.ndarray | InputRows, np.ndarray]:
        labels = dataset.labels[target]
        known = labels != UNKNOWN
        kinds = self.input_kinds
        parts = {kind: dataset.sequences(known) if kind == "sequence" else dataset.features[known] for kind in kinds}
        rows = parts[kinds[0]] if len(kinds) == 1 else InputRows(parts)
        return rows, labels[known].astype(np.int64)

    def onnx_feed(self, X: np.ndarray | InputRows) -> dict[str, np.ndarray]:
        if isinstance(X, InputRows):
            return X.feed()
        return {self.input_kind: np.ascontiguousarray(X, dtype=np.float32)}

    def rows_from_inputs(self, inputs: dict[str, np.ndarray]) -> np.ndarray | InputRows:
        kinds = self.input_kinds
        return inputs[kinds[0]] if len(kinds) == 1 else InputRows({k: inputs[k] for k in kinds})

    @staticmethod
    def _rows_for(member: BasePredictor, X: np.ndarray | InputRows) -> np.ndarray | InputRows:
        if not isinstance(X, InputRows):
            return X
        kinds = member.input_kinds
        return X.parts[kinds[0]] if len(kinds) == 1 else InputRows({k: X.parts[k] for k in kinds})

    # ------------------------------------------------------------ learning
    def train(self, X: np.ndarray | InputRows, y: np.ndarray,
              validation_data: tuple[np.ndarray | InputRows, np.ndarray] | None = None,
              validation_open_time_ms: np.ndarray | None = None) -> dict[str, float]:
        """``validation_open_time_ms``: the open times of ``validation_data``'s rows, which stacking's
        inner folds cut by time; without them its rows count as consecutive hours of one series."""
        models = self._member_models()
        if validation_data is None:
            n_validation = int(len(y) * self.validation_fraction)
            fit_end = len(y) - n_validation - self.purge_rows
            if n_validation < 50 or fit_end < 100:
                raise ValueError(f"{len(y)} rows are too few for an ensemble's out-of-fold slice")
            validation_data = (X[len(y) - n_validation:], y[len(y) - n_validation:])
            X, y = X[:fit_end], y[:fit_end]
        x_oof, y_oof = validation_data
        times = (np.arange(len(y_oof), dtype=np.int64) * _HOUR_MS if validation_open_time_ms is None
                 else np.asarray(validation_open_time_ms, dtype=np.int64))
        for model in models:
            model.train(self._rows_for(model, X), y)
        self.members_ = models
        # Served: the shares of every row given (the combiners' rows are the newest, and base rates drift);
        # the combiners are fitted with the members' rows' shares, out of sample like the members.
        self.climatology_ = climatology_shares(np.concatenate([y, y_oof])) if self.climatology_member else None
        # Rounded so that members' float sums in another thread order fit the same combiners.
        oof = np.round(self._member_probabilities(x_oof), 10)
        mixture = with_climatology(oof, climatology_shares(y) if self.climatology_member else None)
        self.weight_penalty_ = self._choose_penalty(mixture, y_oof, times, self._shrink_toward())
        self.weights_ = fit_weights(mixture, y_oof, self.weight_penalty_, self._shrink_toward())
        self.weights_without_ = self._fit_without_each(mixture, y_oof, times) if self.member_ablation else {}
        self.power_ = min(_POWERS, key=lambda power: log_loss(
            weighted_average(mixture, dynamic_weights(mixture, self.weights_, power))[0], y_oof))
        self.stacking_ = self._fit_stacking(oof, mixture, y_oof, times)
        self.regime_member_ = self.members.index("hmm_regime") if "hmm_regime" in self.members else None
        self.by_regime_ = self._fit_regime_weights(x_oof, y_oof, mixture)
        scores = {f"oof_log_loss_{name}": log_loss(self.predict_strategy(x_oof, name), y_oof)
                  for name in self.variants(include_own=True, members=False)}
        scores.update({f"oof_log_loss_{m}": log_loss(oof[i], y_oof) for i, m in enumerate(self.members)})
        scores.update({f"weight_{m}": float(w) for m, w in zip(self._weight_names(), self.weights_, strict=True)})
        scores.update({f"stacking_{k}": float(v) for k, v in self.stacking_choice_.items()})
        scores["weight_penalty"] = self.weight_penalty_
        return scores

    def _too_few_for_inner_folds(self, rows: int) -> bool:
        return rows < 2 * self.inner_folds * (self.purge_rows + 1)

    def _choose_penalty(self, mixture: np.ndarray, y_oof: np.ndarray, open_time_ms: np.ndarray,
                        toward: int | None) -> float:
        """``weight_penalty``, or the candidate of ``weight_penalties`` that predicts the inner folds best
        (the strongest when the rows are too few to cut them)."""
        if self.weight_penalty is not None:
            return float(self.weight_penalty)
        if self._too_few_for_inner_folds(len(y_oof)):
            return float(max(self.weight_penalties))
        return choose_penalty(mixture, y_oof, open_time_ms, self.weight_penalties, self.inner_folds,
                              self.purge_rows * _HOUR_MS, toward).penalty

    def _fit_without_each(self, mixture: np.ndarray, y_oof: np.ndarray,
                          open_time_ms: np.ndarray) -> dict[str, np.ndarray]:
        """Per member, the weighted mixture's weights fitted as :meth:`train` fits them but without that
        member, whose weight is then 0 (an ensemble of one member has nothing to leave out)."""
        if len(self.members) < 2:
            return {}
        toward = self._shrink_toward()
        without = {}
        for i, name in enumerate(self.members):
            rest = np.delete(mixture, i, axis=0)
            rest_toward = None if toward is None else toward - 1  # climatology stays last
            penalty = self._choose_penalty(rest, y_oof, open_time_ms, rest_toward)
            without[name] = np.insert(fit_weights(rest, y_oof, penalty, rest_toward), i, 0.0)
        return without

    def _shrink_toward(self) -> int | None:
        """The member the weight penalty pulls toward: the climatology member (last), if any."""
        return len(self.members) if self.climatology_ is not None else None

    def _weight_names(self) -> list[str]:
        """The names of the weights' members, the climatology member last when there is one."""
        return [*self.members, "climatology"] if self.climatology_ is not None else list(self.members)

    def _fit_stacking(self, oof: np.ndarray, mixture: np.ndarray, y_oof: np.ndarray,
                      open_time_ms: np.ndarray) -> StackingCombiner | None:
        """The stacking meta-learner at ``stacking_c``, or at the C chosen on inner folds; ``None`` when
        it loses there to the weighted mixture (``stacking_choice_`` records the numbers)."""
        cs = (self.stacking_c,) if self.stacking_c is not None else tuple(self.stacking_cs)
        if self._too_few_for_inner_folds(len(y_oof)):
            self.stacking_choice_ = {"c": min(cs), "kept": 1.0}  # too few rows to choose: the strongest L2
            return StackingCombiner.fit(oof, y_oof, min(cs), self.seed)
        choice = choose_stacking(oof, mixture, y_oof, open_time_ms, cs, self.inner_folds, self.purge_rows * _HOUR_MS,
                                 self.weight_penalty_, self.seed, self._shrink_toward())
        self.stacking_choice_ = {"c": choice.c, "kept": float(choice.kept), "inner_log_loss": choice.stacking_log_loss,
                                 "inner_log_loss_mixture": choice.mixture_log_loss}
        return StackingCombiner.fit(oof, y_oof, choice.c, self.seed) if choice.kept else None

    def _fit_regime_weights(self, x_oof: np.ndarray | InputRows, y_oof: np.ndarray,
                            mixture: np.ndarray) -> np.ndarray | None:
        """[K, M] weights per regime, fitted on ``mixture`` (the members and the climatology member)."""
        if self.regime_member_ is None:
            return None
        states = np.argmax(self._regime_probabilities(x_oof), axis=1)
        hmm = self.members_[self.regime_member_]
        by_regime = np.tile(self.weights_, (hmm.regimes_.n_states, 1))  # type: ignore[attr-defined]
        for state in range(len(by_regime)):
            rows = states == state
            if rows.sum() >= self.regime_min_rows:
                by_regime[state] = fit_weights(mixture[:, rows], y_oof[rows], self.weight_penalty_,
                                               self._shrink_toward())
        return by_regime

    def _regime_probabilities(self, X: np.ndarray | InputRows) -> np.ndarray:
        assert self.regime_member_ is not None
        hmm = self.members_[self.regime_member_]
        return hmm.regimes_.current_probabilities(self._rows_for(hmm, X))  # type: ignore[attr-defined]

    def _member_probabilities(self, X: np.ndarray | InputRows) -> np.ndarray:
        """[M, n, 3]; a member that raises answers NaN rows (logged), which the combiners drop."""
        out = np.full((len(self.members_), len(X), 3), np.nan)
        for i, member in enumerate(self.members_):
            try:
                out[i] = member.predict_proba(self._rows_for(member, X))
            except (ValueError, ArithmeticError, RuntimeError, MemoryError) as error:
                log.warning("ensemble member %s failed on %d rows: %s", self.members[i], len(X), error)
        return out

    # ------------------------------------------------------------ prediction
    def variants(self, include_own: bool = False, members: bool = True) -> tuple[str, ...]:
        """The fitted strategies (all but ``strategy`` unless ``include_own``) and, with
        ``members``, each member alone as ``member_<family>`` (for side-by-side backtests)."""
        fitted = [s for s in STRATEGIES if s != "regime" or self.by_regime_ is not None]
        fitted += [f"{WITHOUT}{m}" for m in getattr(self, "weights_without_", {})]  # absent in versions saved before it
        alone = [f"member_{m}" for m in self.members] if members else []
        return tuple(s for s in fitted if include_own or s != self.strategy) + tuple(alone)

    def _alone(self, variant: str) -> BasePredictor:
        """The member a ``member_<family>`` variant is."""
        return self.members_[self.members.index(variant.removeprefix("member_"))]

    def _check_fitted(self, strategy: str) -> None:
        if strategy not in self.variants(include_own=True, members=False):
            raise ValueError(f"strategy {strategy!r} is not fitted in this ensemble ({', '.join(self.variants(True))})")

    def variant_input_kinds(self, variant: str) -> tuple[str, ...]:
        """The inputs the graph of :meth:`export_strategy` for ``variant`` reads."""
        if variant.startswith("member_"):
            return self._alone(variant).input_kinds
        return self.input_kinds

    def combine(self, member_probs: np.ndarray, strategy: str,
                regime_probabilities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Member probabilities [M, n, 3] -> (probabilities [n, 3], degraded [n])."""
        self._check_fitted(strategy)
        return combine(self.combiner_spec(strategy), member_probs, regime_probabilities)

    def combiner_record(self, variant: str, entry_prefix: str) -> CombinerRecord | None:
        """What the manifest keeps of ``variant``'s combination (members named as the trainer names
        their entries, ``{entry_prefix}_member_{family}``); ``None`` for a member alone."""
        if variant.startswith("member_"):
            return None
        names = tuple(f"{entry_prefix}_member_{m}" for m in self.members)
        regime = names[self.regime_member_] if self.regime_member_ is not None and variant == "regime" else None
        return CombinerRecord.from_spec(self.combiner_spec(variant), names, regime, self.weight_floor,
                                        self.adaptive_rate)

    def combiner_spec(self, strategy: str) -> CombinerSpec:
        """The fitted numbers ``strategy`` combines with; ``stacking`` dropped on its inner folds
        combines as ``weighted``, and ``weighted_without_<member>`` as ``weighted`` with its own weights."""
        if strategy == "stacking" and self.stacking_ is None:
            strategy = "weighted"
        if strategy.startswith(WITHOUT):
            return CombinerSpec(strategy="weighted", weights=self.weights_without_[strategy.removeprefix(WITHOUT)],
                                climatology=self.climatology_)
        return CombinerSpec(strategy=strategy, weights=self.weights_, power=self.power_,
                            by_regime=self.by_regime_ if strategy == "regime" else None,
                            stacking=self.stacking_ if strategy == "stacking" else None,
                            climatology=self.climatology_)

    def predict_with_status(self, X: np.ndarray | InputRows, strategy: str | None = None,
                            ) -> tuple[np.ndarray, np.ndarray]:
        strategy = strategy or self.strategy
        if strategy.startswith("member_"):
            member = self._alone(strategy)
            p = member.predict_proba(self._rows_for(member, X))
            return p, np.zeros(len(p), dtype=bool)
        probs = self._member_probabilities(X)
        regime = self._regime_probabilities(X) if strategy == "regime" else None
        return self.combine(probs, strategy, regime)

    def predict_adaptive(self, X: np.ndarray | InputRows, y: np.ndarray, open_time_ms: np.ndarray,
                         horizon_ms: int) -> np.ndarray:
        """Rows replayed in time order from the fitted weights, re-weighted (hedge, floored) by each
        row's outcome ``horizon_ms`` after its candle: what live re-weighting on the outcomes
        stream would have answered. Not a served graph (its weights change with every outcome)."""
        return adaptive_predictions(with_climatology(self._member_probabilities(X), self.climatology_), y,
                                    open_time_ms, horizon_ms, self.weights_, self.adaptive_rate, self.weight_floor)

    def predict_strategy(self, X: np.ndarray | InputRows, strategy: str) -> np.ndarray:
        return self.predict_with_status(X, strategy)[0]

    def predict_proba(self, X: np.ndarray | InputRows) -> np.ndarray:
        return self.predict_with_status(X)[0]

    def contributions(self, X: np.ndarray | InputRows) -> Contributions:
        return self.strategy_contributions(X, self.strategy)

    def strategy_contributions(self, X: np.ndarray | InputRows, strategy: str) -> Contributions:
        """The contributions of :meth:`predict_strategy`'s answer: a member alone's own, or the members'
        weighted with each row's weights (:func:`bse_predict.explain.contributions.weighted_sum`), where
        the members that are not tree families add their weighted answer to ``unexplained``. The stacking
        combiner is no weighted sum of its members: it is not explainable, nor is a row where a member failed."""
        if strategy.startswith("member_"):
            member = self._alone(strategy)
            return member.contributions(self._rows_for(member, X))
        self._check_fitted(strategy)
        spec = self.combiner_spec(strategy)
        if spec.strategy == "stacking":
            raise NotExplainable("the stacking combiner is not a weighted sum of its members' probabilities")
        probs = self._member_probabilities(X)
        if failed_rows(probs).any():
            raise NotExplainable("a member failed on some rows: the weights that answered are not the fitted ones")
        rows = with_climatology(probs, self.climatology_)
        weights = row_weights(spec, rows, self._regime_probabilities(X) if spec.strategy == "regime" else None)
        members: list[tuple[str, Contributions | np.ndarray]] = []
        for name, member, p in zip(self.members, self.members_, probs, strict=True):
            try:
                members.append((name, member.contributions(self._rows_for(member, X))))
            except NotExplainable:
                members.append((name, p))
        members += [("climatology", row) for row in rows[len(self.members):]]  # a constant: all unexplained
        return weighted_sum(members, weights / weights.sum(axis=1, keepdims=True))

    def get_feature_importance(self) -> dict[str, float]:
        """The members' importances averaged with the ensemble's weights (members without any add nothing)."""
        total: dict[str, float] = {}
        for weight, member in zip(self.weights_[:len(self.members_)], self.members_, strict=True):
            for name, value in member.get_feature_importance().items():
                total[name] = total.get(name, 0.0) + float(weight) * value
        return total

    # ------------------------------------------------------------ export
    def export_onnx(self, path: Path) -> None:
        self.export_strategy(path, self.strategy)

    def export_strategy(self, path: Path, strategy: str) -> None:
        """One ONNX graph: every member, the ``strategy`` combiner, NaN handling, ``degraded``."""
        import onnx

        if strategy.startswith("member_"):
            self._alone(strategy).export_onnx(path)
            return
        protos = []
        with tempfile.TemporaryDirectory() as folder:
            for i, member in enumerate(self.members_):
                member.export_onnx(Path(folder) / f"m{i}.onnx")
                protos.append(onnx.load(Path(folder) / f"m{i}.onnx"))
        spec = self.combiner_spec(strategy)
        regime_states: tuple[str, ...] = ()
        if self.regime_member_ is not None:
            regime_states = tuple(self.members_[self.regime_member_].regimes_.state_names_)  # type: ignore[attr-defined]
        path.write_bytes(ensemble_graph(protos, spec, self.regime_member_, regime_states).SerializeToString())
