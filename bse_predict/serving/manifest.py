"""The versioned manifest of a trained model set, and its integrity checks.

A version lives in ``$BSE_MODELS_DIR/V/`` with ``manifest.json`` and the files it
names. Everything the worker needs to serve it is here: feature names and the
hash of their definitions (a version trained on other features is refused),
the targets, ``min_history``, and the sha256 of every file.

What a manifest may name, so that the hashes mean what they say:

- every file (``files_sha256`` keys, model files, native files, parity samples) is a
  plain relative path inside the version folder: no ``..``, no absolute path, no
  symlink that resolves outside the folder;
- every file an entry names has a sha256 in ``files_sha256``: a file without one is
  refused, never loaded unchecked;
- the folder is named after ``version``, so a version copied under another name
  cannot pose as that name;
- with ``BSE_MODEL_SIGNING_SECRET`` the manifest carries a valid signature
  (:mod:`bse_predict.serving.manifest_signing`).

Loaders read a file once with :func:`read_verified` and use those very bytes, so
a file swapped after its check is never what runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

import numpy as np

from bse_predict.monitoring.drift import FeatureBins
from bse_predict.ensembles.combiners import CombinerSpec, StackingCombiner
from bse_predict.errors import ManifestError
from bse_predict.serving.manifest_signing import check_signature, sign_document

__all__ = [
    "MANIFEST_NAME",
    "DataSpan",
    "CombinerRecord",
    "ServableRecord",
    "ModelEntry",
    "ParityReport",
    "LegacyOrigin",
    "MetricChange",
    "Changelog",
    "Manifest",
    "sha256_of",
    "load_manifest",
    "verify_files",
    "read_verified",
    "manifest_json",
    "sign_version",
    "list_versions",
    "newest_version",
]

MANIFEST_NAME = "manifest.json"
CLASS_ORDER = ("up", "down", "none")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class DataSpan(_Frozen):
    start_ms: int
    end_ms: int
    rows: int


class CombinerRecord(_Frozen):
    """How an ensemble entry combines its members (entries of the same target and version): the
    numbers of :class:`bse_predict.ensembles.combiners.CombinerSpec`, so that a server may run the members' own
    files side by side and combine in numpy (:mod:`bse_predict.ensembles.member_runner`) instead of the graph."""

    strategy: str
    members: tuple[str, ...]
    weights: tuple[float, ...]
    power: float = 0.0
    by_regime: tuple[tuple[float, ...], ...] | None = None
    stacking_coef: tuple[tuple[float, ...], ...] | None = None
    stacking_intercept: tuple[float, ...] | None = None
    stacking_mean_log_probs: tuple[tuple[float, ...], ...] | None = None
    regime_member: str | None = Field(None, description="the member entry whose regime_probabilities pick weights")
    weight_floor: float = Field(0.0, description="live adaptive re-weighting keeps every weight at least this")
    adaptive_rate: float = Field(0.0, description="live adaptive re-weighting's learning rate")
    climatology: tuple[float, float, float] | None = Field(
        None, description="the climatology member's class shares (up, down, none), mixed in after the members "
                          "with the last weight; None in older manifests: no such member")

    @classmethod
    def from_spec(cls, spec: CombinerSpec, members: tuple[str, ...], regime_member: str | None,
                  weight_floor: float, adaptive_rate: float) -> CombinerRecord:
        stacking = spec.stacking
        return cls(strategy=spec.strategy, members=members, weights=tuple(spec.weights.tolist()), power=spec.power,
                   by_regime=None if spec.by_regime is None else tuple(map(tuple, spec.by_regime.tolist())),
                   stacking_coef=None if stacking is None else tuple(map(tuple, stacking.coef.tolist())),
                   stacking_intercept=None if stacking is None else tuple(stacking.intercept.tolist()),
                   stacking_mean_log_probs=None if stacking is None else tuple(map(tuple,
                                                                                   stacking.mean_log_probs.tolist())),
                   regime_member=regime_member, weight_floor=weight_floor, adaptive_rate=adaptive_rate,
                   climatology=None if spec.climatology is None else tuple(spec.climatology.tolist()))

    def spec(self) -> CombinerSpec:
        stacking = None
        if self.stacking_coef is not None and self.stacking_intercept is not None:
            stacking = StackingCombiner(np.array(self.stacking_coef), np.array(self.stacking_intercept),
                                        np.array(self.stacking_mean_log_probs))
        return CombinerSpec(strategy=self.strategy, weights=np.array(self.weights), power=self.power,
                            by_regime=None if self.by_regime is None else np.array(self.by_regime), stacking=stacking,
                            climatology=None if self.climatology is None else np.array(self.climatology))


class ServableRecord(_Frozen):
    """Training's verdict on whether an entry may be served: its holdout log loss against climatology's
    (:mod:`bse_predict.training.servable_gate`)."""

    servable: bool
    reason: str = Field(description="the verdict in words, with the numbers behind it")
    log_loss: float | None = None
    log_loss_climatology: float | None = None
    difference: tuple[float, float, float] | None = Field(
        None, description="mean per-row log loss minus climatology's: (estimate, lower, upper)")
    confidence_level: float | None = None
    rows: int = 0
    blocks: int = 0
    block_days: int | None = None


class ModelEntry(_Frozen):
    """One ONNX file: a family's model for one target."""

    name: str
    family: str
    target: str
    file: str
    inputs: tuple[str, ...] = ("features",)
    output_name: str = "probabilities"
    classes: tuple[str, ...] = CLASS_ORDER
    native_file: str | None = Field(None, description="the native model, kept only to re-export and compare")
    combiner: CombinerRecord | None = Field(None, description="an ensemble's combination of member entries")
    servable: ServableRecord | None = Field(None, description="training's servable verdict; None in older manifests")


