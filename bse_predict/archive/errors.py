"""Errors of the candle archive."""

from __future__ import annotations

from bse_predict.errors import BsePredictError

__all__ = ["ArchiveError", "ArchiveLocationError", "ArchiveWriteFailed"]


class ArchiveError(BsePredictError):
    """Base of the archive's errors."""


class ArchiveLocationError(ArchiveError):
    """``--out`` names no place the archive can write to (a file, an unknown URL scheme)."""


class ArchiveWriteFailed(ArchiveError):
    """Writes kept failing past ``archive.write_deadline_s``: the command stops with nothing committed."""
