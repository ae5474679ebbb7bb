"""The best parameters as a config block: ``models.families.<family>`` with the tuned values merged into
its ``params``, written as a YAML file that ``--config`` layers over the defaults (or that can be pasted
into ``configs/default.yaml``). The block is validated as settings before it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from configs.settings import Settings, load_settings
from bse_predict.families.base import check_family_params

__all__ = ["config_block", "write_config_block"]


def config_block(settings: Settings, family: str, best_params: dict[str, Any]) -> dict[str, Any]:
    """``{"models": {"families": {family: {enabled, params, per_target}}}}`` with ``best_params`` merged in."""
    current = settings.models.families.get(family)
    block = {
        "enabled": current.enabled if current else True,
        "params": {**(current.params if current else {}), **best_params},
        "per_target": dict(current.per_target) if current else {},
    }
    return {"models": {"families": {family: block}}}


def write_config_block(path: Path, block: dict[str, Any], header: str) -> Settings:
    """Validate ``block`` as a config layer (settings and the family's constructor), then write it with
    ``header`` as a YAML comment; the validated settings are returned."""
    settings = load_settings(**block)
    check_family_params(settings)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(comment + yaml.safe_dump(block, sort_keys=False), encoding="utf-8")
    return settings
