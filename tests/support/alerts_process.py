"""Run the real ``bse-predict alerts`` as a subprocess, as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["AlertsProcess"]

_READY_MARK = "alerts ready"  # workers.alerts.run.READY_MESSAGE, logged at the first partition assignment


class AlertsProcess:
    """An alerts subprocess with its own log file; ``start`` returns once its consumer holds partitions."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self._env = {**os.environ, **env}
        self.log_path = log_path
        self._args = args
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> AlertsProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bse_predict.cli", "alerts", *self._args],
            env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _READY_MARK in self.log_path.read_text(errors="replace")[offset:]:
                return self  # ready, even if a test has killed it since (it may, from the fake server)
            if self._process.poll() is not None:
                raise RuntimeError(f"alerts exited with {self._process.returncode}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"alerts not ready after {timeout_s} s:\n{self.log_tail()}")

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

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

    def __enter__(self) -> AlertsProcess:
        return self.start() if self._process is None else self  # `with proc.start():` must not start a second one

    def __exit__(self, *_: object) -> None:
        self.stop()
