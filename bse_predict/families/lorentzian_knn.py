"""Lorentzian k-nearest neighbours (and its Euclidean baseline) over a few scaled features.

In the spirit of the "Machine Learning: Lorentzian Classification" indicator,
made honest for this project (``docs/models/lorentzian.md``):

* neighbours carry our first-touch barrier labels (up, down, none), not the
  indicator's backward-looking "did price rise over the last 4 bars" label;
* each chosen feature is clipped to its TRAINING 1st-99th percentiles and
  mapped to [0, 1] (fitted state; rows scored later never move it);
* the neighbour pool is spaced (every ``spacing``-th training row, so
  neighbours are not near-copies of consecutive hours) and bounded (the newest
  ``max_pool`` of those, or ``max_pool`` spread evenly over them: see
  :func:`pool_rows`);
* probabilities are the k neighbours' class counts smoothed towards the
  training class shares: ``(counts + smoothing * prior) / (k + smoothing)``.

The Lorentzian distance is ``d(x, y) = sum_i ln(1 + |x_i - y_i|)``. Since ln is
increasing, the nearest neighbours are those with the smallest
``exp(d) = prod_i (1 + |x_i - y_i|)``, and that product is what both numpy and
the ONNX graph rank by: one Sub, Abs, Add and Mul per feature, chained in
column order. Every such float32 operation is correctly rounded (IEEE 754), so
numpy and ONNX Runtime compute bit-identical keys, pick the same neighbours and
break ties the same way; a Log and a ReduceSum would depend on each library's
log approximation and summation order. The Euclidean baseline ranks by the
squared distance ``sum_i (x_i - y_i)^2`` (accumulated in column order) for the
same reason: sqrt is increasing.

Ties: among pool rows with equal keys the one with the lower pool index (the
older row) comes first. That is ONNX TopK's rule; numpy follows it with a
stable argsort.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bse_predict.families.base import ONNX_OUTPUT, BasePredictor, register
from bse_predict.families.onnx_limits import TARGET_OPSET, cap_ir_version
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.labels.first_touch import CLASS_NAMES

__all__ = [
    "LorentzianKnnPredictor",
    "EuclideanKnnPredictor",
    "DEFAULT_FEATURES",
    "Metric",
    "lorentzian_distance",
    "euclidean_distance",
    "ranking_keys",
    "pool_rows",
]

Metric = Literal["lorentzian", "euclidean"]
METRICS: tuple[str, ...] = ("lorentzian", "euclidean")
PoolFrom = Literal["newest", "spread"]
POOL_FROM: tuple[str, ...] = ("newest", "spread")

DEFAULT_FEATURES: tuple[str, ...] = (
    "rsi_12",  # the indicator's RSI(14)
    "rsi_24",  # a slower RSI (the indicator also reads RSI(9))
    "bb_position_24",  # CCI-like: distance from the mean in standard deviations
    "momentum_24",  # WaveTrend-like: one-day log return
    "range_position_48",  # stochastic-like: where the close sits in the two-day range
    "volatility_ratio_6_24",  # ADX-like regime: is volatility expanding or contracting
)
"""The features read by default, chosen by name from :data:`FEATURE_NAMES`."""

CLIP_PERCENTILES = (1.0, 99.0)
"""Each chosen column is clipped to these percentiles of its training rows, then mapped to [0, 1]."""

_CHUNK_CELLS = 1 << 20
"""Query rows per numpy chunk are chosen so a [rows, pool] float32 key matrix stays near 4 MB."""


def lorentzian_distance(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """``sum_i ln(1 + |x_i - y_i|)`` in float64: the reference definition (ranking uses its exp)."""
    return float(np.sum(np.log1p(np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)))))


def euclidean_distance(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """``sqrt(sum_i (x_i - y_i)^2)`` in float64 (ranking uses its square)."""
    return float(np.sqrt(np.sum((np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2)))


def pool_rows(n_rows: int, spacing: int, max_pool: int, pool_from: str) -> np.ndarray:
    """int64: the training rows kept as neighbours, oldest first.

    Spaced: every ``spacing``-th row counted back from the newest (the last) row. Bounded:
    at most ``max_pool`` of them, either the newest (``"newest"``) or spread evenly over
    all of them, first and last included (``"spread"``). Rows are taken to be in time
    order; when the trainer concatenates several symbols, one after the other, "newest"
    would keep the last symbol's rows only, and "spread" keeps every symbol's share.
    """
    spaced = np.arange(n_rows - 1, -1, -spacing)[::-1]
    if len(spaced) <= max_pool:
        return spaced
    if pool_from == "newest":
        return spaced[-max_pool:]
    # step (len - 1) / (max_pool - 1) > 1, so the rounded positions are distinct
    return spaced[np.round(np.linspace(0, len(spaced) - 1, max_pool)).astype(np.int64)]


def ranking_keys(queries: np.ndarray, pool: np.ndarray, metric: str) -> np.ndarray:
    """float32[n, P]: a key increasing with the distance from each query to each pool row.

    Lorentzian: ``prod_i (1 + |q_i - p_i|)`` (= exp of the distance); Euclidean:
    ``sum_i (q_i - p_i)^2``. Both float32, accumulated column by column in the
    order the ONNX graph uses, so the two agree to the bit.
    """
    q = np.asarray(queries, dtype=np.float32)
    p = np.asarray(pool, dtype=np.float32)
    one = np.float32(1.0)

    def term(i: int) -> np.ndarray:
        diff = q[:, i : i + 1] - p[None, :, i]
        return np.abs(diff) + one if metric == "lorentzian" else diff * diff

    keys = term(0)
    for i in range(1, q.shape[1]):
        keys = keys * term(i) if metric == "lorentzian" else keys + term(i)
    return keys


@register
class LorentzianKnnPredictor(BasePredictor):
    """k nearest neighbours by the Lorentzian distance in a spaced, bounded pool of training rows."""

    family = "lorentzian_knn"
    fast_params: ClassVar[dict[str, Any]] = {"k": 8, "spacing": 4, "max_pool": 300}
    skipped_checks: ClassVar[dict[str, str]] = {
        "additivity": "not a tree family: a neighbour vote has no per-feature contributions"}

    def __init__(self, k: int = 8, feature_names: tuple[str, ...] | None = None, spacing: int = 4,
                 max_pool: int = 2000, pool_from: PoolFrom = "newest", smoothing: float = 1.0,
                 metric: Metric = "lorentzian", seed: int = 7) -> None:
        self.k = k
        self.feature_names = feature_names
        self.spacing = spacing
        self.max_pool = max_pool
        self.pool_from = pool_from
        self.smoothing = smoothing
        self.metric = metric
        self.seed = seed  # unused: fitting is deterministic; kept for the interface

    # ------------------------------------------------------------ learning
    def train(self, X: np.ndarray, y: np.ndarray,
              validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        """Fit the scaler and the pool on ``X`` (rows in time order, oldest first)."""
        self._check_hyperparameters()
        y = np.asarray(y, dtype=np.int64)
        if len(X) == 0 or len(X) != len(y):
            raise ValueError(f"need as many labels as rows, and at least one row; got {len(X)} rows, {len(y)} labels")
        names = tuple(self.feature_names) if self.feature_names is not None else DEFAULT_FEATURES
        unknown = [name for name in names if name not in FEATURE_NAMES]
        if unknown or not names:
            raise ValueError(f"feature_names must be a non-empty subset of FEATURE_NAMES; unknown: {unknown}")
        self.columns_ = np.array([FEATURE_NAMES.index(name) for name in names], dtype=np.int64)

        chosen = np.asarray(X, dtype=np.float32)[:, self.columns_]
        low, high = np.percentile(chosen.astype(np.float64), CLIP_PERCENTILES, axis=0)
        self.clip_low_ = low.astype(np.float32)
        self.clip_high_ = np.maximum(high.astype(np.float32), self.clip_low_)
        width = self.clip_high_ - self.clip_low_
        self.scale_width_ = np.where(width > 0, width, np.float32(1.0)).astype(np.float32)

        kept = pool_rows(len(X), self.spacing, self.max_pool, self.pool_from)
        self.pool_rows_ = kept
        self.pool_ = self._scale(chosen[kept])
        self.pool_labels_ = y[kept]
        self.k_ = min(self.k, len(kept))
        counts = np.bincount(y, minlength=len(CLASS_NAMES)).astype(np.float64)
        self.prior_ = counts / counts.sum()
        self.smoothed_prior_ = (self.smoothing * self.prior_).astype(np.float32)

        evaluated = validation_data or (X, y)
        return self.validate(*evaluated, reference_labels=y)

    def _check_hyperparameters(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.pool_from not in POOL_FROM:
            raise ValueError(f"pool_from must be one of {POOL_FROM}, got {self.pool_from!r}")
        for name in ("k", "spacing", "max_pool"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.smoothing >= 0:
            raise ValueError(f"smoothing must be >= 0, got {self.smoothing!r}")

    def _scale(self, chosen: np.ndarray) -> np.ndarray:
        """float32: clip to the training percentiles, then map to [0, 1] (as the graph does)."""
        clipped = np.minimum(np.maximum(chosen.astype(np.float32), self.clip_low_), self.clip_high_)
        return (clipped - self.clip_low_) / self.scale_width_

    def neighbours(self, X: np.ndarray) -> np.ndarray:
        """int64[n, k]: pool indices of each row's k nearest, nearest first, lower index first on ties."""
        queries = self._scale(np.asarray(X, dtype=np.float32)[:, self.columns_])
        rows_per_chunk = max(1, _CHUNK_CELLS // len(self.pool_))
        out = np.empty((len(queries), self.k_), dtype=np.int64)
        for start in range(0, len(queries), rows_per_chunk):
            keys = ranking_keys(queries[start : start + rows_per_chunk], self.pool_, self.metric)
            out[start : start + rows_per_chunk] = np.argsort(keys, axis=1, kind="stable")[:, : self.k_]
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The neighbours are the graph's to the bit; the vote is then counted in float64 (the
        graph's float32 vote differs by a few 1e-8 and sums to 1 less exactly)."""
        labels = self.pool_labels_[self.neighbours(X)]
        counts = np.stack([(labels == c).sum(axis=1) for c in range(len(CLASS_NAMES))], axis=1)
        return (counts + self.smoothing * self.prior_) / (self.k_ + self.smoothing)

    def get_feature_importance(self) -> dict[str, float]:
        """Empty: a neighbour vote has no per-feature weights, and a permutation importance
        would need held-out rows, which this method is not given."""
        return {}

    # ------------------------------------------------------------ export
    def export_onnx(self, path: Path) -> None:
        """features [batch, 82] -> Gather -> clip and scale -> per-feature Sub/Abs(/Add 1)
        chained by Mul (Lorentzian) or Add (Euclidean) -> TopK(k, smallest) -> Gather
        labels -> OneHot -> ReduceSum -> (+ smoothing * prior) / (k + smoothing)."""
        import onnx
        from onnx import TensorProto, helper

        n_features = len(self.columns_)
        nodes = [
            helper.make_node("Gather", [self.input_kind, "columns"], ["chosen"], axis=1),
            helper.make_node("Max", ["chosen", "clip_low"], ["above_low"]),
            helper.make_node("Min", ["above_low", "clip_high"], ["clipped"]),
            helper.make_node("Sub", ["clipped", "clip_low"], ["shifted"]),
            helper.make_node("Div", ["shifted", "scale_width"], ["scaled"]),
            helper.make_node("Split", ["scaled"], [f"q_{i}" for i in range(n_features)], axis=1),
            *self._distance_nodes(n_features),
            helper.make_node("TopK", [f"key_{n_features - 1}", "k"], ["nearest_keys", "nearest"],
                             axis=1, largest=0, sorted=1),
            helper.make_node("Gather", ["pool_labels", "nearest"], ["nearest_labels"], axis=0),
            helper.make_node("OneHot", ["nearest_labels", "n_classes", "one_hot_values"], ["votes"], axis=-1),
            helper.make_node("ReduceSum", ["votes", "neighbour_axis"], ["counts"], keepdims=0),
            helper.make_node("Add", ["counts", "smoothed_prior"], ["smoothed_counts"]),
            helper.make_node("Div", ["smoothed_counts", "total"], [ONNX_OUTPUT]),
        ]
        graph = helper.make_graph(
            nodes, self.family, [helper.make_tensor_value_info(self.input_kind, TensorProto.FLOAT,
                                                               [None, len(FEATURE_NAMES)])],
            [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, [None, len(CLASS_NAMES)])],
            self._onnx_constants(n_features),
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET)],
                                  producer_name="bse-predict")
        cap_ir_version(proto)
        onnx.checker.check_model(proto, full_check=True)
        path.write_bytes(proto.SerializeToString())

    def _onnx_constants(self, n_features: int) -> list[Any]:
        """The graph's initializers: the fitted scaling, the pool (one column per feature), its labels and the prior."""
        from onnx import numpy_helper

        initializers = [
            numpy_helper.from_array(self.columns_, "columns"),
            numpy_helper.from_array(self.clip_low_, "clip_low"),
            numpy_helper.from_array(self.clip_high_, "clip_high"),
            numpy_helper.from_array(self.scale_width_, "scale_width"),
            numpy_helper.from_array(np.array([self.k_], dtype=np.int64), "k"),
            numpy_helper.from_array(self.pool_labels_.astype(np.int64), "pool_labels"),
            numpy_helper.from_array(np.array(len(CLASS_NAMES), dtype=np.int64), "n_classes"),
            numpy_helper.from_array(np.array([0.0, 1.0], dtype=np.float32), "one_hot_values"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "neighbour_axis"),
            numpy_helper.from_array(self.smoothed_prior_, "smoothed_prior"),
            numpy_helper.from_array(np.array(np.float32(self.k_) + np.float32(self.smoothing), dtype=np.float32),
                                    "total"),
        ]
        initializers += [numpy_helper.from_array(np.ascontiguousarray(self.pool_[:, i]), f"pool_{i}")
                         for i in range(n_features)]
        if self.metric == "lorentzian":
            initializers.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"))
        return initializers

    def _distance_nodes(self, n_features: int) -> list[Any]:
        """``q_i`` [batch, 1] and ``pool_i`` [P] -> ``key_{n_features - 1}`` [batch, P], the ranking key
        of :func:`ranking_keys`: a product of (1 + |q_i - p_i|) (Lorentzian) or a sum of squares (Euclidean)."""
        from onnx import helper

        nodes = []
        for i in range(n_features):
            nodes.append(helper.make_node("Sub", [f"q_{i}", f"pool_{i}"], [f"diff_{i}"]))
            if self.metric == "lorentzian":
                nodes.append(helper.make_node("Abs", [f"diff_{i}"], [f"abs_{i}"]))
                nodes.append(helper.make_node("Add", [f"abs_{i}", "one"], [f"term_{i}"]))
            else:
                nodes.append(helper.make_node("Mul", [f"diff_{i}", f"diff_{i}"], [f"term_{i}"]))
            if i > 0:
                combine = "Mul" if self.metric == "lorentzian" else "Add"
                nodes.append(helper.make_node(combine, [f"key_{i - 1}", f"term_{i}"], [f"key_{i}"]))
            else:
                nodes.append(helper.make_node("Identity", ["term_0"], ["key_0"]))
        return nodes


@register
class EuclideanKnnPredictor(LorentzianKnnPredictor):
    """The comparison baseline: the same neighbour vote with the Euclidean distance."""

    family = "euclidean_knn"

    def __init__(self, k: int = 8, feature_names: tuple[str, ...] | None = None, spacing: int = 4,
                 max_pool: int = 2000, pool_from: PoolFrom = "newest", smoothing: float = 1.0,
                 metric: Metric = "euclidean", seed: int = 7) -> None:
        super().__init__(k=k, feature_names=feature_names, spacing=spacing, max_pool=max_pool,
                         pool_from=pool_from, smoothing=smoothing, metric=metric, seed=seed)
