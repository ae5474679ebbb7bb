"""Run the real ``bse-predict worker`` as a subprocess, as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from configs.settings import Settings

__all__ = ["WorkerProcess", "service_env"]

def service_env(settings: Settings) -> dict[str, str]:
    """The environment that points a subprocess at the test's services, topics and models."""
    return {
        "BSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "BSE_REDIS_URL": settings.redis_url,
        "BSE_TOPIC_PREFIX": settings.topic_prefix,
        "BSE_MODELS_DIR": str(settings.models_dir),
    }


# Logged by the agent once it holds its Redis store and model set; messages sent
# before the group's first assignment are still read (auto_offset_reset=earliest).
_READY_MARK = "serving "


class WorkerProcess:
    """A worker subprocess with its own log file; ``start`` returns once its agent runs."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self._env = {**os.environ, **env}
        self.log_path = log_path
        self._args = args
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> WorkerProcess:
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bse_predict.cli", "worker", *self._args],
            env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"worker exited with {self._process.returncode}:\n{self.log_tail()}")
            if _READY_MARK in self.log_path.read_text(errors="replace")[offset:]:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, no commit."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
