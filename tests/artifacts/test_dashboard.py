"""The Grafana dashboard asks only for metrics the operator really exports."""

from __future__ import annotations

import json
import re

from vmmigration.adapters.prometheus import Metrics

from .conftest import CHART

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names(metrics: Metrics) -> set[str]:
    names = set()
    for family in metrics.registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def queries() -> list[str]:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]


def test_every_dashboard_query_names_metrics_the_operator_exports() -> None:
    exported = exported_names(Metrics.isolated())
    used = set()
    for expr in queries():
        names = re.findall(r"\bvmmigration_\w+", expr)
        assert names, f"a panel queries no vmmigration metric: {expr}"
        for name in names:
            assert name in exported, f"{name} (in {expr!r}) is not exported"
            used.add(name)
    assert len(used) >= 10


def test_the_dashboard_shows_what_an_sre_watches() -> None:
    text = " ".join(queries())
    for needed in ("vmmigration_migrations_total", "vmmigration_migration_duration_seconds_bucket",
                   "vmmigration_migration_downtime_seconds_bucket", "vmmigration_migration_progress_ratio",
                   "vmmigration_migration_dirty_rate_bytes_per_second", "vmmigration_placement_drift",
                   "vmmigration_hypervisor_up"):
        assert needed in text, needed
    assert "by (result)" in text


def test_every_panel_has_a_unique_id_and_uses_the_datasource_variable() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
