"""Loading the versions a control message names and checking them before they serve.

Every named version must load (manifest, files, sha256: the router's loader). A
version about to serve live traffic (``promote``, ``ramp``) is checked further:
its files are verified again against its manifest (they may have changed since it
was loaded), it is warmed up on this worker's newest windows (flat windows before
the first candle: they still exercise every graph) and every row must be a valid
set of probabilities, and it must reproduce its recorded native outputs on its
recorded parity samples (:mod:`bse_predict.serving.parity_check`).

Blocking (it loads models): the control plane runs :meth:`VersionCheck.check` on
its loader thread.
"""

from __future__ import annotations

import numpy as np

from configs.settings import Settings
from bse_predict.control.messages import ControlMessage
from bse_predict.errors import ManifestError
from bse_predict.serving.breaker import bad_rows
from bse_predict.serving.manifest import load_manifest, verify_files
from bse_predict.serving.model_set import Predictor, predict_windows
from bse_predict.serving.parity_check import check_recorded_parity
from bse_predict.serving.router import MODEL_ERRORS, ModelRouter

__all__ = ["VersionCheck"]

_MAX_PROBLEM = 300  # characters of why a version cannot serve


class VersionCheck:
    """Checks the versions of control messages with ``router``'s loader, warming them up on the windows
    given to :meth:`note_windows`."""

    def __init__(self, settings: Settings, router: ModelRouter) -> None:
        self._settings = settings
        self._router = router
        self._recent_windows: tuple[np.ndarray, np.ndarray] | None = None  # replaced whole; read by the loader thread

    def note_windows(self, windows: np.ndarray, open_times: np.ndarray) -> None:
        """The newest windows served (and their open times): what the next warm-up runs on."""
        self._recent_windows = (windows, open_times)

    def check(self, message: ControlMessage) -> tuple[dict[str, str], dict[str, str]]:
        """(version -> why it cannot serve, version -> what was not checked) for the versions the
        message names (blocking: loads models)."""
        if message.command == "ab":
            named = list(message.args["variants"])
        else:
            named = [message.args["version"]] if message.args.get("version") else []
        problems: dict[str, str] = {}
        notes: dict[str, str] = {}
        for version in named:
            try:
                model = self._router.load(version)
            except (ManifestError, *MODEL_ERRORS) as error:
                problems[version] = str(error)[:_MAX_PROBLEM]
                continue
            if message.command in ("promote", "ramp"):
                try:  # again, even when loaded before: the files may have changed since
                    version_dir = self._settings.models_dir / version
                    verify_files(version_dir, load_manifest(version_dir, self._settings.model_signing_secret))
                except ManifestError as error:
                    problems[version] = str(error)[:_MAX_PROBLEM]
                    continue
                trouble, note = self.warm_up_problem(model)
                if trouble is not None:
                    problems[version] = trouble
                elif note is not None:
                    notes[version] = note
        return problems, notes

    def warm_up_problem(self, model: Predictor) -> tuple[str | None, str | None]:
        """Run the version on the current windows, then on its recorded parity samples against the
        recorded native outputs (:mod:`bse_predict.serving.parity_check`): (why it fails or None, what was not checked)."""
        recent = self._recent_windows
        if recent is None:  # this worker has seen no candle yet: flat windows still exercise every graph
            windows, open_times = np.ones((4, model.min_history, 5)), np.zeros(4, dtype=np.int64)
        else:
            windows, open_times = recent
        try:
            out = predict_windows(model, windows[:, -model.min_history:], open_times)
        except MODEL_ERRORS as error:
            return f"warm-up failed: {type(error).__name__}: {error}"[:_MAX_PROBLEM], None
        bad = bad_rows(out, len(open_times))
        if bad.any():
            return f"warm-up on {len(open_times)} current windows: {int(bad.sum())} rows NaN or out of range", None
        manifest = getattr(model, "manifest", None)
        if manifest is None:  # not a version from the registry (no recorded parity to hold it to)
            return None, None
        try:
            verdict = check_recorded_parity(model, manifest, self._settings.models_dir / model.version)
        except MODEL_ERRORS as error:
            return f"parity: run on the recorded samples failed: {type(error).__name__}: {error}"[:_MAX_PROBLEM], None
        return (verdict.problem[:_MAX_PROBLEM] if verdict.problem else None), verdict.note
