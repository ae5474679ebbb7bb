"""The base of every settings block: frozen once built, and an unknown key is an error, not ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["FrozenBlock"]


class FrozenBlock(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
