"""Serve a manifest's ONNX models with onnxruntime, batched across symbols.

One session per model: its targets' graphs merged into one model, so one ``run``
answers every target and what the targets compute alike is computed once
(:mod:`bse_predict.serving.target_merge`); one session per target where they do not
merge. Sessions run with one intra-op thread and no
spinning: on a 2-core machine two threads were slower, and spinning steals the
core the event loop needs (see docs/performance.md). The CUDA provider is used
when onnxruntime offers it; tree ensembles only have CPU kernels, so
onnxruntime places those nodes on the CPU anyway.

Sessions are built from bytes, never from a path: :meth:`ServedModelSet.load` reads
each file once, checks its sha256 on those bytes (:func:`bse_predict.serving.manifest.read_verified`)
and hands the same bytes to onnxruntime, after :func:`bse_predict.integrity.onnx_check.check_onnx_model`
has made sure they reference nothing outside themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import (
    EPFail,
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    RuntimeException,
)
from pydantic import SecretStr

from bse_predict.errors import ManifestError, ModelError
from bse_predict.features.definitions import FEATURE_NAMES, FEATURE_SPEC_HASH
from bse_predict.features.inputs import build_inputs, min_history
from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.serving.manifest import Manifest, load_manifest, read_verified, verify_files
from bse_predict.integrity.onnx_check import check_onnx_model
from bse_predict.serving.model_set import ManifestModelSet, ModelOutputs
from bse_predict.serving.target_merge import merge_targets, target_output

__all__ = ["ServedModelSet", "choose_providers", "make_session"]

log = logging.getLogger(__name__)

_RUNTIME_ERRORS: tuple[type[Exception], ...] = (Fail, InvalidArgument, RuntimeException, EPFail, InvalidGraph,
                                                InvalidProtobuf, NoSuchFile)
"""What onnxruntime's ``run`` raises (they derive from Exception directly)."""


def _run(session: ort.InferenceSession, names: list[str], feed: dict[str, np.ndarray],
         run_options: ort.RunOptions | None = None) -> list[np.ndarray]:
    """``session.run``, its failures raised as :class:`~bse_predict.errors.ModelError`."""
    try:
        return session.run(names, feed, run_options)
    except _RUNTIME_ERRORS as error:
        raise ModelError(f"{type(error).__name__}: {error}") from error


