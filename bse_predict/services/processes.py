"""Detached processes and their pids: launch one that outlives us, tell whether a pid is
alive, signal it, wait for it to exit. Nothing here knows which service a process is."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["is_alive", "send_signal", "spawn_detached", "wait_exit"]


def spawn_detached(argv: list[str], log_path: Path, *, cwd: Path) -> int:
    """Run ``argv`` in a new session, stdout and stderr to ``log_path``; return its pid.

    A throw-away ``sh`` starts the service in the background and exits, so the
    service is not our child: it outlives us and never lingers as a zombie in a
    long-lived caller.
    """
    script = '"$@" </dev/null >"$0" 2>&1 & echo $!'  # $0: the log file; "$@": the command
    launcher = subprocess.run(
        ["sh", "-c", script, str(log_path), *argv],
        cwd=cwd, capture_output=True, text=True, check=True, start_new_session=True,
    )
    return int(launcher.stdout.strip())


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has exited


def send_signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
        os.kill(pid, signum)


def wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True

