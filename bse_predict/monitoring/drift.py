"""Population stability index (PSI) between a feature's training and live distributions.

At train time each feature gets bin edges (quantiles of its training values,
so every bin holds about the same share) and the expected share per bin
(:func:`training_bins`); the manifest records both. Live values are counted
into the same bins (:func:`bin_counts`) and compared:

``PSI = Σ_b (a_b - e_b) · ln(a_b / e_b)`` over bins ``b``, with the expected
share ``e_b`` and the live share ``a_b`` each floored at ``1e-4`` so an empty
bin gives a large but finite term. Rules of thumb: below 0.1 stable, 0.1 to
0.25 a moderate shift, above 0.25 a significant one. Values outside the
training range fall into the first or last bin; NaN values are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = ["SHARE_FLOOR", "FeatureBins", "training_bins", "bin_counts", "BinLayout", "psi", "feature_psi", "WindowPsi"]

SHARE_FLOOR = 1e-4


class FeatureBins(BaseModel):
    """Inner bin edges (``len(expected) - 1`` of them, increasing) and the training share per bin."""

    model_config = ConfigDict(frozen=True)

    edges: tuple[float, ...]
    expected: tuple[float, ...]


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """int64[len(edges) + 1]: how many finite values fall in each bin (bin i is [edges[i-1], edges[i]))."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(index, minlength=len(edges) + 1).astype(np.int64)


class BinLayout:
    """Every binned feature's bins side by side in one count vector, so a batch of rows is counted, per
    group (a day), with one ``searchsorted`` per feature and one ``bincount``; :attr:`fields` names each
    position ``"feature|bin"``. Counting matches :func:`bin_counts` feature by feature."""

    def __init__(self, bins: Mapping[str, FeatureBins], names: Sequence[str]) -> None:
        self.columns = [column for column, name in enumerate(names) if name in bins]
        self._edges = [np.asarray(bins[names[column]].edges, dtype=np.float64) for column in self.columns]
        widths = [len(edges) + 1 for edges in self._edges]
        self._offsets = np.concatenate(([0], np.cumsum(widths)[:-1])).astype(np.int64)
        self.size = int(sum(widths))
        self.fields = [f"{names[column]}|{b}" for column, width in zip(self.columns, widths, strict=True)
                       for b in range(width)]

    def counts(self, features: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
        """int64[n_groups, size]: counts of ``features`` (float[n, F]) rows by group (int[n] in [0, n_groups))."""
        groups = np.asarray(groups, dtype=np.int64)
        flat = []
        for offset, column, edges in zip(self._offsets, self.columns, self._edges, strict=True):
            values = np.asarray(features[:, column], dtype=np.float64)
            finite = np.isfinite(values)
            flat.append(groups[finite] * self.size + offset + np.searchsorted(edges, values[finite], side="right"))
        merged = np.concatenate(flat) if flat else np.empty(0, dtype=np.int64)
        return np.bincount(merged, minlength=n_groups * self.size).reshape(n_groups, self.size).astype(np.int64)


def training_bins(features: np.ndarray, names: Sequence[str], bins: int = 10) -> dict[str, FeatureBins]:
    """Quantile bins of every feature column (float[n, F]); duplicate edges (discrete features) merge."""
    features = np.asarray(features, dtype=np.float64)
    result = {}
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    for column, name in enumerate(names):
        values = features[:, column]
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        edges = np.unique(np.quantile(values, quantiles))
        counts = bin_counts(values, edges)
        result[name] = FeatureBins(edges=tuple(float(e) for e in edges),
                                   expected=tuple(float(c) for c in counts / counts.sum()))
    return result


def psi(expected: Sequence[float], actual_counts: Sequence[float]) -> float:
    """PSI of live counts against the expected shares (see the module docstring)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), SHARE_FLOOR)
    counts = np.asarray(actual_counts, dtype=np.float64)
    if counts.shape != e.shape:
        raise ValueError(f"{counts.shape[0]} live bins for {e.shape[0]} expected shares")
    total = counts.sum()
    if total <= 0:
        raise ValueError("no live values to compare")
    a = np.maximum(counts / total, SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(bins: Mapping[str, FeatureBins], live_counts: Mapping[str, Sequence[float]],
                min_rows: int) -> dict[str, float]:
    """{feature: PSI} of the binned features with at least ``min_rows`` live values."""
    return {name: psi(bins[name].expected, counts) for name, counts in live_counts.items()
            if name in bins and sum(counts) >= min_rows}


class WindowPsi(NamedTuple):
    """A version's drift over a window of days: every judged feature's PSI, and each binned feature's live rows."""

    psi: dict[str, float]
    rows: dict[str, int]