class ParityReport(_Frozen):
    rows: int
    max_abs_diff: float
    tolerance: float
    sample_file: str | None = Field(None, description="recorded inputs and native outputs that promote re-runs "
                                                      "(bse_predict.serving.parity_check); None in older manifests")


class LegacyOrigin(_Frozen):
    """A version converted from the previous system's pickles (``bse-predict models migrate``)."""

    source: str
    backup: str
    files_sha256: dict[str, str]
    three_classes: str = Field(description="how the binary up/down model answers (up, down, none)")
    verified_rows: int
    max_abs_diff: float


class MetricChange(_Frozen):
    previous: float | None
    current: float | None
    delta: float | None


class Changelog(_Frozen):
    """What changed against the version that was newest when this one was made, and its metrics beside it."""

    previous_version: str | None
    changes: tuple[str, ...]
    metrics: dict[str, dict[str, MetricChange]] = {}


class Manifest(_Frozen):
    format_version: int = 1
    version: str
    created_at: datetime
    timeframe: str
    horizon_hours: int
    targets_pct: tuple[float, ...]
    feature_names: tuple[str, ...]
    feature_spec_hash: str
    min_history: int
    data_span: dict[str, DataSpan]
    models: tuple[ModelEntry, ...]
    served_model: str
    metrics: dict[str, dict[str, float]] = {}
    parity: dict[str, ParityReport] = {}
    files_sha256: dict[str, str]
    library_versions: dict[str, str]
    training_seconds: float
    feature_bins: dict[str, FeatureBins] | None = Field(None, description="training bin edges and shares, for drift")
    legacy: LegacyOrigin | None = None
    changelog: Changelog | None = None
    signature: str | None = Field(None, description="hex HMAC-SHA256 of the canonical manifest "
                                                    "(bse_predict.serving.manifest_signing); checked when a secret is set")

    @model_validator(mode="after")
    def _files_inside_and_hashed(self) -> Manifest:
        for name in self.files_sha256:
            _check_plain(name)
        for label, name in self._named_files():
            _check_plain(name)
            if name not in self.files_sha256:
                raise ValueError(f"{label} names {name}, which has no sha256 in files_sha256: "
                                 f"it would be loaded unchecked")
        return self

    def _named_files(self) -> Iterator[tuple[str, str]]:
        """(who names it, file) for every file an entry or a parity report names."""
        for entry in self.models:
            yield f"model {entry.name}/{entry.target}", entry.file
            if entry.native_file is not None:
                yield f"model {entry.name}/{entry.target}", entry.native_file
        for key, report in self.parity.items():
            if report.sample_file is not None:
                yield f"parity {key}", report.sample_file

    def entries_for(self, model_name: str) -> dict[str, ModelEntry]:
        """The served model's entry per target label ("1%": entry)."""
        entries = {m.target: m for m in self.models if m.name == model_name}
        if not entries:
            known = sorted({m.name for m in self.models})
            raise ManifestError(f"version {self.version} has no model {model_name!r}; it has {known}")
        return entries


