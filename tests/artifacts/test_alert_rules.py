"""The alert rules: valid, unit-tested with promtool, documented, and about metrics that exist."""

from __future__ import annotations

import re
import subprocess

import yaml

from vmmigration.adapters.prometheus import Metrics

from .conftest import CHART, ROOT
from .test_dashboard import exported_names

RULES = ROOT / "deploy" / "prometheus" / "vmmigration-rules.yaml"
REQUIRED = {"VMMigrationFailed", "VMMigrationStalled", "VMMigrationNotConverging", "VMPlacementDrift",
            "HypervisorDown", "VMMigrationOperatorDown", "ExcessiveMigrations"}


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_rules_file_passes_promtool_check(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_every_alert_behaves_as_its_promtool_unit_tests_say(promtool: str) -> None:
    tests = ROOT / "tests" / "artifacts" / "vmmigration-rules.test.yaml"
    result = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = set(re.findall(r"alertname: (\w+)", tests.read_text()))
    assert tested == {a["alert"] for a in alerts()}, "every alert needs a promtool test"


def test_every_alert_the_issue_asks_for_is_shipped() -> None:
    assert REQUIRED <= {a["alert"] for a in alerts()}


def test_every_alert_has_a_summary_a_description_and_a_runbook_that_exists() -> None:
    runbooks = (ROOT / "docs" / "alerts.md").read_text()
    headings = {line.lstrip("#").strip().lower() for line in runbooks.splitlines() if line.startswith("### ")}
    for alert in alerts():
        annotations = alert["annotations"]
        assert isinstance(annotations, dict)
        assert annotations.get("summary") and annotations.get("description"), alert["alert"]
        assert annotations["runbook_url"] == f"docs/alerts.md#{str(alert['alert']).lower()}"
        assert str(alert["alert"]).lower() in headings, f"no runbook for {alert['alert']}"
        assert alert["labels"]["severity"] in ("critical", "warning", "info")  # type: ignore[index]


def test_the_rules_name_only_metrics_the_operator_exports() -> None:
    exported = exported_names(Metrics.isolated())
    for alert in alerts():
        for name in re.findall(r"\bvmmigration_\w+", str(alert["expr"])):
            assert name in exported, f"{alert['alert']} uses {name}, which the operator does not export"


def test_the_chart_ships_the_same_rules_as_the_plain_file() -> None:
    assert (CHART / "files" / "vmmigration-rules.yaml").read_text() == RULES.read_text(), (
        "copy deploy/prometheus/vmmigration-rules.yaml to charts/vmmigration-operator/files/")
