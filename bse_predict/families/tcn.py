"""TCN: a small temporal convolution over the hourly sequence, in PyTorch (the plan's PyTorch adapter).

Input is the ``sequence`` kind (:mod:`bse_predict.features.sequences`): float32[batch, 168, 4],
oldest hour first. The network (:class:`bse_predict.families.torch_networks.TemporalConvNet`)
keeps the last ``sequence_length`` hours, standardises each field with training constants, and
runs ``levels`` causal residual blocks of ``channels`` filters of width ``kernel_size`` with
dilations 1, 2, 4, ...; the newest hour's channels feed a softmax over (up, down, none). The
newest hour sees 1 + (kernel_size - 1)(2^levels - 1) hours: 190 with the defaults (4, 6), the
whole week. Training, export and persistence: :mod:`bse_predict.families.torch_base`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bse_predict.families.base import register
from bse_predict.families.torch_base import N_FIELDS, Device, TorchPredictor, field_constants, sequence_array
from bse_predict.features.sequences import SEQUENCE_LENGTH

__all__ = ["TCNPredictor"]


@register
class TCNPredictor(TorchPredictor):
    family = "tcn"
    input_kind = "sequence"
    fast_params: ClassVar[dict[str, Any]] = {"sequence_length": 48, "channels": 4, "levels": 3, "epochs": 2,
                                             "patience": 1, "row_stride": 2}

    def __init__(self, sequence_length: int = SEQUENCE_LENGTH, channels: int = 16, levels: int = 6,
                 kernel_size: int = 4, dropout: float = 0.1, learning_rate: float = 2e-3, weight_decay: float = 1e-4,
                 batch_size: int = 256, epochs: int = 8, patience: int = 2, validation_fraction: float = 0.15,
                 purge_rows: int = 72, row_stride: int = 1, device: Device = "auto", seed: int = 7) -> None:
        self.sequence_length = sequence_length
        self.channels = channels
        self.levels = levels
        self.kernel_size = kernel_size
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

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        if self.kernel_size < 2 or self.levels < 1 or self.channels < 1:
            raise ValueError("kernel_size must be at least 2, levels and channels at least 1")

    def _arrays(self, X: Any) -> tuple[np.ndarray, ...]:
        return (sequence_array(X),)

    def _example_arrays(self) -> tuple[np.ndarray, ...]:
        return (np.zeros((2, SEQUENCE_LENGTH, N_FIELDS), np.float32),)

    def _fit_constants(self, arrays: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        mean, scale = field_constants(arrays[0], self.sequence_length)
        return {"mean": mean, "scale": scale}

    def _network(self, constants: dict[str, np.ndarray]) -> Any:
        from bse_predict.families.torch_networks import TemporalConvNet

        return TemporalConvNet(constants["mean"], constants["scale"], self.sequence_length, self.channels,
                               self.levels, self.kernel_size, self.dropout)
