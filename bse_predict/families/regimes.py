"""Market regimes: the Gaussian HMM read with the forward filter, gathered in one place.

A facade over three modules, for callers that want the whole of it:

- :mod:`bse_predict.families.regime_model`: the model (observations, fitting, state names
  and their matching across refits, the numpy forward filter, the hybrid's summary columns);
- :mod:`bse_predict.families.regime_graphs`: the filter as ONNX graphs, for serving;
- :mod:`bse_predict.families.regime_diagnostics`: how well the states identify regimes.
"""

from __future__ import annotations

from bse_predict.families.regime_diagnostics import regime_diagnostics
from bse_predict.families.regime_graphs import REGIME_FEATURES_OUTPUT, filter_graph, regime_feature_graph
from bse_predict.families.regime_model import (
    FOUR_STATE_NAMES,
    OBSERVATION_NAMES,
    TRANSITION_FLOOR,
    VOLATILITY_FLOOR,
    RegimeModel,
    align_states,
    history_fields,
    match_states,
    raw_observations,
    regime_feature_names,
    regime_features,
    stitch_windows,
    unfitted_regime_model,
)

__all__ = [
    "OBSERVATION_NAMES",
    "FOUR_STATE_NAMES",
    "VOLATILITY_FLOOR",
    "TRANSITION_FLOOR",
    "RegimeModel",
    "unfitted_regime_model",
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
