"""Debian's Prometheus for the tests: ``promtool``, and a real ``prometheus`` server scraping test workers.

Both come from Debian's ``prometheus`` package, installed with apt-get the first time a
test needs them (:func:`bse_predict.services.debian_packages.debian_program`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml

from bse_predict.services.debian_packages import debian_program
from tests.support.worker_process import LoggedProcess

__all__ = ["DEPLOY", "PrometheusProcess", "config_scraping", "prometheus_program", "promtool_program",
           "rules_waiting"]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
"""The shipped configuration and rules."""

T = TypeVar("T")


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


def promtool_program() -> str:
    return debian_program("promtool", "prometheus", _progress)


def prometheus_program() -> str:
    return debian_program("prometheus", "prometheus", _progress)


def rules_waiting(shipped: Path, copy: Path, alert_for: str) -> Path:
    """Write to ``copy`` the rules of ``shipped`` with every alert's ``for:`` set to ``alert_for``, everything
    else as shipped, and return ``copy``."""
    rules = yaml.safe_load(shipped.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = alert_for
    copy.write_text(yaml.safe_dump(rules, sort_keys=False))
    return copy


def config_scraping(targets: Sequence[str], rules_dir: Path, alert_for: str, interval_s: int = 1) -> dict[str, Any]:
    """The shipped ``prometheus.yml`` with its job scraping ``targets`` (host:port) instead of discovering
    them, scrapes and rule evaluations every ``interval_s`` seconds, and its rule files copied into
    ``rules_dir`` by :func:`rules_waiting` (every alert's ``for:`` is ``alert_for``)."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    every = f"{interval_s}s"
    config["global"] = {"scrape_interval": every, "scrape_timeout": every, "evaluation_interval": every}
    config["rule_files"] = [str(rules_waiting(DEPLOY / name, rules_dir / name, alert_for))
                            for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": list(targets)}]
    return config


class PrometheusProcess(LoggedProcess):
    """``prometheus`` on 127.0.0.1:``port`` with ``config``, its TSDB and log under ``home``; ``start`` returns
    once it is ready, ``stop`` (or leaving the ``with``) ends it."""

    def __init__(self, config: dict[str, Any], home: Path, port: int) -> None:
        self.port = port
        self.home = home
        self.log_path = home / "prometheus.log"
        self._config_path = home / "prometheus.yml"
        self._config_path.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Self:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [prometheus_program(), f"--config.file={self._config_path}",
                 f"--storage.tsdb.path={self.home / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for("ready", self._ready, timeout_s)
        return self

    def _ready(self) -> bool | None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as reply:
                return reply.status == 200 or None
        except (urllib.error.URLError, OSError):
            return None

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of ``GET /api/v1/PATH?params``."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now: [{"metric": labels, "value": [time, "value"]}, ...]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts named ``name``."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def wait_for(self, what: str, found: Callable[[], T | None], timeout_s: float = 60.0) -> T:
        """Poll ``found()`` until it returns something truthy, and return that; fail naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = found()
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{what}: not seen in Prometheus after {timeout_s} s:\n{self.log_tail()}")

