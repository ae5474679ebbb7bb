"""Per-feature explanations of a prediction: what pushed a call up or down.

- :mod:`bse_predict.explain.contributions`: the additive decomposition every explainable family returns,
  and the weighted sum an ensemble makes of its members';
- :mod:`bse_predict.explain.trees`: the decompositions of scikit-learn forests (exact path
  decomposition) and XGBoost boosters (TreeSHAP, on the margin);
- :mod:`bse_predict.explain.link`: margin contributions carried into probability, exactly;
- :mod:`bse_predict.explain.explanation`: the message (every feature's share of one call) and its human line;
- :mod:`bse_predict.explain.explainer`: a published prediction explained from its version's native
  models and the candles of its window.

docs/explanations.md is the reader's guide.
"""