def choose_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, CPU always as the fallback."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model: bytes | Path, providers: list[str], intra_op_threads: int = 1,
                 file: str | None = None) -> ort.InferenceSession:
    """A session of the serialised ``model`` (a path is read once here; ``file`` names it in
    errors), which must pass :func:`bse_predict.integrity.onnx_check.check_onnx_model`: every session this
    project makes is self-contained."""
    data = model.read_bytes() if isinstance(model, Path) else model
    check_onnx_model(data, file or (model.name if isinstance(model, Path) else "ONNX model"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=options, providers=providers)


@dataclass(frozen=True)
class _TargetSession:
    session: ort.InferenceSession
    """The target's own session, or the one of every target of the model (:mod:`bse_predict.serving.target_merge`)."""
    inputs: tuple[str, ...]
    output_name: str
    degraded_output: str | None = None
    """An ensemble graph's bool[B] ``degraded`` output, when it has one."""
    regime_output: str | None = None
    """``regime_probabilities`` [B, K], the states named in the graph's ``regime_states`` metadata."""
    regime_states: tuple[str, ...] = ()

    @property
    def output_names(self) -> list[str]:
        return [self.output_name, *(n for n in (self.degraded_output, self.regime_output) if n)]


def _target_sessions(version_dir: Path, manifest: Manifest, model_name: str, providers: list[str],
                     intra_op_threads: int) -> dict[str, _TargetSession]:
    """One session for all the targets of ``model_name`` when their graphs merge, else one per target."""
    entries = manifest.entries_for(model_name)
    files = {target: read_verified(version_dir, manifest, entry.file) for target, entry in entries.items()}
    for target, data in files.items():
        check_onnx_model(data, f"version {manifest.version}: {entries[target].file}")
    merged = merge_targets(files) if len(files) > 1 else None
    shared = (make_session(merged.model, providers, intra_op_threads,
                           file=f"version {manifest.version}: {model_name}, every target") if merged else None)
    sessions: dict[str, _TargetSession] = {}
    for index, (target, entry) in enumerate(entries.items()):
        session = shared or make_session(files[target], providers, intra_op_threads,
                                         file=f"version {manifest.version}: {entry.file}")
        name = (lambda n, i=index: target_output(i, n)) if merged else (lambda n: n)
        declared = set(merged.inputs[target]) if merged else {i.name for i in session.get_inputs()}
        if declared != set(entry.inputs):
            raise ManifestError(f"{entry.file} reads inputs {sorted(declared)}, the manifest says {list(entry.inputs)}")
        log.info("model %s %s target %s runs on %s", manifest.version, entry.name, target, session.get_providers()[0])
        if tuple(entry.classes) != CLASS_NAMES:
            raise ManifestError(f"{entry.file} answers classes {list(entry.classes)}, not {list(CLASS_NAMES)}")
        outputs = {o.name for o in session.get_outputs()}
        states = (merged.metadata[target] if merged else session.get_modelmeta().custom_metadata_map).get("regime_states", "")
        regime = name("regime_probabilities") if name("regime_probabilities") in outputs and states else None
        sessions[target] = _TargetSession(session, entry.inputs, name(entry.output_name),
                                          name("degraded") if name("degraded") in outputs else None, regime,
                                          tuple(states.split(",")) if regime else ())
    return sessions


class ServedModelSet(ManifestModelSet):
    """A loaded, verified model version: features in, class probabilities per target out."""

    def __init__(self, manifest: Manifest, sessions: dict[str, _TargetSession], model_name: str | None = None) -> None:
        super().__init__(manifest, model_name or manifest.served_model)
        self._sessions = sessions
        self._min_history = (manifest.min_history if self._model_name == manifest.served_model
                             else min_history({kind for s in sessions.values() for kind in s.inputs}))

    @classmethod
    def load(cls, version_dir: Path, providers: list[str] | None = None, intra_op_threads: int = 1,
             model_name: str | None = None, signing_key: SecretStr | None = None) -> ServedModelSet:
        """The manifest's served model, or ``model_name`` (any model of the version, for backtests).
        ``signing_key`` (``Settings.model_signing_secret``): the manifest must be signed under it."""
        manifest = load_manifest(version_dir, signing_key)
        verify_files(version_dir, manifest)
        if manifest.feature_spec_hash != FEATURE_SPEC_HASH or tuple(manifest.feature_names) != FEATURE_NAMES:
            raise ManifestError(
                f"version {manifest.version} was trained on other feature definitions "
                f"(hash {manifest.feature_spec_hash[:12]}…, this code has {FEATURE_SPEC_HASH[:12]}…): retrain it"
            )
        sessions = _target_sessions(version_dir, manifest, model_name or manifest.served_model,
                                    providers or choose_providers(), intra_op_threads)
        return cls(manifest, sessions, model_name)

    @property
    def min_history(self) -> int:
        return self._min_history

    @property
    def input_kinds(self) -> tuple[str, ...]:
        return tuple(sorted({kind for s in self._sessions.values() for kind in s.inputs}))

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self._sessions)

    def providers(self) -> dict[str, str]:
        return {target: s.session.get_providers()[0] for target, s in self._sessions.items()}

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 16, 64, 256)) -> None:
        """Run each session once per batch size on flat windows so the first real batches do
        not pay for onnxruntime's first-run allocations."""
        for rows in batch_sizes:
            windows = np.ones((rows, self.min_history, 5))
            self.predict(build_inputs(self.input_kinds, windows, np.zeros(rows, dtype=np.int64)))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{kind: batch} -> {target: float64[B, 3]} with columns (up, down, none)."""
        return self.predict_outputs(inputs).probabilities

    def predict_outputs(self, inputs: dict[str, np.ndarray], run_options: ort.RunOptions | None = None) -> ModelOutputs:
        """:meth:`predict` plus each graph's ``degraded`` rows (any target's) and the regime
        of the first graph that outputs one; one ``run`` per session (one for every target when
        their graphs merged). ``run_options`` lets another thread stop the call (``terminate``)."""
        batches = {kind: np.ascontiguousarray(value, dtype=np.float32) for kind, value in inputs.items()}
        rows = len(next(iter(batches.values())))
        answers = self._run_sessions(batches, run_options)
        probabilities: dict[str, np.ndarray] = {}
        degraded = np.zeros(rows, dtype=bool)
        states: tuple[str, ...] = ()
        regime: np.ndarray | None = None
        target_regimes: dict[str, np.ndarray] = {}
        for target, s in self._sessions.items():
            probabilities[target] = np.asarray(answers[target][s.output_name], dtype=np.float64)
            if s.degraded_output:
                degraded |= np.asarray(answers[target][s.degraded_output], dtype=bool)
            if s.regime_output:
                target_regimes[target] = np.asarray(answers[target][s.regime_output], dtype=np.float64)
                if regime is None:
                    states, regime = s.regime_states, target_regimes[target]
        return ModelOutputs(probabilities, degraded, states, regime, target_regimes)

    def _run_sessions(self, batches: dict[str, np.ndarray],
                      run_options: ort.RunOptions | None) -> dict[str, dict[str, np.ndarray]]:
        """{target: {output name: array}}, each distinct session run once for all its targets."""
        groups: dict[int, list[str]] = {}
        for target, s in self._sessions.items():
            groups.setdefault(id(s.session), []).append(target)
        answers: dict[str, dict[str, np.ndarray]] = {}
        for targets in groups.values():
            chosen = [self._sessions[t] for t in targets]
            names = [n for s in chosen for n in s.output_names]
            kinds = sorted({kind for s in chosen for kind in s.inputs})
            found = dict(zip(names, _run(chosen[0].session, names, {k: batches[k] for k in kinds}, run_options),
                             strict=True))
            answers.update({t: {n: found[n] for n in s.output_names} for t, s in zip(targets, chosen, strict=True)})
        return answers
