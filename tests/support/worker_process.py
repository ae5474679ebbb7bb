"""Run the real ``bse-predict`` commands (``worker``, ``alerts``) as subprocesses, as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar, Self

from configs.settings import Settings
from bse_predict.connections.clients import client_environment

__all__ = ["CommandProcess", "WorkerProcess", "service_env"]


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that points a subprocess at the test's services, topics and models."""
    return {
        **client_environment(settings),
        "BSE_TOPIC_PREFIX": settings.topic_prefix,
        "BSE_MODELS_DIR": str(settings.models_dir),
    }


class CommandProcess:
    """One ``bse-predict COMMAND`` subprocess with its own log file; ``start`` returns once the log
    shows :attr:`ready_mark` (written after the log's size at start, so a restart waits anew)."""

    command: ClassVar[str]
    ready_mark: ClassVar[str]

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self._env = {**os.environ, **env}
        self.log_path = log_path
        self._args = args
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Self:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bse_predict.cli", self.command, *self._args],
            env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready_mark in self.log_path.read_text(errors="replace")[offset:]:
                return self  # ready, even if a test has killed it since
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.command} exited with {self._process.returncode}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.command} not ready after {timeout_s} s:\n{self.log_tail()}")

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def wait_exit(self, timeout_s: float = 60.0) -> int | None:
        """Its exit status once it has exited on its own, or None if it still runs after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.returncode is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.returncode

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

    def __enter__(self) -> Self:
        return self.start() if self._process is None else self  # `with proc.start():` must not start a second one

    def __exit__(self, *_: object) -> None:
        self.stop()


class WorkerProcess(CommandProcess):
    """``bse-predict worker``: ready once the agent holds its Redis store and model set; messages
    sent before the group's first assignment are still read (auto_offset_reset=earliest)."""

    command = "worker"
    ready_mark = "serving "
