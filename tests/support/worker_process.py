"""Run the real ``bse-predict`` commands (``worker``, ``alerts``) as subprocesses, as an operator would."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self

from prometheus_client.parser import text_string_to_metric_families

from configs.settings import Settings
from bse_predict.connections.clients import client_environment

__all__ = ["CommandProcess", "LoggedProcess", "WorkerProcess", "free_port", "service_env"]


def service_env(settings: Settings) -> dict[str, str]:
    """The environment that points a subprocess at the test's services, topics and models."""
    return {
        **client_environment(settings),
        "BSE_TOPIC_PREFIX": settings.topic_prefix,
        "BSE_MODELS_DIR": str(settings.models_dir),
    }


def free_port() -> int:
    """A port free on 127.0.0.1 now, drawn below Linux's ephemeral range (32768-60999): a port that bind(0)
    hands out is an ephemeral one, and on a busy machine an outgoing connection can take it before the
    server binds it."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class LoggedProcess:
    """A subprocess in its own process group, writing to ``log_path``; ``start`` launches it (subclasses),
    ``stop`` (or leaving the ``with``) ends it: SIGTERM, SIGKILL after 30 s."""

    log_path: Path
    _process: subprocess.Popen[bytes] | None

    def start(self, timeout_s: float = 60.0) -> Self:
        raise NotImplementedError

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


class CommandProcess(LoggedProcess):
    """One ``bse-predict COMMAND`` subprocess with its own log file; ``start`` launches it and returns
    once :meth:`ready` says so, :meth:`launch` returns at once."""

    command: ClassVar[str]

    def ready(self) -> bool:
        raise NotImplementedError

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self._env = {**os.environ, **env}
        self.log_path = log_path
        self._args = args
        self._process: subprocess.Popen[bytes] | None = None

    def launch(self) -> Self:
        """Start the process and return at once, without waiting for :meth:`ready`."""
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bse_predict.cli", self.command, *self._args],
                env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def start(self, timeout_s: float = 60.0) -> Self:
        self.launch()
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return self
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


class WorkerProcess(CommandProcess):
    """``bse-predict worker`` with its Prometheus ``/metrics`` on ``metrics_port`` (a free one unless
    given), refreshed every 0.5 s: ready once ``bse_control_revision`` is at least 0, which the
    worker sets when its candle agent holds its Redis store and model set; messages sent before
    the group's first assignment are still read (auto_offset_reset=earliest)."""

    command = "worker"

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = (),
                 metrics_port: int | None = None) -> None:
        self.metrics_port = metrics_port or free_port()
        super().__init__({**env, "BSE_LIVE_METRICS__METRICS_PORT": str(self.metrics_port),
                          "BSE_LIVE_METRICS__REFRESH_S": "0.5"}, log_path, args)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        """Every sample of ``/metrics`` by (name, sorted labels); None when nothing answers."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        except (urllib.error.URLError, OSError):
            return None
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of ``/metrics``; None when it is not there (yet) or nothing answers."""
        samples = self.metrics()
        return None if samples is None else samples.get((name, tuple(sorted(labels.items()))))

    def control_revision(self) -> int | None:
        """The control revision the worker serves (``bse_control_revision``); None before it serves."""
        value = self.metric("bse_control_revision")
        return None if value is None or value < 0 else int(value)

    def ready(self) -> bool:
        return self.control_revision() is not None

    def wait_for_metric(self, what: str, done: Callable[[WorkerProcess], bool], timeout_s: float = 30) -> None:
        """Poll ``/metrics`` (through ``done(self)``) until ``done`` holds, or fail saying ``what``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self):
                return
            time.sleep(0.1)
        raise AssertionError(f"{what}: not seen on /metrics after {timeout_s} s:\n{self.log_tail()}")

    def wait_for_revision(self, revision: int, timeout_s: float = 30) -> None:
        """Until the worker serves control revision ``revision`` or a later one."""
        self.wait_for_metric(f"control revision {revision} applied",
                             lambda w: (w.control_revision() or 0) >= revision, timeout_s)
