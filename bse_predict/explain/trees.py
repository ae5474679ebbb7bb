"""The per-feature contributions of tree ensembles, from the libraries' own fitted trees.

- scikit-learn forests: the exact path decomposition (Saabas; the ``treeinterpreter``
  method). Each tree's answer is the class shares of the leaf a row reaches; walking
  from the root, every split moves the shares from its node's to its child's, and
  that move is credited to the split's feature. The moves along a path add up to
  leaf − root, so the forest's mean over trees is its ``predict_proba`` exactly,
  with the mean root shares (the training class shares) as the bias. In
  probability space.
- XGBoost boosters: TreeSHAP (``pred_contribs=True``), exact Shapley values of
  the path-dependent tree model, per class, on the margin (the softmax's input);
  they add up to the margin with the last column as the bias.
  :func:`bse_predict.explain.link.softmax_path` carries them into probability.
- LightGBM boosters: the same TreeSHAP values from LightGBM's own ``pred_contrib=True``, per
  class on the margin, the last column of each class the bias.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["forest_contributions", "booster_contributions", "lightgbm_contributions"]


def forest_contributions(forest: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fitted scikit-learn forest classifier over float32 rows ``X`` [n, F] -> (values float64[n, F, C],
    bias float64[C]) over the forest's ``classes_``: ``bias + values.sum(axis=1)`` is its ``predict_proba``."""
    X = np.ascontiguousarray(X, dtype=np.float32)  # what the trees' own decision_path reads
    values = np.zeros((len(X), X.shape[1], forest.n_classes_))
    bias = np.zeros(forest.n_classes_)
    for tree in forest.estimators_:
        structure = tree.tree_
        counts = structure.value[:, 0, :]
        shares = counts / counts.sum(axis=1, keepdims=True)
        parent = np.full(structure.node_count, -1)
        split = np.flatnonzero(structure.children_left >= 0)
        parent[structure.children_left[split]] = split
        parent[structure.children_right[split]] = split
        path = structure.decision_path(X).tocoo()
        below_root = path.col != 0
        rows, nodes = path.row[below_root], path.col[below_root]
        np.add.at(values, (rows, structure.feature[parent[nodes]]), shares[nodes] - shares[parent[nodes]])
        bias += shares[0]
    return values / len(forest.estimators_), bias / len(forest.estimators_)


def booster_contributions(booster: Any, X: np.ndarray, iteration_range: tuple[int, int],
                          ) -> tuple[np.ndarray, np.ndarray]:
    """A multi-class XGBoost booster over float32 rows ``X`` [n, F] -> (values float64[n, F, C],
    bias float64[n, C]) on the margin: ``bias + values.sum(axis=1)`` is its ``output_margin``."""
    import xgboost as xgb

    raw = booster.predict(xgb.DMatrix(X), pred_contribs=True, iteration_range=iteration_range)
    raw = np.asarray(raw, dtype=np.float64).reshape(len(X), -1, X.shape[1] + 1)  # [n, C, F + 1]
    return raw[:, :, :-1].transpose(0, 2, 1), raw[:, :, -1]


def lightgbm_contributions(booster: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A multi-class LightGBM booster over float32 rows ``X`` [n, F] -> (values float64[n, F, C],
    bias float64[n, C]) on the margin: ``bias + values.sum(axis=1)`` is its ``raw_score``."""
    raw = np.asarray(booster.predict(X, pred_contrib=True), dtype=np.float64)
    raw = raw.reshape(len(X), -1, X.shape[1] + 1)  # [n, C, F + 1]
    return raw[:, :, :-1].transpose(0, 2, 1), raw[:, :, -1]
