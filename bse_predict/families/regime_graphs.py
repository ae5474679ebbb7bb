"""The regime model's forward filter as ONNX graphs (opset 17, IR capped), for serving.

- :func:`filter_graph`: the filtered regime probabilities at a window's last hour, and with an
  outcome map the (up, down, none) probabilities of ``hmm_regime``; the recursion is a
  balanced tree of matrix products (:func:`_tree_recursion`).
- :func:`regime_feature_graph`: the summary columns of
  :func:`bse_predict.families.regime_model.regime_features`, in float64, hour by hour (a ``Scan``),
  which the hybrid families put before their trees.

Both read ``sequence`` float32[batch, hours, 4] and name the states in the metadata property
``regime_states``. tests/unit/test_regimes.py checks them against the numpy filter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bse_predict.families.regime_model import RANGE_FIELD, RETURN_FIELD, VOLATILITY_FLOOR, RegimeModel
from bse_predict.features.sequences import SEQUENCE_FIELDS, SEQUENCE_LENGTH

__all__ = ["REGIME_FEATURES_OUTPUT", "filter_graph", "regime_feature_graph"]

REGIME_FEATURES_OUTPUT = "regime_features"
"""The output of :func:`regime_feature_graph`."""


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
    ret = g.node("Gather", [fields, g.ints("row_return", [RETURN_FIELD])], "raw_return", axis=0)
    rng = g.node("Gather", [fields, g.ints("row_range", [RANGE_FIELD])], "raw_range", axis=0)
    vol = g.node("Log", [g.node("Add", [rng, g.const("volatility_floor", VOLATILITY_FLOOR)], "range_floored")],
                 "raw_vol")
    raw = g.node("Concat", [ret, vol], "raw_obs", axis=0)
    z = g.node("Div", [g.node("Sub", [raw, g.const("obs_mean", model.obs_mean_[:, None, None])], "obs_centred"),
                       g.const("obs_std", model.obs_std_[:, None, None])], "obs")  # [d, N, T]
    # y_ke = Σ_d (z_d - μ_kd) P_kde; log p_k = c_k - |y_k|² / 2
    diff = g.node("Sub", [g.node("Unsqueeze", [z, g.ints("ax0", [0])], "obs_k"),
                          g.const("means", model.means_[:, :, None, None])], "diff")  # [K, d, N, T]
    precision = model.chol_precision_
    if np.array_equal(precision, precision * np.eye(precision.shape[1])):
        # diagonal covariances (the default): y_kd = (z_d - μ_kd) P_kdd, the same numbers as the sum
        # below (its other terms are exact zeros) at a d-th of the work
        y = g.node("Mul", [diff, g.const("chol_precision_diagonal",
                                         np.diagonal(precision, axis1=1, axis2=2)[:, :, None, None])], "whitened")
    else:
        terms = g.node("Mul", [g.node("Unsqueeze", [diff, g.ints("ax2", [2])], "diff_e"),
                               g.const("chol_precision", precision[:, :, :, None, None])],
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
    """:func:`~bse_predict.families.regime_model.regime_features` as an ONNX graph (opset 17,
    IR capped): input ``sequence`` float32[batch, hours, 4], output ``regime_features``
    float32[batch, K + 3] with the columns of
    :func:`~bse_predict.families.regime_model.regime_feature_names`. The filter runs hour by hour
    (a ``Scan``) because the time in state needs the filtered regime of every hour, not only the last.

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
