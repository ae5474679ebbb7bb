"""Parity samples: the trainer records a model's exact inputs and native outputs; promote re-runs them.

At training time, for every exported model, a few holdout rows are written to
``parity/{stem}.npz`` inside the version folder: the ONNX inputs by name
(``features`` float32[n, 82], ``sequence`` float32[n, 168, 4]) and the native
model's probabilities for them (``probabilities``, float64[n, 3]). The file is
named on the model's :class:`ParityReport` (``sample_file``) and hashed in the
manifest like every other file.

Before a version is promoted (or ramped), :func:`check_recorded_parity` runs the
loaded version on those inputs and compares with the recorded probabilities.
Hashes only prove that the files are the ones the manifest names; a manifest
rewritten around another valid graph of the same shape passes them, and only
this step notices that the graph no longer answers like the model it claims to
be. Versions without samples (manifests from before this step, migrated legacy
versions) are held to their recorded parity figures only, and the verdict says so.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bse_predict.serving.manifest import Manifest, ParityReport
from bse_predict.serving.model_set import Predictor

__all__ = [
    "SAMPLE_DIR",
    "SAMPLE_ROWS",
    "SAMPLE_OUTPUT",
    "ParitySample",
    "ParityVerdict",
    "sample_indices",
    "record_parity_sample",
    "load_parity_sample",
    "check_recorded_parity",
]

SAMPLE_DIR = "parity"
SAMPLE_ROWS = 32
SAMPLE_OUTPUT = "probabilities"


@dataclass(frozen=True)
class ParitySample:
    """Recorded ONNX inputs by name and the native probabilities for the same rows."""

    inputs: dict[str, np.ndarray]
    probabilities: np.ndarray


@dataclass(frozen=True)
class ParityVerdict:
    """``problem``: why the version must be refused (None: it passed). ``note``: what was not checked."""

    problem: str | None = None
    note: str | None = None
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    """target -> max |Δp| of the version's outputs against the recorded ones, for targets with samples."""


def sample_indices(total: int, rows: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to ``rows`` indices spread evenly over ``total`` rows (pooled holdouts are per symbol in
    turn, so the first rows alone would come from one symbol)."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, total - 1, min(total, rows)).round().astype(np.int64))


def record_parity_sample(report: ParityReport, version_dir: Path, stem: str, feed: dict[str, np.ndarray],
                         probabilities: np.ndarray, rows: int = SAMPLE_ROWS) -> ParityReport:
    """Write ``parity/{stem}.npz`` (a spread of ``rows`` rows of ``feed`` and ``probabilities``) and
    return ``report`` naming it. ``feed`` is the model's ONNX feed, ``probabilities`` the native answers."""
    if SAMPLE_OUTPUT in feed:
        raise ValueError(f"an ONNX input may not be named {SAMPLE_OUTPUT!r}: it holds the recorded outputs")
    chosen = sample_indices(len(probabilities), rows)
    name = f"{SAMPLE_DIR}/{stem}.npz"
    path = version_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {kind: np.ascontiguousarray(value[chosen], dtype=np.float32) for kind, value in feed.items()}
    with path.open("wb") as handle:
        np.savez(handle, **arrays, **{SAMPLE_OUTPUT: np.asarray(probabilities[chosen], dtype=np.float64)})
    return report.model_copy(update={"sample_file": name})


def load_parity_sample(path: Path) -> ParitySample:
    """Read a sample written by :func:`record_parity_sample`; ValueError when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:  # numpy says ValueError for a non-npz file
        raise ValueError(f"{path.name} is not a readable parity sample: {error}") from error
    probabilities = arrays.pop(SAMPLE_OUTPUT, None)
    if probabilities is None or not arrays:
        raise ValueError(f"{path.name} lacks {SAMPLE_OUTPUT!r} or inputs (it has {sorted(arrays)})")
    lengths = {key: len(value) for key, value in arrays.items()}
    if set(lengths.values()) != {len(probabilities)}:
        raise ValueError(f"{path.name}: inputs and outputs have different row counts {lengths}, {len(probabilities)}")
    return ParitySample(arrays, probabilities)


def _records(model: Predictor, manifest: Manifest) -> dict[str, ParityReport | None]:
    """The served model's parity record per target (keyed "model/target"; older manifests: per target)."""
    return {t: manifest.parity.get(f"{model.model_name}/{t}", manifest.parity.get(t)) for t in model.targets}


def check_recorded_parity(model: Predictor, manifest: Manifest, version_dir: Path) -> ParityVerdict:
    """Hold a loaded version to its recorded parity: the figures the trainer measured, and, where it
    recorded samples, the version's own outputs on them now against the native outputs then
    (max |Δp| within the record's tolerance). Model errors from ``model.predict`` propagate."""
    records = _records(model, manifest)
    missing = sorted(t for t, r in records.items() if r is None)
    if missing:
        return ParityVerdict(problem=f"parity: no recorded ONNX/native parity for {model.model_name} targets {missing}")
    reports = {t: r for t, r in records.items() if r is not None}
    above = sorted(t for t, r in reports.items() if not r.max_abs_diff <= r.tolerance)
    if above:
        return ParityVerdict(problem=f"parity: recorded ONNX/native parity above tolerance for {model.model_name} "
                                     f"targets {above}")
    diffs: dict[str, float] = {}
    failures: list[str] = []
    for target, report in reports.items():
        if report.sample_file is None:
            continue
        try:
            sample = load_parity_sample(version_dir / report.sample_file)
        except ValueError as error:
            return ParityVerdict(problem=f"parity: {target}: {error}")
        absent = sorted(set(model.input_kinds) - set(sample.inputs))
        if absent:
            return ParityVerdict(problem=f"parity: {target}: {report.sample_file} lacks inputs {absent}")
        answer = model.predict({kind: sample.inputs[kind] for kind in model.input_kinds})[target]
        if answer.shape != sample.probabilities.shape:
            return ParityVerdict(problem=f"parity: {target} answers shape {answer.shape}, "
                                         f"recorded {sample.probabilities.shape}")
        diff = float(np.max(np.abs(answer - sample.probabilities))) if len(answer) else 0.0
        diffs[target] = diff
        if not diff <= report.tolerance:  # NaN fails too
            failures.append(f"{target} max |Δp| {diff:.1e} > {report.tolerance:.0e}")
    if failures:
        return ParityVerdict(problem="parity: " + "; ".join(failures), max_abs_diff=diffs)
    unsampled = sorted(t for t, r in reports.items() if r.sample_file is None)
    note = None
    if unsampled:
        note = (f"parity: no recorded samples for {model.model_name} targets {unsampled} (an older or migrated "
                f"version): only its recorded ONNX/native figures were checked")
    return ParityVerdict(note=note, max_abs_diff=diffs)