def _check_plain(name: str) -> None:
    """``name`` must be a plain relative path: no ``..`` or ``.`` part, not absolute, written the one
    way ``PurePosixPath`` writes it (no ``//``, no trailing ``/``), no backslash or NUL."""
    path = PurePosixPath(name)
    if (not name or path.is_absolute() or str(path) != name or ".." in path.parts
            or "\\" in name or "\0" in name):
        raise ValueError(f"file {name!r} is not a plain relative path inside the version folder")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_document(version_dir: Path) -> dict[str, Any]:
    """The manifest file as a JSON object: what a signature covers and what the model is built from."""
    path = version_dir / MANIFEST_NAME
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise ManifestError(f"no {MANIFEST_NAME} in {version_dir}") from exc
    except ValueError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ManifestError(f"{path} is not a JSON object")
    return document


def _parse_manifest(document: dict[str, Any], source: Path) -> Manifest:
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise ManifestError(f"{source} is not a valid manifest: {where + ': ' if where else ''}{first['msg']}") from exc


def load_manifest(version_dir: Path, signing_key: SecretStr | None = None) -> Manifest:
    """The manifest of ``version_dir``, its signature checked when ``signing_key`` is given (see
    :func:`bse_predict.serving.manifest_signing.check_signature`). Parsed once: the document whose signature is
    checked is the one the model is built from."""
    document = _read_document(version_dir)
    check_signature(document, signing_key)
    return _parse_manifest(document, version_dir / MANIFEST_NAME)


def _inside(version_dir: Path, name: str, version: str) -> Path:
    root = version_dir.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise ManifestError(f"version {version}: {name} resolves outside the version folder ({path})")
    return path


def read_verified(version_dir: Path, manifest: Manifest, name: str) -> bytes:
    """The bytes of ``name``, read once and checked against its sha256: load these, not the path."""
    expected = manifest.files_sha256.get(name)
    if expected is None:
        raise ManifestError(f"version {manifest.version}: {name} has no sha256 in files_sha256: refused unchecked")
    path = _inside(version_dir, name, manifest.version)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ManifestError(f"version {manifest.version}: file {name} is missing") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ManifestError(f"version {manifest.version}: {name} has sha256 {actual[:12]}…, "
                            f"manifest says {expected[:12]}…")
    return data


def verify_files(version_dir: Path, manifest: Manifest) -> None:
    """The folder is named after the version, and every file of ``files_sha256`` lies inside it
    and has its recorded sha256."""
    if version_dir.name != manifest.version:
        raise ManifestError(f"folder {version_dir.name} holds version {manifest.version}: a version is served "
                            f"only from the folder of its own name")
    for name in manifest.files_sha256:
        read_verified(version_dir, manifest, name)


def manifest_json(manifest: Manifest, signing_key: SecretStr | None) -> str:
    """The text of ``manifest.json`` for ``manifest``: signed when ``signing_key`` is given."""
    document = json.loads(manifest.model_dump_json())
    if signing_key is not None:
        document = sign_document(document, signing_key)
    return json.dumps(document, indent=2, ensure_ascii=False)


def sign_version(version_dir: Path, signing_key: SecretStr) -> Manifest:
    """Sign an existing version in place (any older signature replaced), once its files check out:
    a signature vouches for the files the manifest pins, so a tampered file is refused here."""
    document = _read_document(version_dir)
    manifest = _parse_manifest(document, version_dir / MANIFEST_NAME)
    verify_files(version_dir, manifest)
    staged = version_dir / f".{MANIFEST_NAME}.signing"
    staged.write_text(json.dumps(sign_document(document, signing_key), indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(staged, version_dir / MANIFEST_NAME)  # a reader sees the old manifest or the signed one
    return manifest


def list_versions(models_dir: Path) -> list[Manifest]:
    """All versions, oldest first by creation time; a broken manifest raises."""
    if not models_dir.is_dir():
        return []
    manifests = []
    for child in models_dir.iterdir():  # ".V.partial": a version train or migrate is still writing
        if not child.name.startswith(".") and (child / MANIFEST_NAME).is_file():
            manifests.append(load_manifest(child))
    return sorted(manifests, key=lambda m: (m.created_at, m.version))


def newest_version(models_dir: Path) -> str:
    versions = list_versions(models_dir)
    if not versions:
        raise ManifestError(f"no model version in {models_dir}: run `bse-predict train` first")
    return versions[-1].version
