"""The operator's metrics through a real scrape, and our alert rules in a real Prometheus."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from vmmigration.core.config import Settings
from vmtestbed.prometheus import PrometheusServer
from vmtestbed.testbed import Sandbox

from ..conftest import GuestWatch
from .conftest import (
    ADDRESS,
    HEALTH_PORT,
    METRICS_PORT,
    REPO,
    Kubectl,
    Operator,
    _free_port,
    running_on,
    wait_until,
)

# A 2 MiB/s link and a budget of 1 s per GiB: the live migration of a 128 MiB
# guest times out within a second and fails, again on every retry.
DOOMED = {"mode": "Live", "policy": {"bandwidthMiBPerSecond": 2, "completionTimeoutSecondsPerGiB": 1,
                                     "onTimeout": "Abort"}}


def scrape() -> str:
    with urllib.request.urlopen(f"http://{ADDRESS}:{METRICS_PORT}/metrics", timeout=5) as answer:
        return answer.read().decode()


@pytest.fixture(scope="module")
def prometheus(operator_process: Operator) -> Iterator[PrometheusServer]:
    server = PrometheusServer(root=Settings.from_env().test_sandbox_dir / "prometheus",
                              address=ADDRESS, port=_free_port(ADDRESS),
                              targets=[f"{ADDRESS}:{METRICS_PORT}"],
                              rules=REPO / "deploy" / "prometheus" / "vmmigration-rules.yaml")
    server.up()
    try:
        wait_until(lambda: server.targets_health() == ["up"], timeout=30,
                   what="Prometheus to scrape the operator")
        yield server
    finally:
        server.down()


def test_a_real_scrape_passes_promtool_check_metrics_and_kopfs_health_endpoint_answers(
        operator: Operator) -> None:
    text = scrape()
    for name in ("vmmigration_migrations_in_progress", "vmmigration_hypervisor_up",
                 "vmmigration_libvirt_errors_total", "process_resident_memory_bytes"):
        assert name in text, name
    # Every Hypervisor the operator probes is up, one series each.
    for host in ("kvm-a", "kvm-b", "kvm-c"):
        assert f'vmmigration_hypervisor_up{{hypervisor="{host}"}} 1.0' in text
    patches = re.search(r'^vmmigration_status_patches_total\{resource="hypervisors"\} (\S+)$', text, re.MULTILINE)
    assert patches and float(patches.group(1)) >= 3, "every Hypervisor's first probe writes its status"
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with urllib.request.urlopen(f"http://{ADDRESS}:{HEALTH_PORT}/healthz", timeout=5) as answer:
        assert answer.status == 200


def test_a_migration_that_fails_fires_vmmigration_failed_through_prometheus(
        prometheus: PrometheusServer, kubectl: Kubectl, sandbox: Sandbox,
        boot: Callable[..., GuestWatch], name: str, vmm: Callable[..., str]) -> None:
    watch = boot(name, dirty_mib=48, dirty_rate_mib=48)
    vmm(name, domain=name, targetHypervisor="kvm-b", **DOOMED)
    failed = kubectl.wait_phase(name, "Failed", timeout=90)
    assert failed["lastFailure"]["reason"] == "TimedOut"

    def firing() -> dict[str, object] | None:
        return next((a for a in prometheus.alerts()
                     if a["labels"].get("alertname") == "VMMigrationFailed"
                     and a["labels"].get("name") == name and a["state"] == "firing"), None)

    alert = wait_until(firing, timeout=60, what="VMMigrationFailed to fire in Prometheus")
    assert alert["labels"]["namespace"] == "default"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == f"VMMigration default/{name} failed"
    counted = prometheus.query('sum(vmmigration_migrations_total{result="failed"})')
    assert counted and float(counted[0]["value"][1]) >= 1

    # Stop retrying: the alert clears, and the VM never left the source.
    kubectl.patch("vmmigration", name, {"spec": {"abort": True}})
    kubectl.wait_phase(name, "Aborted", timeout=60)
    wait_until(lambda: firing() is None, timeout=60, what="VMMigrationFailed to clear")
    assert running_on(sandbox, name) == ["kvm-a"]
    watch.assert_kept_running(after=watch.count())


def test_in_flight_series_appear_during_a_migration_and_vanish_after(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    boot(name, dirty_mib=48, dirty_rate_mib=48)
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live",
        policy={"bandwidthMiBPerSecond": 2, "progressTimeoutSeconds": 600, "onTimeout": "Abort"})
    series = f'vmmigration_migration_dirty_rate_bytes_per_second{{name="{name}",namespace="default"}}'
    wait_until(lambda: series in scrape(), timeout=60, what="the in-flight dirty-rate series")
    assert f'vmmigration_migration_progress_ratio{{name="{name}",namespace="default"}}' in scrape()
    kubectl.patch("vmmigration", name, {"spec": {"abort": True}})
    kubectl.wait_phase(name, "Aborted", timeout=60)
    wait_until(lambda: series not in scrape(), timeout=30, what="the series to be removed")
    assert 'vmmigration_migrations_total{mode="Live",result="aborted"}' in scrape()
    assert running_on(sandbox, name) == ["kvm-a"]
