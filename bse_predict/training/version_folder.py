"""A model version is built beside its final folder and appears there whole or not at all.

:func:`partial_version` gives a fresh ``.<version>.partial`` folder and removes it when
building fails; :func:`publish_version` writes the signed manifest (with its changelog)
into it and renames it to the version's folder, the one step a reader can see. Training
(:mod:`bse_predict.training.train`) and the legacy migration
(:mod:`bse_predict.training.migrate`) both build versions this way.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from configs.settings import Settings
from bse_predict.serving.changelog import with_changelog
from bse_predict.serving.manifest import MANIFEST_NAME, Manifest, manifest_json

__all__ = ["partial_version", "publish_version"]


@contextmanager
def partial_version(models_dir: Path, version: str, subfolder: str) -> Iterator[Path]:
    """``models_dir/.<version>.partial``, emptied of any earlier attempt, with ``subfolder`` made
    in it; removed when the block raises (anything, an interrupt included)."""
    work_dir = models_dir / f".{version}.partial"
    shutil.rmtree(work_dir, ignore_errors=True)
    (work_dir / subfolder).mkdir(parents=True)
    try:
        yield work_dir
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise


def publish_version(manifest: Manifest, work_dir: Path, final_dir: Path, settings: Settings) -> None:
    """Add the changelog to ``manifest``, write it signed into ``work_dir``, and rename
    ``work_dir`` to ``final_dir``."""
    manifest = with_changelog(manifest, settings.models_dir)
    (work_dir / MANIFEST_NAME).write_text(manifest_json(manifest, settings.model_signing_secret), encoding="utf-8")
    work_dir.rename(final_dir)
