"""Market regimes: the Gaussian HMM read with the forward filter, gathered in one place.

A facade over three modules, for callers that want the whole of it:

- :mod:`bse_predict.families.regime_model`: the model (observations, fitting, state names
  and their matching across refits, the numpy forward filter, the hybrid's summary columns);
- :mod:`bse_predict.families.regime_graphs`: the filter as ONNX graphs, for serving;
- :mod:`bse_predict.families.regime_diagnostics`: how well the states identify regimes.
"""

from __future__ import annotations

from bse_predict.families import regime_diagnostics as _diagnostics
from bse_predict.families import regime_graphs as _graphs
from bse_predict.families import regime_model as _model
from bse_predict.families.regime_diagnostics import *  # noqa: F403
from bse_predict.families.regime_graphs import *  # noqa: F403
from bse_predict.families.regime_model import *  # noqa: F403

__all__ = [*_model.__all__, *_graphs.__all__, *_diagnostics.__all__]
