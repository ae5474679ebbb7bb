"""Per-feature contributions: an additive decomposition of a model's class probabilities.

For every row, in probability space and for each class (up, down, none)::

    output = bias + Σ_f values[f] + unexplained

``bias`` is what the explained trees answer before they look at the row (their
expected value over their training rows), ``values[f]`` what column ``f`` of the
row moved that answer, and ``unexplained`` the part that no column accounts
for: the weighted answers of an ensemble's members that are not tree families
(0 for a tree family alone). Each column's contributions sum to 0 over the three
classes, since probabilities always sum to 1. ``output`` equals the model's
``predict_proba`` for the row: the families' shared check suite proves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Contributions", "weighted_sum"]


@dataclass(frozen=True)
class Contributions:
    """Rows' decompositions; see the module docstring."""

    names: tuple[str, ...]
    """The columns the trees read, one per ``values[:, f]``."""
    inputs: np.ndarray
    """float64[n, F]: each column's value in each row."""
    values: np.ndarray
    """float64[n, F, 3]: each column's contribution to (p_up, p_down, p_none)."""
    bias: np.ndarray
    """float64[n, 3]."""
    unexplained: np.ndarray
    """float64[n, 3]."""
    method: str
    """How the numbers were computed, for a reader."""

    def output(self) -> np.ndarray:
        """float64[n, 3]: the model's probabilities, as the decomposition adds them up."""
        return self.bias + self.values.sum(axis=1) + self.unexplained

    def renamed(self, names: Sequence[str]) -> Contributions:
        if len(names) != len(self.names):
            raise ValueError(f"{len(names)} names for {len(self.names)} columns")
        return replace(self, names=tuple(names))


def weighted_sum(members: Sequence[tuple[str, Contributions | np.ndarray]], weights: np.ndarray) -> Contributions:
    """An ensemble's decomposition: the members' weighted, row by row.

    ``members``: (name, its decomposition, or its probabilities float[n, 3] when it has none);
    ``weights``: float[n, M], each row summing to 1. A member without a decomposition adds its
    weighted probabilities to ``unexplained``. Columns of the same name are one column when every
    member reading it reads the same values (the 82 features); otherwise (two hybrids' regime columns,
    each from its own HMM) the later one is named ``member:column``.
    """
    n = len(weights)
    columns: dict[str, int] = {}
    names: list[str] = []
    inputs: list[np.ndarray] = []
    parts: list[tuple[int, np.ndarray, np.ndarray]] = []  # (column, weight [n, 1], values [n, 3])
    bias, unexplained = np.zeros((n, 3)), np.zeros((n, 3))
    methods, plain = [], []
    for m, (member, part) in enumerate(members):
        w = weights[:, m][:, None]
        if not isinstance(part, Contributions):
            unexplained += w * part
            plain.append(member)
            continue
        bias += w * part.bias
        unexplained += w * part.unexplained
        methods.append(f"{member}: {part.method}")
        for f, name in enumerate(part.names):
            column = columns.get(name)
            if column is None or not np.array_equal(inputs[column], part.inputs[:, f]):
                name = name if column is None else f"{member}:{name}"
                column = columns[name] = len(names)
                names.append(name)
                inputs.append(part.inputs[:, f])
            parts.append((column, w, part.values[:, f]))
    values = np.zeros((n, len(names), 3))
    for column, w, contribution in parts:
        values[:, column] += w * contribution
    if plain:
        methods.append(f"{', '.join(plain)}: no per-feature contributions (their weighted answer is unexplained)")
    return Contributions(tuple(names), np.column_stack(inputs) if inputs else np.zeros((n, 0)), values, bias,
                         unexplained, "weighted sum of the members' contributions; " + "; ".join(methods))
