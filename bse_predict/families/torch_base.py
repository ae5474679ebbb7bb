"""The shared base of the PyTorch families: a seeded training loop that stops early on a purged
validation slice, predictions on the CPU, pickles without torch objects, ONNX export.

A subclass names its inputs (:attr:`input_kinds`), turns its rows into float32 arrays in that
order (:meth:`_arrays`), and builds its network from constants fitted on the training rows
(:meth:`_fit_constants`, :meth:`_network`, in :mod:`bse_predict.families.torch_networks`).

Training holds out the newest ``validation_fraction`` of the rows behind a purge of
``purge_rows`` (:func:`~bse_predict.families.base.validation_split`) unless the caller passes
``validation_data``, fits every ``row_stride``-th row with Adam, and keeps the weights of the
epoch with the lowest validation loss, stopping after ``patience`` epochs without a better one.
``device: auto`` trains on CUDA when torch finds a GPU; the fitted weights then move to the CPU,
where :meth:`predict_proba` runs, so native and ONNX answers agree however the model was trained.
torch runs with one thread and deterministic kernels: the same seed gives bitwise the same model
on the CPU.

Export: torch's TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) at the project's
opset 17, in about a second (the dynamo exporter took 11-22 s per graph here, needs onnxscript,
and writes opset 18 logs); an LSTM becomes one ONNX ``LSTM`` node. Its deprecation and constant
folding warnings are silenced; the contract suite's parity check guards the graph.
"""

from __future__ import annotations

import copy
import io
import os
import sys
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bse_predict.families.base import ONNX_OUTPUT, BasePredictor, validation_split
from bse_predict.families.onnx_limits import TARGET_OPSET, cap_ir_version
from bse_predict.features.sequences import SEQUENCE_FIELDS, SEQUENCE_LENGTH
from bse_predict.labels.first_touch import CLASS_NAMES

__all__ = ["TorchPredictor", "Device", "TORCH_THREADS", "N_FIELDS", "torch_module", "sequence_array", "field_constants"]

Device = Literal["auto", "cpu", "cuda"]
N_CLASSES = len(CLASS_NAMES)
N_FIELDS = len(SEQUENCE_FIELDS)
TORCH_THREADS = 1
"""torch's intra- and inter-op threads, as for TensorFlow: one leaves a core free on a 2-core machine.
Process-wide, set by the first torch family that runs."""
_PREDICT_CHUNK_ROWS = 4096
_GRAD_CLIP_NORM = 1.0


def torch_module() -> Any:
    """Import torch, single-threaded and deterministic (once per process)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read at CUDA start
    # Triton (torch's GPU compiler, unused here: nothing is torch.compile'd) carries its own LLVM, and loading it
    # in a process that holds TensorFlow's aborts the process ("Option ... registered more than once").
    # torch.optim imports torch._dynamo, which imports triton when it can: make that import fail instead.
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]
    import torch

    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)
    try:
        torch.set_num_interop_threads(TORCH_THREADS)
    except RuntimeError:  # already set, or parallel work already ran: the pool stays as it is
        pass
    # Not torch.use_deterministic_algorithms: it imports torch._inductor, whose LLVM (triton) aborts a
    # process that loaded TensorFlow's. The CPU kernels used here are deterministic on one thread.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False  # float32 convolutions on a GPU, as on the CPU
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def sequence_array(X: Any) -> np.ndarray:
    """Sequences as float32[n, 168, 4], or a ValueError naming the shape."""
    X = np.asarray(X)
    if X.ndim != 3 or X.shape[1:] != (SEQUENCE_LENGTH, N_FIELDS):
        raise ValueError(f"sequences must be [n, {SEQUENCE_LENGTH}, {N_FIELDS}], got {list(X.shape)}")
    return np.ascontiguousarray(X, dtype=np.float32)


def field_constants(sequences: np.ndarray, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each field over the hours the model reads (1 where flat)."""
    hours = sequences[:, -sequence_length:, :].reshape(-1, N_FIELDS)
    std = hours.std(axis=0, dtype=np.float64)
    return hours.mean(axis=0, dtype=np.float64), np.where(std > 0, std, 1.0)


