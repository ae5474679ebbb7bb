"""One HMM fit per version: regime models shared between the families that fit the same one.

The regime model is fitted on the sequence inputs alone (unsupervised), so with the same
hyperparameters and the same training hours it is the same model whether ``hmm_regime``, a
regime hybrid or the ensemble's ``hmm_regime`` member fits it, at any target. Inside
:func:`shared_regime_fits` (the trainer opens it around every fit, in every worker process)
:func:`fit_regime_model` fits a model once per key (the hyperparameters and a SHA-256 of the
stitched training hours) and stores it in the given folder; a later fit with the same key, in
this process or another, loads it instead. A lock per key makes a second process wait for the
first fit rather than repeat it. Outside the context every call fits, as before.

The folder is private to one training run (the trainer makes and removes it), so the pickles
it holds are this run's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from bse_predict.families.regime_model import (
    RegimeModel,
    stitch_windows,
    unfitted_regime_model,
)

__all__ = ["fit_regime_model", "regime_fit_key", "shared_regime_fits"]

_FOLDER: ContextVar[Path | None] = ContextVar("regime_cache_folder", default=None)


def regime_fit_key(model: RegimeModel, stretches: list[np.ndarray]) -> str:
    """SHA-256 of the hyperparameters and of the training hours (shape, dtype and bytes of each stretch)."""
    digest = hashlib.sha256(json.dumps(model.get_params(), sort_keys=True).encode())
    for stretch in stretches:
        part = np.ascontiguousarray(stretch)
        digest.update(f"{part.shape}{part.dtype}".encode())
        digest.update(part.tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def shared_regime_fits(folder: Path) -> Iterator[None]:
    """Within the block, :func:`fit_regime_model` shares its fits through ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    token = _FOLDER.set(folder)
    try:
        yield
    finally:
        _FOLDER.reset(token)


def fit_regime_model(family: Any, sequences: np.ndarray) -> RegimeModel:
    """The regime model with ``family``'s HMM hyperparameters fitted on the hours of ``sequences``
    (float[n, T, 4] windows): the shared fit inside :func:`shared_regime_fits`, a new one outside."""
    model = unfitted_regime_model(family)
    stretches = stitch_windows(sequences)
    folder = _FOLDER.get()
    if folder is None:
        return model.fit(stretches)
    from filelock import FileLock

    key = regime_fit_key(model, stretches)
    path = folder / f"{key}.pkl"
    with FileLock(folder / f"{key}.lock"):
        if path.exists():
            return pickle.loads(path.read_bytes())  # written by this run, in its private folder
        fitted = model.fit(stretches)
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(fitted))
        os.replace(partial, path)
        return fitted
