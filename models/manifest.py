"""The versioned manifest of a trained model set, and its integrity checks.

A version lives in ``$BSE_MODELS_DIR/V/`` with ``manifest.json`` and the files it
names. Everything the worker needs to serve it is here: feature names and the
hash of their definitions (a version trained on other features is refused),
the targets, ``min_history``, and the sha256 of every file.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

import numpy as np

from models.drift import FeatureBins
from models.ensemble import CombinerSpec, StackingCombiner
from models.errors import ManifestError

__all__ = [
    "MANIFEST_NAME",
    "DataSpan",
    "CombinerRecord",
    "ModelEntry",
    "ParityReport",
    "LegacyOrigin",
    "MetricChange",
    "Changelog",
    "Manifest",
    "sha256_of",
    "load_manifest",
    "verify_files",
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
    numbers of :class:`models.ensemble.CombinerSpec`, so that a server may run the members' own
    files side by side and combine in numpy (:mod:`models.ensemble_runner`) instead of the graph."""

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
                   regime_member=regime_member, weight_floor=weight_floor, adaptive_rate=adaptive_rate)

    def spec(self) -> CombinerSpec:
        stacking = None
        if self.stacking_coef is not None and self.stacking_intercept is not None:
            stacking = StackingCombiner(np.array(self.stacking_coef), np.array(self.stacking_intercept),
                                        np.array(self.stacking_mean_log_probs))
        return CombinerSpec(strategy=self.strategy, weights=np.array(self.weights), power=self.power,
                            by_regime=None if self.by_regime is None else np.array(self.by_regime), stacking=stacking)


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


class ParityReport(_Frozen):
    rows: int
    max_abs_diff: float
    tolerance: float
    sample_file: str | None = Field(None, description="recorded inputs and native outputs that promote re-runs "
                                                      "(models.parity_check); None in older manifests")


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

    def entries_for(self, model_name: str) -> dict[str, ModelEntry]:
        """The served model's entry per target label ("1%": entry)."""
        entries = {m.target: m for m in self.models if m.name == model_name}
        if not entries:
            known = sorted({m.name for m in self.models})
            raise ManifestError(f"version {self.version} has no model {model_name!r}; it has {known}")
        return entries


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(version_dir: Path) -> Manifest:
    path = version_dir / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise ManifestError(f"no {MANIFEST_NAME} in {version_dir}") from exc
    except ValueError as exc:
        raise ManifestError(f"{path} is not a valid manifest: {exc}") from exc


def verify_files(version_dir: Path, manifest: Manifest) -> None:
    """Every file the manifest names exists and has its recorded sha256."""
    for name, expected in manifest.files_sha256.items():
        path = version_dir / name
        if not path.is_file():
            raise ManifestError(f"version {manifest.version}: file {name} is missing")
        actual = sha256_of(path)
        if actual != expected:
            raise ManifestError(f"version {manifest.version}: {name} has sha256 {actual[:12]}…, manifest says {expected[:12]}…")


def list_versions(models_dir: Path) -> list[Manifest]:
    """All versions, oldest first by creation time; a broken manifest raises."""
    if not models_dir.is_dir():
        return []
    manifests = []
    for child in models_dir.iterdir():
        if (child / MANIFEST_NAME).is_file():
            manifests.append(load_manifest(child))
    return sorted(manifests, key=lambda m: (m.created_at, m.version))


def newest_version(models_dir: Path) -> str:
    versions = list_versions(models_dir)
    if not versions:
        raise ManifestError(f"no model version in {models_dir}: run `bse-predict train` first")
    return versions[-1].version
