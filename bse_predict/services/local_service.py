"""One local service, and the lifecycle every service shares: what it is
(:class:`LocalService`), the checks before a start (a loopback address, free ports),
launching it detached with a pid file, waiting until it answers, stopping or killing
it, and reporting its state.

What is particular to each service lives in :mod:`bse_predict.services.local_kafka`,
:mod:`bse_predict.services.local_cluster` and :mod:`bse_predict.services.local_redis`;
the commands' API (``up``, ``down``, ``status``) in :mod:`bse_predict.services.stack`.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from bse_predict.services.processes import (
    is_alive,
    send_signal,
    spawn_detached,
    wait_exit,
)

__all__ = [
    "LocalService",
    "Progress",
    "ServiceState",
    "ServicesError",
    "bind_ip",
    "host_port",
    "kill_service",
    "last_error_line",
    "require_local",
    "require_program",
    "running_pid",
    "service_state",
    "services_dir",
    "start_services",
    "stop_services",
]

Progress = Callable[[str], None]

_STOP_WAIT_S = 30.0
_POLL_S = 0.5


class ServicesError(Exception):
    """An expected failure, worded for a person: the first line is the reason.

    Start-up failures add the end of the service's log, indented, below it.
    """


class ServiceState(BaseModel):
    """One service (or the Kafka cluster as a whole) as seen now.

    ``running``: our process is alive or something answers at ``address``;
    ``healthy``: it answers (Kafka metadata, Redis PING); ``pid``: only for a
    process that bse-predict started; ``log_path``: None for a whole cluster,
    whose brokers each have their own.
    """

    name: str
    address: str
    running: bool
    healthy: bool
    pid: int | None
    log_path: Path | None
    detail: str


@dataclass(frozen=True)
class LocalService:
    """One local service: where it listens, where its files live, how to run and probe it."""

    name: str
    host: str
    port: int
    extra_ports: tuple[int, ...]  # more ports it binds, checked free before a start
    home: Path
    log_path: Path
    pid_path: Path
    cmdline_marker: str  # in /proc/<pid>/cmdline of the real service: guards against pid reuse
    probe: Callable[[], str | None]  # a one-line description when it answers, else None
    prepare: Callable[[Progress], list[str]]  # one-time setup; returns the command line

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)



# ------------------------------------------------------------------ lifecycle


def start_services(services: list[LocalService], *, progress: Progress, timeout_s: float) -> None:
    """Start those of ``services`` that do not answer yet, then wait until all answer.

    Every check and one-time setup runs before anything is launched; ``timeout_s``
    counts from the launch.
    """
    for service in services:
        require_local(service)
    to_start = [service for service in services if _needs_start(service, progress)]
    commands = [(service, service.prepare(progress)) for service in to_start]
    started = {service.name: _start(service, argv, progress) for service, argv in commands}
    deadline = time.monotonic() + timeout_s
    for service in services:
        pid = started.get(service.name) or running_pid(service)
        _await_healthy(service, pid, deadline, timeout_s)


def _needs_start(service: LocalService, progress: Progress) -> bool:
    """Whether to launch ``service``: not when it answers or our process is coming up.

    Raises ServicesError when one of its ports is taken by another program.
    """
    if service.probe() is not None:
        progress(f"{service.name} already running at {service.address}")
        return False
    pid = running_pid(service)
    if pid is not None:
        progress(f"{service.name} (pid {pid}) is still starting; waiting for it")
        return False
    for port in (service.port, *service.extra_ports):
        _require_free_port(service, port)
    return True


def _start(service: LocalService, command: list[str], progress: Progress) -> int:
    service.home.mkdir(parents=True, exist_ok=True)
    pid = spawn_detached(command, service.log_path, cwd=service.home)
    service.pid_path.write_text(f"{pid}\n", encoding="utf-8")
    progress(f"started {service.name} (pid {pid}) at {service.address}; log: {service.log_path}")
    return pid


def _await_healthy(
    service: LocalService, pid: int | None, deadline: float, timeout_s: float
) -> None:
    while service.probe() is None:
        if pid is not None and not is_alive(pid):
            service.pid_path.unlink(missing_ok=True)
            raise _startup_error(service, "exited during start-up")
        if time.monotonic() > deadline:
            raise _startup_error(
                service, f"did not answer at {service.address} within {timeout_s:g} s"
            )
        time.sleep(_POLL_S)


def stop_services(services: list[LocalService], progress: Progress) -> None:
    """SIGTERM the processes of ``services`` that bse-predict started, all at once, then
    wait for each (SIGKILL after 30 s).

    All at once: a cluster node stopped after the others would wait for a
    controller quorum that is already gone.
    """
    stopping: list[tuple[LocalService, int]] = []
    for service in services:
        pid = running_pid(service)
        if pid is None:
            service.pid_path.unlink(missing_ok=True)
            progress(f"{service.name}: nothing started by bse-predict is running")
            continue
        progress(f"stopping {service.name} (pid {pid})...")
        send_signal(pid, signal.SIGTERM)
        stopping.append((service, pid))
    deadline = time.monotonic() + _STOP_WAIT_S
    for service, pid in stopping:
        if not wait_exit(pid, max(deadline - time.monotonic(), 0)):
            progress(f"{service.name} ignored SIGTERM for {_STOP_WAIT_S:g} s; killing it")
            send_signal(pid, signal.SIGKILL)
            wait_exit(pid, 5)
        service.pid_path.unlink(missing_ok=True)
        progress(f"{service.name} stopped")


def kill_service(service: LocalService) -> int:
    """SIGKILL the service's process (no clean shutdown), wait until it is gone; return its pid.

    Raises ServicesError when no process of it that bse-predict started is running.
    """
    pid = running_pid(service)
    if pid is None:
        raise ServicesError(f"{service.name}: nothing started by bse-predict is running")
    send_signal(pid, signal.SIGKILL)
    if not wait_exit(pid, 10):
        raise ServicesError(f"{service.name} (pid {pid}) is still alive 10 s after SIGKILL")
    service.pid_path.unlink(missing_ok=True)
    return pid


def service_state(service: LocalService) -> ServiceState:
    """The service as seen now: our pid, whether it answers, and how."""
    pid = running_pid(service)
    answer = service.probe()
    if answer is not None:
        detail = answer if pid is not None else f"{answer} (not started by bse-predict)"
    elif pid is not None:
        detail = f"process alive but not answering; see {service.log_path}"
    else:
        detail = "not running"
    return ServiceState(
        name=service.name,
        address=service.address,
        running=pid is not None or answer is not None,
        healthy=answer is not None,
        pid=pid,
        log_path=service.log_path,
        detail=detail,
    )


def running_pid(service: LocalService) -> int | None:
    """The pid in the service's pid file, if that process is alive and is the service."""
    try:
        pid = int(service.pid_path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    if not is_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid  # no /proc on this system: trust the pid file
    return pid if service.cmdline_marker.encode() in cmdline else None



# ---------------------------------------------------------- addresses, ports


def require_local(service: LocalService) -> None:
    """Fail unless the service's address is a loopback one: any other is someone else's to run."""
    local = service.host == "localhost"
    if not local:
        try:
            local = ipaddress.ip_address(service.host).is_loopback
        except ValueError:
            local = False
    if not local:
        raise ServicesError(
            f"{service.name} address {service.address} is not local; start it yourself"
        )


def _require_free_port(service: LocalService, port: int) -> None:
    """Fail unless ``port`` can be bound the way the service will bind it (SO_REUSEADDR)."""
    ip = bind_ip(service.host)
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as exc:
            raise ServicesError(
                f"port {port} on {service.host} is in use by another program ({exc.strerror}), "
                f"so {service.name} cannot start there; free it or choose another port"
            ) from None


def bind_ip(host: str) -> str:
    """The IP address a local service binds for ``host``."""
    return "127.0.0.1" if host == "localhost" else host


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -------------------------------------------------------------------- helpers


def services_dir() -> Path:
    """Where state, logs and pid files live: ``$BSE_SERVICES_DIR`` or ``./var/services``."""
    configured = os.environ.get("BSE_SERVICES_DIR")
    return (Path(configured) if configured else Path.cwd() / "var" / "services").absolute()


def require_program(name: str, why: str) -> str:
    """The full path of ``name`` on PATH, or a ServicesError saying ``why`` it is needed."""
    path = shutil.which(name)
    if path is None:
        raise ServicesError(f"'{name}' is not on PATH: {why}")
    return path


def last_error_line(output: str) -> str:
    """The first line of a tool's output that looks like an error, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "rror:" in line]
    if errors:
        return errors[0]
    return lines[-1] if lines else "no output"


def _startup_error(service: LocalService, reason: str) -> ServicesError:
    """A start-up failure: the reason and the log's last line first (what a CLI
    shows), then the end of the log, indented, without Java stack frames."""
    try:
        text = service.log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("\tat ")]
    message = f"{service.name} {reason}; see {service.log_path}"
    if not lines:
        return ServicesError(message)
    errors = [line.strip() for line in lines if " ERROR " in line or " FATAL " in line]
    cause = f"; first error: {errors[0]}" if errors else ""
    tail = "".join(f"\n    {line}" for line in lines[-8:])
    return ServicesError(f"{message}{cause}; last log line: {lines[-1].strip()}{tail}")
