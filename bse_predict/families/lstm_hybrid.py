"""The LSTM hybrid of the plan, in PyTorch: an LSTM's embedding of the hourly sequence
concatenated with the 82 features, one graph.

It reads two inputs, like the regime hybrid: ``features`` float32[batch, 82] and ``sequence``
float32[batch, 168, 4]; the worker builds both from its window. The network
(:class:`bse_predict.families.torch_networks.LSTMHybridNet`) runs an LSTM of ``units`` over the
last ``sequence_length`` standardised hours, joins its last hidden state to the standardised
features, and maps them through a ReLU layer of ``hidden`` units to a softmax over
(up, down, none). Training, export (the recurrence as one ONNX ``LSTM`` node) and persistence:
:mod:`bse_predict.families.torch_base`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bse_predict.families.base import register
from bse_predict.families.torch_base import N_FIELDS, Device, TorchPredictor, field_constants, sequence_array
from bse_predict.features.inputs import InputRows
from bse_predict.families.two_inputs import FEATURES_AND_SEQUENCE, FeaturesAndSequence
from bse_predict.features.sequences import SEQUENCE_LENGTH

__all__ = ["LSTMHybridPredictor"]



@register
class LSTMHybridPredictor(FeaturesAndSequence, TorchPredictor):
    family = "lstm_hybrid"
    fast_params: ClassVar[dict[str, Any]] = {"sequence_length": 24, "units": 4, "hidden": 8, "epochs": 2,
                                             "patience": 1, "row_stride": 2}

    def __init__(self, sequence_length: int = SEQUENCE_LENGTH, units: int = 16, hidden: int = 32,
                 dropout: float = 0.1, learning_rate: float = 2e-3, weight_decay: float = 1e-4, batch_size: int = 256,
                 epochs: int = 8, patience: int = 2, validation_fraction: float = 0.15, purge_rows: int = 72,
                 row_stride: int = 1, device: Device = "auto", seed: int = 7) -> None:
        self.sequence_length = sequence_length
        self.units = units
        self.hidden = hidden
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.purge_rows = purge_rows
        self.row_stride = row_stride
        self.device = device
        self.seed = seed

    def _arrays(self, X: Any) -> tuple[np.ndarray, ...]:
        if not isinstance(X, InputRows):
            raise TypeError(f"lstm_hybrid reads InputRows of {FEATURES_AND_SEQUENCE}, not {type(X).__name__}")
        features = np.ascontiguousarray(X.parts["features"], dtype=np.float32)
        if features.ndim != 2:
            raise ValueError(f"features must be [n, F], got {list(features.shape)}")
        return features, sequence_array(X.parts["sequence"])

    def _example_arrays(self) -> tuple[np.ndarray, ...]:
        return (np.zeros((2, len(self.constants_["feature_mean"])), np.float32),
                np.zeros((2, SEQUENCE_LENGTH, N_FIELDS), np.float32))

    # ------------------------------------------------------------ network
    def _fit_constants(self, arrays: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        features, sequences = arrays
        sequence_mean, sequence_scale = field_constants(sequences, self.sequence_length)
        std = features.std(axis=0, dtype=np.float64)
        return {"sequence_mean": sequence_mean, "sequence_scale": sequence_scale,
                "feature_mean": features.mean(axis=0, dtype=np.float64), "feature_scale": np.where(std > 0, std, 1.0)}

    def _network(self, constants: dict[str, np.ndarray]) -> Any:
        from bse_predict.families.torch_networks import LSTMHybridNet

        return LSTMHybridNet(constants["sequence_mean"], constants["sequence_scale"], constants["feature_mean"],
                             constants["feature_scale"], self.sequence_length, self.units, self.hidden, self.dropout)
