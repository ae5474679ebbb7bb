"""The shipped Prometheus rules (deploy/prometheus): promtool's checks and its unit tests of every alert."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from configs.settings import load_settings
from tests.support.prometheus import DEPLOY, promtool_program, rules_waiting

RULES = DEPLOY / "rules.yml"
RULES_TEST = DEPLOY / "rules_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return promtool_program()


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=DEPLOY)


def test_promtool_checks_the_rules_and_the_config(promtool: str) -> None:
    for args in (("check", "rules", RULES.name), ("check", "config", "prometheus.yml")):
        done = _promtool(promtool, *args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_promtools_unit_tests_of_the_alerts_pass(promtool: str) -> None:
    done = _promtool(promtool, "test", "rules", RULES_TEST.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_waits_has_a_severity_and_tells_the_operator_what_to_do() -> None:
    alerts = _alerts()
    assert len(alerts) >= 8
    for alert in alerts:
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), f"{name}: no `for:`"
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"] and len(alert["annotations"]["description"]) > 80, name


def test_every_alert_is_seen_firing_in_promtools_tests() -> None:
    cases = [case for group in yaml.safe_load(RULES_TEST.read_text())["tests"] for case in group["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    assert fired == {alert["alert"] for alert in _alerts()}


def test_the_drift_alert_and_the_worker_share_the_threshold_and_the_job_is_the_scraped_one() -> None:
    by_name = {alert["alert"]: alert for alert in _alerts()}
    threshold = load_settings().drift.psi_threshold
    assert f"> {threshold}" in by_name["BsePredictFeatureDrift"]["expr"]
    assert f"drift.psi_threshold, {threshold})" in by_name["BsePredictFeatureDrift"]["annotations"]["description"]
    job = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"][0]["job_name"]
    for name in ("BsePredictWorkerDown", "BsePredictNoWorkerUp"):
        assert f'up{{job="{job}"}}' in by_name[name]["expr"]


def test_the_rules_copy_with_short_waits_passes_promtool_and_differs_only_in_for(
    promtool: str, tmp_path: Path
) -> None:
    copy = rules_waiting(RULES, tmp_path / "rules.yml", "3s")
    done = _promtool(promtool, "check", "rules", str(copy))
    assert done.returncode == 0, done.stdout + done.stderr
    shipped, waiting = (yaml.safe_load(path.read_text())["groups"] for path in (RULES, copy))
    assert {rule.get("for") for group in waiting for rule in group["rules"] if "alert" in rule} == {"3s"}
    for group in (*shipped, *waiting):
        for rule in group["rules"]:
            rule.pop("for", None)
    assert waiting == shipped
