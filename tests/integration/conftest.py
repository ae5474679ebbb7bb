"""Fixtures of the integration tests beyond those of tests/conftest.py."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from configs.settings import Settings
from tests.support.secure_stack import secure_stack  # noqa: F401  (the session's secure Kafka and Redis)
from bse_predict.connections.topics import ensure_topics


@pytest.fixture
def control_settings(isolated: Settings, trained_version: Settings, tmp_path: Path) -> Settings:
    """Isolated settings whose models folder holds a copy of ``v-test`` that a test may change."""
    models_dir = tmp_path / "models"
    shutil.copytree(trained_version.models_dir / "v-test", models_dir / "v-test")
    settings = isolated.model_copy(update={"models_dir": models_dir})
    asyncio.run(ensure_topics(settings))
    return settings
