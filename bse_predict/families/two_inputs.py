"""The inputs of the families that read both the 82 features and the 168-hour sequence of a row
(the regime hybrids, the LSTM hybrid): one :class:`InputRows` of the two, fed to ONNX by name."""

from __future__ import annotations

import numpy as np

from bse_predict.features.inputs import InputRows
from bse_predict.labels.first_touch import UNKNOWN
from bse_predict.training.dataset import SymbolDataset

__all__ = ["FEATURES_AND_SEQUENCE", "FeaturesAndSequence"]

FEATURES_AND_SEQUENCE = ("features", "sequence")


class FeaturesAndSequence:
    """Mixed in before the family's base class, whose single-input methods it replaces."""

    @property
    def input_kinds(self) -> tuple[str, ...]:
        return FEATURES_AND_SEQUENCE

    def prepare_data(self, dataset: SymbolDataset, target: str) -> tuple[InputRows, np.ndarray]:
        labels = dataset.labels[target]
        known = labels != UNKNOWN
        rows = InputRows({"features": dataset.features[known], "sequence": dataset.sequences(known)})
        return rows, labels[known].astype(np.int64)

    def onnx_feed(self, X: InputRows) -> dict[str, np.ndarray]:
        return X.feed()

    def rows_from_inputs(self, inputs: dict[str, np.ndarray]) -> InputRows:
        return InputRows({kind: inputs[kind] for kind in FEATURES_AND_SEQUENCE})