class TorchPredictor(BasePredictor):
    """Common hyperparameters: ``sequence_length`` (the newest hours read), ``learning_rate``, ``weight_decay``, ``batch_size``, ``epochs``,
    ``patience``, ``validation_fraction``, ``purge_rows``, ``row_stride``, ``device``, ``seed``
    (a subclass's ``__init__`` stores them with its own)."""

    uses_validation = True
    skipped_checks: ClassVar[dict[str, str]] = {
        "additivity": "not a tree family: a neural network's answer has no exact per-feature contributions"}

    sequence_length: int
    learning_rate: float
    weight_decay: float
    batch_size: int
    epochs: int
    patience: int
    validation_fraction: float
    purge_rows: int
    row_stride: int
    device: Device
    seed: int

    # ------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _arrays(self, X: Any) -> tuple[np.ndarray, ...]:
        """Rows -> float32 arrays in the order of :attr:`input_kinds` (shapes checked)."""

    @abstractmethod
    def _fit_constants(self, arrays: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """Standardisation constants from the fitted rows (kept as ``constants_``)."""

    @abstractmethod
    def _network(self, constants: dict[str, np.ndarray]) -> Any:
        """The untrained ``torch.nn.Module`` (logits out) for these constants."""

    def _check_hyperparameters(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {self.device!r}")
        if self.row_stride < 1 or self.patience < 1 or self.epochs < 1:
            raise ValueError("row_stride, patience and epochs must be at least 1")
        if not 1 <= self.sequence_length <= SEQUENCE_LENGTH:
            raise ValueError(f"sequence_length must be within 1..{SEQUENCE_LENGTH}, not {self.sequence_length}")

    # ------------------------------------------------------------ learning
    def train(self, X: Any, y: np.ndarray,
              validation_data: tuple[Any, np.ndarray] | None = None) -> dict[str, float]:
        """Fit as the module describes; return the validation rows' metrics (the training rows'
        when there are none) with ``epochs_run`` and ``best_epoch`` (1-based)."""
        self._check_hyperparameters()
        torch = torch_module()
        fit, validation = self._training_rows(X, np.asarray(y, dtype=np.int64), validation_data)
        torch.manual_seed(self.seed)
        self.fit_rows_ = len(fit[1])
        self.constants_ = self._fit_constants(fit[0])
        device = torch.device("cuda" if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())
                              else "cpu")
        network = self._network(self.constants_).to(device)
        history = _fit_best_epoch(torch, network, fit, validation, self, device)
        self.history_ = history
        monitor = history["val_loss"] if validation is not None else history["loss"]
        self.epochs_run_ = len(monitor)
        self.best_epoch_ = int(np.argmin(monitor)) + 1
        self.state_ = {name: value.detach().cpu().numpy().copy() for name, value in network.state_dict().items()}
        self.trained_on_ = device.type
        y = np.asarray(y, dtype=np.int64)
        held = None if validation_data is not None else validation_split(len(y), self.validation_fraction,
                                                                         self.purge_rows)[1]
        evaluated = validation_data or ((X[held], y[held]) if held is not None else (X, y))
        metrics = self.validate(*evaluated, reference_labels=fit[1])
        return {**metrics, "epochs_run": float(self.epochs_run_), "best_epoch": float(self.best_epoch_)}

    def _training_rows(self, X: Any, y: np.ndarray, validation_data: tuple[Any, np.ndarray] | None
                       ) -> tuple[tuple[tuple[np.ndarray, ...], np.ndarray], tuple[tuple[np.ndarray, ...], np.ndarray] | None]:
        """((fitted arrays, labels), (validation arrays, labels) or None)."""
        if len(X) != len(y):
            raise ValueError(f"{len(X)} rows but {len(y)} labels")
        arrays = self._arrays(X)
        if validation_data is not None:
            validation = (self._arrays(validation_data[0]), np.asarray(validation_data[1], dtype=np.int64))
            fit_rows = slice(0, len(y))
        else:
            fit_rows, held = validation_split(len(y), self.validation_fraction, self.purge_rows)
            validation = None if held is None else (tuple(a[held] for a in arrays), y[held])
        # Consecutive hours share 167 of 168 steps: every row_stride-th row keeps nearly all the information.
        stride = slice(fit_rows.start, fit_rows.stop, self.row_stride)
        return (tuple(a[stride] for a in arrays), y[stride]), validation

    def predict_proba(self, X: Any) -> np.ndarray:
        torch = torch_module()
        arrays = self._arrays(X)
        if len(arrays[0]) == 0:
            return np.empty((0, N_CLASSES), dtype=np.float64)
        network = self._cpu_network()
        with torch.no_grad():
            parts = [torch.softmax(network(*(torch.from_numpy(a[i:i + _PREDICT_CHUNK_ROWS]) for a in arrays)), dim=1)
                     for i in range(0, len(arrays[0]), _PREDICT_CHUNK_ROWS)]
        p = torch.cat(parts).numpy().astype(np.float64)
        return p / p.sum(axis=1, keepdims=True)

    def _cpu_network(self) -> Any:
        """The fitted network on the CPU in eval mode (built once from ``state_``; never pickled)."""
        if getattr(self, "_network_cache", None) is None or self._network_state is not self.state_:
            torch = torch_module()
            network = self._network(self.constants_)
            network.load_state_dict({name: torch.from_numpy(value.copy()) for name, value in self.state_.items()})
            self._network_cache = network.eval()
            self._network_state = self.state_
        return self._network_cache

    # ------------------------------------------------------------ persistence
    def __getstate__(self) -> dict[str, Any]:
        """Picklable state: the weights as numpy arrays (``state_``), no torch object."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_network_cache", "_network_state")}

    # ------------------------------------------------------------ export
    def export_onnx(self, path: Path) -> None:
        """ONNX graph: one float32 input per kind (batch axis dynamic), output ``probabilities`` [batch, 3]."""
        torch = torch_module()
        import onnx

        from bse_predict.families.torch_networks import Probabilities

        served = Probabilities(self._cpu_network()).eval()
        examples = tuple(torch.from_numpy(np.ascontiguousarray(a[:2])) for a in self._example_arrays())
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and constant-folding remarks
            torch.onnx.export(served, examples, buffer, input_names=list(self.input_kinds),
                              output_names=[ONNX_OUTPUT], opset_version=TARGET_OPSET, dynamo=False,
                              dynamic_axes={name: {0: "batch"} for name in [*self.input_kinds, ONNX_OUTPUT]})
        proto = onnx.load_from_string(buffer.getvalue())
        inputs, outputs = [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
        if inputs != list(self.input_kinds) or outputs != [ONNX_OUTPUT]:
            raise ValueError(f"torch.onnx produced inputs {inputs} and outputs {outputs}; "
                             f"expected {list(self.input_kinds)} and [{ONNX_OUTPUT!r}]")
        cap_ir_version(proto)
        onnx.checker.check_model(proto)
        Path(path).write_bytes(proto.SerializeToString())

    @abstractmethod
    def _example_arrays(self) -> tuple[np.ndarray, ...]:
        """Two rows of zeros of each input, to trace the network for export."""


def _fit_best_epoch(torch: Any, network: Any, fit: tuple[tuple[np.ndarray, ...], np.ndarray],
                    validation: tuple[tuple[np.ndarray, ...], np.ndarray] | None, params: TorchPredictor,
                    device: Any) -> dict[str, list[float]]:
    """Adam with early stopping on the validation loss (the training loss without validation rows);
    the network ends holding the best epoch's weights. Returns the loss per epoch."""
    optimiser = torch.optim.Adam(network.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    loss_of = torch.nn.CrossEntropyLoss()
    arrays = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in fit[0])
    labels = torch.from_numpy(fit[1]).to(device)
    order = torch.Generator().manual_seed(params.seed)
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    best, best_state, waited = np.inf, copy.deepcopy(network.state_dict()), 0
    for _ in range(params.epochs):
        network.train()
        total = 0.0
        for batch in torch.randperm(len(labels), generator=order).split(params.batch_size):
            batch = batch.to(device)
            optimiser.zero_grad()
            loss = loss_of(network(*(a[batch] for a in arrays)), labels[batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), _GRAD_CLIP_NORM)
            optimiser.step()
            total += loss.item() * len(batch)
        history["loss"].append(total / len(labels))
        if validation is not None:
            history["val_loss"].append(_mean_loss(torch, network, validation, device))
        watched = (history["val_loss"] or history["loss"])[-1]
        if watched < best:
            best, best_state, waited = watched, copy.deepcopy(network.state_dict()), 0
        elif (waited := waited + 1) >= params.patience:
            break
    if not np.isfinite(best):
        raise ValueError("no epoch reached a finite loss: nothing to keep")
    network.load_state_dict(best_state)
    return history


def _mean_loss(torch: Any, network: Any, rows: tuple[tuple[np.ndarray, ...], np.ndarray], device: Any) -> float:
    network.eval()
    arrays, labels = rows
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(labels), _PREDICT_CHUNK_ROWS):
            logits = network(*(torch.from_numpy(np.ascontiguousarray(a[i:i + _PREDICT_CHUNK_ROWS])).to(device)
                               for a in arrays))
            target = torch.from_numpy(labels[i:i + _PREDICT_CHUNK_ROWS]).to(device)
            total += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
    return total / len(labels)

