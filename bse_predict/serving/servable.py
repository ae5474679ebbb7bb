"""Acting on training's servable verdict: a version whose served model is not servable is never served.

Training marks an entry ``servable: false`` when its holdout log loss is
significantly worse than climatology's (:mod:`bse_predict.training.servable_gate`).
Such a version stays in the registry (to read, backtest, compare), but the
worker's loader refuses it like any other version that cannot serve: at
start-up, and for every control message that names it (``promote``, ``ramp``,
``ab``, ``shadow``, ``fallback``), which the control plane then reports as
``refused`` on ``control.events``. A version is judged by the entries of the model
it serves (``served_model``), every target: one target worse than knowing
nothing would be published as if it were a forecast. Manifests written before
the gate (``servable`` absent) are servable.
"""

from __future__ import annotations

from pathlib import Path

from bse_predict.errors import ManifestError, NotServable
from bse_predict.serving.manifest import Manifest, ModelEntry, list_versions

__all__ = ["check_servable", "newest_servable_version", "refused_entries", "servable_problem"]


def refused_entries(manifest: Manifest, model_name: str | None = None) -> list[ModelEntry]:
    """The entries of the served model (``model_name``, else the manifest's) that training marked not servable."""
    entries = manifest.entries_for(model_name or manifest.served_model).values()
    return [e for e in entries if e.servable is not None and not e.servable.servable]


def servable_problem(manifest: Manifest, model_name: str | None = None) -> str | None:
    """Why the version must not serve, in one line; ``None`` when it may."""
    refused = refused_entries(manifest, model_name)
    if not refused:
        return None
    why = "; ".join(f"{e.target}: {e.servable.reason}" for e in refused if e.servable is not None)
    return (f"version {manifest.version}: its served model {refused[0].name} is not servable at "
            f"{', '.join(e.target for e in refused)} (training's servable gate): {why}")


def check_servable(manifest: Manifest, model_name: str | None = None) -> None:
    """Raise :class:`NotServable` when the version must not serve."""
    if (problem := servable_problem(manifest, model_name)) is not None:
        raise NotServable(problem)


def newest_servable_version(models_dir: Path) -> str:
    """The newest version whose served model is servable: what a worker serves before any control message."""
    versions = list_versions(models_dir)
    if not versions:
        raise ManifestError(f"no model version in {models_dir}: run `bse-predict train` first")
    servable = [m.version for m in versions if servable_problem(m) is None]
    if not servable:
        raise NotServable(f"no servable version in {models_dir}: {servable_problem(versions[-1])}")
    return servable[-1]
