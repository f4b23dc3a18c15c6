"""The alert rules: promtool's checks and unit tests, and what every alert must carry."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from monitoring_services import binary, render_rules

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "k8s" / "prometheus"
RULE = REPO / "k8s" / "base" / "prometheus-rule.yaml"
DASHBOARD = REPO / "k8s" / "base" / "dashboard-configmap.yaml"
ALERTS = {
    "PlateauLSTMTrainingStalled",
    "PlateauLSTMTrainingDiverged",
    "PlateauLSTMNightlyRetrainMissing",
    "PlateauLSTMRestartStorm",
    "PlateauLSTMTrainingNotProgressing",
}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True
    )


def test_rules_yml_is_rendered_from_the_prometheus_rule():
    assert (PROMETHEUS_DIR / "rules.yml").read_text() == render_rules().render(), (
        "k8s/prometheus/rules.yml differs from k8s/base/prometheus-rule.yaml: run "
        "`.venv/bin/python k8s/prometheus/render_rules.py`"
    )


def test_promtool_check_rules():
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", "tests/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    tests = yaml.safe_load((PROMETHEUS_DIR / "tests" / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{alert}: no quiet case"


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_carries_severity_summary_description_and_a_runbook_that_exists():
    readme = (REPO / "README.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", readme, flags=re.MULTILINE)}
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        fragment = annotations["runbook_url"].rsplit("#", 1)[1]
        assert fragment == rule["alert"].lower()
        assert fragment in anchors, f"README.md has no heading for #{fragment}"


def test_the_prometheus_rule_is_a_prometheus_operator_resource():
    rule = yaml.safe_load(RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "plateau-lstm"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    configmap = yaml.safe_load(DASHBOARD.read_text())
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = configmap["data"].values()
    return json.loads(text)


def test_the_dashboard_shows_rate_losses_yardstick_plateau_level_and_adaptations(dashboard):
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in (
        "plateau_lstm_learning_rate",
        "plateau_lstm_train_loss",
        "plateau_lstm_val_loss",
        "plateau_lstm_monitored_metric",
        "plateau_lstm_plateau_level",
        "plateau_lstm_lr_restarts_total",
        "plateau_lstm_loss_switches_total",
        "plateau_lstm_nan_recoveries_total",
    ):
        assert name in exprs, name
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
