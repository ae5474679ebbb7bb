"""The PyTorch networks of the torch families (:mod:`bse_predict.families.tcn`,
:mod:`bse_predict.families.lstm_hybrid`).

This module imports torch at its top, so the families package does not import it when it
lists the families (``bse_predict/families/__init__.py`` skips it); the families import it
inside their methods. Every network reads the raw inputs the worker builds and does the rest
itself (crop to the hours it reads, standardise with training constants held as buffers), so
the exported graph takes exactly ``sequence`` float32[B, 168, 4] (and ``features`` float32[B, F]).
``forward`` returns logits; :class:`Probabilities` adds the softmax that is served.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["Standardise", "TemporalConvNet", "LSTMHybridNet", "Probabilities", "STANDARD_CLIP"]

STANDARD_CLIP = 10.0
"""Standardised inputs are clipped to ±this: one extreme hour (a listing day's volume) cannot
saturate every unit."""


class Standardise(nn.Module):
    """(x - mean) / scale per last-axis column, clipped to ±:data:`STANDARD_CLIP`; constants as buffers."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("inverse_scale", torch.tensor(1.0 / scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - self.mean) * self.inverse_scale, -STANDARD_CLIP, STANDARD_CLIP)


class _CausalBlock(nn.Module):
    """A dilated convolution that sees only the current and earlier hours, with a residual path."""

    def __init__(self, channels_in: int, channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.trim = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(channels_in, channels, kernel_size, dilation=dilation, padding=self.trim)
        self.skip = nn.Conv1d(channels_in, channels, 1) if channels_in != channels else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Padding both ends and dropping the right end's outputs: step t reads steps <= t only.
        h = torch.relu(self.conv(x)[:, :, :-self.trim])
        return torch.relu(self.dropout(h) + self.skip(x))


class TemporalConvNet(nn.Module):
    """Input [B, 168, 4] -> the last ``sequence_length`` hours, standardised -> ``levels`` causal blocks
    (dilations 1, 2, 4, ...) -> the newest hour's channels -> Linear(3) logits."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, sequence_length: int, channels: int, levels: int,
                 kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.sequence_length = sequence_length
        self.standardise = Standardise(mean, scale)
        widths = [len(mean)] + [channels] * levels
        self.blocks = nn.Sequential(*(_CausalBlock(widths[i], channels, kernel_size, 2 ** i, dropout)
                                      for i in range(levels)))
        self.head = nn.Linear(channels, 3)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        x = self.standardise(sequence[:, -self.sequence_length:, :]).transpose(1, 2)
        return self.head(self.blocks(x)[:, :, -1])


class LSTMHybridNet(nn.Module):
    """The plan's hybrid in one graph: an LSTM's last hidden state over the last ``sequence_length``
    hours (the sequence's embedding) concatenated with the standardised features -> a ReLU layer ->
    Linear(3) logits."""

    def __init__(self, sequence_mean: np.ndarray, sequence_scale: np.ndarray, feature_mean: np.ndarray,
                 feature_scale: np.ndarray, sequence_length: int, units: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.sequence_length = sequence_length
        self.standardise_sequence = Standardise(sequence_mean, sequence_scale)
        self.standardise_features = Standardise(feature_mean, feature_scale)
        self.lstm = nn.LSTM(len(sequence_mean), units, batch_first=True)
        self.mix = nn.Linear(units + len(feature_mean), hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 3)

    def forward(self, features: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(self.standardise_sequence(sequence[:, -self.sequence_length:, :]))
        joined = torch.cat([hidden[-1], self.standardise_features(features)], dim=1)
        return self.head(self.dropout(torch.relu(self.mix(joined))))


class Probabilities(nn.Module):
    """A network's logits -> softmax probabilities (up, down, none): what is served and exported."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(*inputs), dim=1)
