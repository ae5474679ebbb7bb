"""The monitoring that ships for Docker machines, checked without Docker: docker-compose.yml's Prometheus and
Grafana services, their provisioning, and the dashboard's queries against what the worker really exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bse_predict.monitoring.metrics import WorkerMetrics
from tests.support.prometheus import DEPLOY, promtool_program

ROOT = DEPLOY.parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "bse-predict.json"

_SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_OUR_NAME = re.compile(r"\bbse[_:][A-Za-z0-9_:]+")
_TEMPLATE_VARIABLES = {"$__rate_interval": "5m", "$window_hours": "168", "$target": ".*"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _dashboard_exprs() -> list[str]:
    exprs = [target["expr"] for panel in _panels() for target in panel["targets"]]
    return exprs + [variable["query"]["query"] for variable in _dashboard()["templating"]["list"]]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load((DEPLOY / "rules.yml").read_text())["groups"] for rule in group["rules"]]


def _exported_names() -> set[str]:
    """Every sample name the worker's /metrics can carry."""
    return {family.name + suffix for family in WorkerMetrics().registry.collect()
            for suffix in _SAMPLE_SUFFIXES[family.type]}


def _names_in(expr: str) -> set[str]:
    return set(_OUR_NAME.findall(_STRING.sub('""', expr)))


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: host path relative to the repository} of the service's ./ mounts."""
    mounts = [volume.split(":") for volume in service.get("volumes", [])]
    return {target: source for source, target, *_ in mounts if source.startswith("./")}


def test_every_series_the_dashboard_and_the_rules_read_is_exported_by_the_worker_or_recorded() -> None:
    known = _exported_names() | {rule["record"] for rule in _rules() if "record" in rule}
    assert "bse_stream_events_total" in known and "bse_prediction_latency_ms_bucket" in known
    exprs = _dashboard_exprs() + [rule["expr"] for rule in _rules()]
    unknown = {name for expr in exprs for name in _names_in(expr)} - known
    assert not unknown, f"not exported by the worker nor recorded: {sorted(unknown)}"


def test_the_dashboard_covers_throughput_latency_lag_breakers_dead_letters_scores_and_drift() -> None:
    panels = _panels()
    assert all(panel["targets"] and all(t["expr"] for t in panel["targets"]) for panel in panels)
    assert len({panel["id"] for panel in _dashboard()["panels"]}) == len(_dashboard()["panels"])
    read = " ".join(_dashboard_exprs())
    for needed in ('kind="predicted"', "bse_prediction_latency_ms", "bse_consumer_lag", "bse_breaker_open",
                   "dlq", "bse:dead_letter_ratio", "bse_live_log_loss", "bse_live_climatology_log_loss",
                   "bse_live_base_rate", "bse_live_accuracy", "bse:drift_psi", "bse:last_prediction_age_seconds"):
        assert needed in read, needed


def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every query, its template variables filled in, as a recording rule: promtool parses them all."""
    exprs = []
    for expr in _dashboard_exprs():
        for variable, value in _TEMPLATE_VARIABLES.items():
            expr = expr.replace(variable, value)
        exprs.append(expr)
    queries = [expr for expr in exprs if not expr.startswith("label_values(")]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": expr}
                                                        for i, expr in enumerate(queries)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool_program(), "check", "rules", "dashboard.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_prometheus_with_the_shipped_rules_against_the_workers_metrics_port() -> None:
    services = _compose()["services"]
    mounts = _bind_mounts(services["prometheus"])
    assert mounts["/etc/prometheus"] == "./deploy/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert all((DEPLOY / name).is_file() for name in config["rule_files"])  # relative to the mounted folder
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and "worker" in services
    assert services["worker"]["environment"]["BSE_LIVE_METRICS__METRICS_PORT"] == str(discovery["port"])
    assert services["worker"]["environment"]["BSE_KAFKA_BOOTSTRAP"] == "kafka:9092"  # the shared ones kept


def test_compose_provisions_grafana_with_the_prometheus_datasource_and_the_dashboard() -> None:
    services = _compose()["services"]
    mounts = _bind_mounts(services["grafana"])
    for source in mounts.values():
        assert (ROOT / source).is_dir(), source
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"][0]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "bse-predict.yml").read_text())["providers"]
    assert ROOT / mounts[provider["options"]["path"]] == DASHBOARD.parent
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    uids = {panel["datasource"]["uid"] for panel in _panels()}
    uids |= {t["datasource"]["uid"] for panel in _panels() for t in panel["targets"]}
    assert uids == {datasource["uid"]}


@pytest.mark.parametrize("name", ["prometheus", "grafana"])
def test_the_monitoring_images_are_pinned(name: str) -> None:
    image = _compose()["services"][name]["image"]
    assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), image
