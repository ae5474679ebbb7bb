"""The local Redis of ``bse-predict services``: the system's ``redis-server``.

It runs with AOF on (``--appendonly yes``) and RDB snapshots off, so the
windows kept in Redis survive a restart.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bse_predict.services.debian_packages import debian_program
from bse_predict.services.local_service import LocalService, Progress, bind_ip, services_dir
from configs.settings import Settings

__all__ = ["redis_server_program", "redis_service"]


def redis_service(settings: Settings) -> LocalService:
    """The local server for ``settings.redis_url``."""
    url = urlsplit(settings.redis_url.get_secret_value())
    host, port = url.hostname or "localhost", url.port or 6379
    root = services_dir()
    home, log_path = root / "redis", root / "redis.log"
    return LocalService(
        name="redis",
        host=host,
        port=port,
        extra_ports=(),
        home=home,
        log_path=log_path,
        pid_path=root / "redis.pid",
        cmdline_marker="redis-server",
        probe=lambda: probe_redis(host, port),
        prepare=lambda progress: _command(home, log_path, host, port, progress),
    )


def probe_redis(host: str, port: int, **client_options: object) -> str | None:
    """PING the server once (the callers poll) and name its version; None if it does not answer.
    ``client_options``: more redis-py arguments (TLS, an ACL user)."""
    client = redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2,
                         retry=Retry(NoBackoff(), retries=0), **client_options)  # type: ignore[arg-type]
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return f"Redis {version}"


def _command(home: Path, log_path: Path, host: str, port: int, progress: Progress) -> list[str]:
    home.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_program(progress),
        "--port", str(port),
        "--bind", bind_ip(host),
        "--dir", str(home),
        "--daemonize", "no",
        "--save", "",
        "--appendonly", "yes",
        "--logfile", str(log_path),
    ]


def redis_server_program(progress: Progress) -> str:
    """The system's redis-server, installed with apt-get when missing and we are root."""
    return debian_program("redis-server", "redis-server", progress)
