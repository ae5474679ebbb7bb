"""LSTM: one recurrent layer over the hourly sequence, softmax over (up, down, none).

Input is the ``sequence`` kind (:mod:`bse_predict.features.sequences`): float32[batch, 168, 4],
oldest hour first. The Keras model reads the raw sequence and does the rest
itself, so the exported graph takes exactly what the worker builds:

    Input [168, 4] -> keep the last ``sequence_length`` hours (Cropping1D)
    -> standardise each field with training statistics (Rescaling by constants)
    -> LSTM(units) -> Dense(3, softmax)

Training holds out the newest ``validation_fraction`` of the rows behind a
purge of ``purge_rows`` (the label horizon), stops early on the validation
loss, checkpoints the best weights to ``checkpoint_dir`` and restores them, and
lowers the learning rate on a plateau (or follows a cosine decay). TensorFlow
is imported inside the methods only; it runs with one thread per pool and op
determinism on, so the same seed gives bitwise the same model on the CPU.

Export: ``tf2onnx.convert.from_function`` over a ``tf.function`` with an
explicit input signature (``from_keras`` fails on Keras 3 models), opset 17.
tf2onnx rewrites the Keras recurrence into one ONNX ``LSTM`` node in
sequence-major layout behind a Transpose, which onnxruntime's CPU kernel
accepts; the export refuses a graph without it. Pickling (the base class's
``save``/``load``, and ``BasePredictor.load`` in the native runner) stores the
Keras model as the bytes of its own ``.keras`` file.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bse_predict.families.base import ONNX_OUTPUT, BasePredictor, register, validation_split
from bse_predict.families.onnx_limits import TARGET_OPSET, cap_ir_version
from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.features.sequences import SEQUENCE_FIELDS, SEQUENCE_LENGTH

__all__ = ["LSTMPredictor", "TF_THREADS"]

N_CLASSES = len(CLASS_NAMES)
N_FIELDS = len(SEQUENCE_FIELDS)
TF_THREADS = 1
"""Intra- and inter-op threads of TensorFlow. One was as fast as two for this small
recurrence on a 2-core machine and leaves a core free; TensorFlow fixes its pools at
first use, so this is process-wide and set by the first predictor that imports it."""

_PREDICT_CHUNK_ROWS = 4096
_CHECKPOINT_FILE = "best.weights.h5"
_GRAD_CLIP_NORM = 1.0
_PLATEAU_FACTOR = 0.5
_MIN_LR_FRACTION = 1 / 32
LRSchedule = Literal["plateau", "cosine", "constant"]


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The process's file descriptor 2 pointed at /dev/null: TensorFlow's C++ start-up lines (absl's
    "before InitializeLog", oneDNN, CPU features) are written there before any log level applies. Python
    errors are raised, not written, so none is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _tensorflow() -> tuple[Any, Any]:
    """Import TensorFlow and Keras, quiet, single-threaded and deterministic (once per process)."""
    # Only effective before the first import. 3, not 2: TF 2.21 logs a harmless "NodeDef mentions attribute
    # use_unbounded_threadpool" at ERROR level on every fit; its real errors raise in Python.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _native_stderr_silenced():
        import keras
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(TF_THREADS)
            tf.config.threading.set_inter_op_parallelism_threads(TF_THREADS)
        except RuntimeError:  # the runtime is already initialised: its pools stay as they are
            pass
        tf.config.experimental.enable_op_determinism()
    return tf, keras


@register
class LSTMPredictor(BasePredictor):
    family = "lstm"
    uses_validation = True
    input_kind = "sequence"
    fast_params: ClassVar[dict[str, Any]] = {"sequence_length": 24, "units": 8, "epochs": 2, "batch_size": 256,
                                             "patience": 1}
    skipped_checks: ClassVar[dict[str, str]] = {
        "additivity": "not a tree family: a recurrent network's answer has no exact per-feature contributions"}

    def __init__(self, sequence_length: int = SEQUENCE_LENGTH, units: int = 32, dropout: float = 0.1,
                 learning_rate: float = 1e-3, batch_size: int = 256, epochs: int = 30, patience: int = 4,
                 validation_fraction: float = 0.15, purge_rows: int = 72, lr_schedule: LRSchedule = "plateau",
                 class_weight: Literal["balanced"] | None = None, checkpoint_dir: str | None = None,
                 row_stride: int = 1, seed: int = 7) -> None:
        self.sequence_length = sequence_length
        self.units = units
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.purge_rows = purge_rows
        self.lr_schedule = lr_schedule
        self.class_weight = class_weight
        self.checkpoint_dir = checkpoint_dir
        self.row_stride = row_stride
        self.seed = seed

    # ------------------------------------------------------------ learning
    def train(self, X: np.ndarray, y: np.ndarray,
              validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        """Fit up to ``epochs`` epochs, stopping after ``patience`` epochs without a better
        validation loss, and keep the weights of the best epoch (from its checkpoint).

        With ``validation_data`` given, it is the validation set and all of ``X`` trains.
        Otherwise :func:`~bse_predict.families.base.validation_split` holds out the newest rows behind a purge; that
        assumes the rows of ``X`` are one symbol in time order, so pooled multi-symbol data
        must pass its own purged ``validation_data``. With ``validation_fraction`` 0 and no
        ``validation_data``, all rows train and early stopping watches the training loss.
        Every ``row_stride``-th training sequence is fitted.
        Returns the metrics of the validation rows (of the training rows when there are none),
        with ``epochs_run`` and ``best_epoch`` (1-based).
        """
        self._check_hyperparameters()
        X_fit, y_fit, validation = self._training_rows(X, y, validation_data)
        _, keras = _tensorflow()
        keras.utils.set_random_seed(self.seed)
        self.fit_rows_ = len(X_fit)
        self.field_mean_, self.field_scale_ = self._field_statistics(X_fit)
        self.model_ = self._build(keras, self.dropout)
        steps_per_epoch = math.ceil(len(X_fit) / self.batch_size)
        self.model_.compile(optimizer=keras.optimizers.Adam(self._learning_rate(keras, steps_per_epoch),
                                                            clipnorm=_GRAD_CLIP_NORM),
                            loss="sparse_categorical_crossentropy", jit_compile=False)  # XLA cannot compile an LSTM
        monitor = "val_loss" if validation is not None else "loss"
        history = self._fit_best_epoch(keras, X_fit, y_fit, validation, monitor)
        self.history_ = {name: [float(v) for v in values] for name, values in history.history.items()}
        self.epochs_run_ = len(self.history_[monitor])
        self.best_epoch_ = int(np.argmin(self.history_[monitor])) + 1
        evaluated = validation or (X_fit, y_fit)
        metrics = self.validate(*evaluated, reference_labels=y_fit)
        return {**metrics, "epochs_run": float(self.epochs_run_), "best_epoch": float(self.best_epoch_)}

    def _training_rows(self, X: np.ndarray, y: np.ndarray, validation_data: tuple[np.ndarray, np.ndarray] | None
                       ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """(fitted sequences, their labels, the validation rows or None), as :meth:`train` describes."""
        X, y = self._check_input(X), np.asarray(y, dtype=np.int64)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} sequences but {len(y)} labels")
        if validation_data is None:
            fit, held = validation_split(len(X), self.validation_fraction, self.purge_rows)
            X_fit, y_fit = X[fit], y[fit]
            validation = None if held is None else (X[held], y[held])
        else:
            X_fit, y_fit = X, y
            validation = (self._check_input(validation_data[0]), np.asarray(validation_data[1], dtype=np.int64))
        # Consecutive hours share 167 of 168 steps: every row_stride-th sequence keeps nearly all
        # the information at a fraction of the cost on a small machine.
        return X_fit[::self.row_stride], y_fit[::self.row_stride], validation

    def _fit_best_epoch(self, keras: Any, X_fit: np.ndarray, y_fit: np.ndarray,
                        validation: tuple[np.ndarray, np.ndarray] | None, monitor: str) -> Any:
        """Fit the compiled model with early stopping on ``monitor``, checkpointing the best epoch's
        weights and restoring them; return Keras's history."""
        with tempfile.TemporaryDirectory(prefix="lstm-checkpoint-") as scratch:
            folder = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            checkpoint = folder / _CHECKPOINT_FILE
            checkpoint.unlink(missing_ok=True)  # never restore an earlier run's weights
            callbacks = [
                keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, save_best_only=True,
                                                save_weights_only=True),
                keras.callbacks.EarlyStopping(monitor=monitor, patience=self.patience),
            ]
            if self.lr_schedule == "plateau":
                callbacks.append(keras.callbacks.ReduceLROnPlateau(
                    monitor=monitor, factor=_PLATEAU_FACTOR, patience=max(1, self.patience // 2),
                    min_lr=self.learning_rate * _MIN_LR_FRACTION))
            history = self.model_.fit(
                X_fit, y_fit, batch_size=self.batch_size, epochs=self.epochs, validation_data=validation,
                shuffle=True, class_weight=self._class_weights(y_fit), callbacks=callbacks, verbose=0,
            )
            if not checkpoint.exists():
                raise ValueError(f"no epoch reached a finite {monitor}: nothing to keep")
            self.model_.load_weights(str(checkpoint))
        return history

    def _check_hyperparameters(self) -> None:
        if not 1 <= self.sequence_length <= SEQUENCE_LENGTH:
            raise ValueError(f"sequence_length must be within 1..{SEQUENCE_LENGTH}, not {self.sequence_length}")
        if self.lr_schedule not in ("plateau", "cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'plateau', 'cosine' or 'constant', not {self.lr_schedule!r}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', not {self.class_weight!r}")

    @staticmethod
    def _check_input(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 3 or X.shape[1:] != (SEQUENCE_LENGTH, N_FIELDS):
            raise ValueError(f"sequences must be [n, {SEQUENCE_LENGTH}, {N_FIELDS}], got {list(X.shape)}")
        return X.astype(np.float32, copy=False)

    def _field_statistics(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each field over the hours the model reads (1 where flat)."""
        hours = X[:, -self.sequence_length:, :].reshape(-1, N_FIELDS)
        std = hours.std(axis=0, dtype=np.float64)
        return hours.mean(axis=0, dtype=np.float64), np.where(std > 0, std, 1.0)

    def _learning_rate(self, keras: Any, steps_per_epoch: int) -> Any:
        if self.lr_schedule == "cosine":
            return keras.optimizers.schedules.CosineDecay(self.learning_rate,
                                                          decay_steps=max(1, self.epochs * steps_per_epoch))
        return self.learning_rate

    def _class_weights(self, y: np.ndarray) -> dict[int, float] | None:
        if self.class_weight is None:
            return None
        counts = np.bincount(y, minlength=N_CLASSES)
        return {c: (len(y) / (N_CLASSES * counts[c]) if counts[c] else 1.0) for c in range(N_CLASSES)}

    def _build(self, keras: Any, dropout: float) -> Any:
        """The network for the fitted statistics; ``dropout`` 0 gives the inference twin that is exported."""
        sequence = keras.Input((SEQUENCE_LENGTH, N_FIELDS), name=self.input_kind)
        x = keras.layers.Cropping1D((SEQUENCE_LENGTH - self.sequence_length, 0), name="last_hours")(sequence)
        scale = 1.0 / self.field_scale_
        x = keras.layers.Rescaling(scale=scale.tolist(), offset=(-self.field_mean_ * scale).tolist(),
                                   name="standardise")(x)
        x = keras.layers.LSTM(self.units, dropout=dropout, seed=self.seed, name="lstm",
                              kernel_initializer=keras.initializers.GlorotUniform(self.seed),
                              recurrent_initializer=keras.initializers.Orthogonal(seed=self.seed + 1))(x)
        probabilities = keras.layers.Dense(N_CLASSES, activation="softmax", name=ONNX_OUTPUT,
                                           kernel_initializer=keras.initializers.GlorotUniform(self.seed + 2))(x)
        return keras.Model(sequence, probabilities, name="lstm_predictor")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = self._check_input(X)
        if len(X) == 0:
            return np.empty((0, N_CLASSES), dtype=np.float64)
        serve = self._serving_function()
        p = np.concatenate([serve(X[i:i + _PREDICT_CHUNK_ROWS]).numpy()
                            for i in range(0, len(X), _PREDICT_CHUNK_ROWS)]).astype(np.float64)
        return p / p.sum(axis=1, keepdims=True)

    def _serving_function(self) -> Any:
        """The fitted model as one traced function over [batch, 168, 4] (traced once per model,
        whatever the batch size; not pickled)."""
        if getattr(self, "_serve", None) is None or self._serve_model is not self.model_:
            tf, _ = _tensorflow()
            model = self.model_
            signature = [tf.TensorSpec([None, SEQUENCE_LENGTH, N_FIELDS], tf.float32)]
            self._serve = tf.function(lambda sequence: model(sequence, training=False), input_signature=signature,
                                      autograph=False)
            self._serve_model = model
        return self._serve

    # ------------------------------------------------------------ persistence
    def __getstate__(self) -> dict[str, Any]:
        """Picklable state: the Keras model travels as the bytes of its ``.keras`` file."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_serve", "_serve_model")}
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory(prefix="lstm-save-") as folder:
                file = Path(folder) / "model.keras"
                model.save(file)
                state["_keras_bytes"] = file.read_bytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        keras_bytes = state.pop("_keras_bytes", None)
        self.__dict__.update(state)
        if keras_bytes is not None:
            _, keras = _tensorflow()
            with tempfile.TemporaryDirectory(prefix="lstm-load-") as folder:
                file = Path(folder) / "model.keras"
                file.write_bytes(keras_bytes)
                self.model_ = keras.saving.load_model(file, compile=False)

    # ------------------------------------------------------------ export
    def export_onnx(self, path: Path) -> None:
        """ONNX graph: input ``sequence`` float32[batch, 168, 4], output ``probabilities`` [batch, 3],
        the recurrence as one ``LSTM`` node (sequence-major, which onnxruntime's CPU kernel needs)."""
        tf, keras = _tensorflow()  # before tf2onnx, which imports TensorFlow too
        import onnx
        import tf2onnx

        twin = self._build(keras, dropout=0.0)  # no dropout seed state in the traced graph
        twin.set_weights(self.model_.get_weights())
        signature = [tf.TensorSpec([None, SEQUENCE_LENGTH, N_FIELDS], tf.float32, name=self.input_kind)]

        @tf.function(input_signature=signature, autograph=False)
        def serve(sequence: Any) -> dict[str, Any]:
            return {ONNX_OUTPUT: twin(sequence, training=False)}

        proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=TARGET_OPSET)
        _check_graph(proto, self.input_kind)
        cap_ir_version(proto)
        onnx.checker.check_model(proto)
        Path(path).write_bytes(proto.SerializeToString())


def _check_graph(proto: Any, input_name: str) -> None:
    """One sequence input, one ``probabilities`` output, and the recurrence as an ONNX LSTM node."""
    graph = proto.graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != [input_name] or outputs != [ONNX_OUTPUT]:
        raise ValueError(f"tf2onnx produced inputs {inputs} and outputs {outputs}; "
                         f"expected [{input_name!r}] and [{ONNX_OUTPUT!r}]")
    ops = {node.op_type for node in graph.node}
    if "LSTM" not in ops or ops & {"Loop", "Scan"}:
        raise ValueError(f"tf2onnx did not produce a single LSTM node (ops: {sorted(ops)})")
    for node in graph.node:
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        if node.op_type == "LSTM" and layout != 0:
            raise ValueError("the LSTM node is batch-major (layout=1), which onnxruntime's CPU kernel rejects")
