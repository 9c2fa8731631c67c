"""helm install into a fresh control plane, then the operator runs with exactly the
chart's ServiceAccount and RBAC (not admin) and moves a VM.

The control plane here is a second one (127.0.14.1), so the chart installs its
CRDs into an empty cluster as it would on a user's, and the session's operator
never sees these resources. An RBAC gap in the chart shows as a 403 in the
operator's log, or as a migration that never happens.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from vmmigration.core.config import Settings
from vmtestbed.controlplane import ControlPlane, binaries
from vmtestbed.operator_process import OperatorProcess
from vmtestbed.testbed import Sandbox

from ..conftest import GuestWatch, cached_tool
from .conftest import OPERATOR_ENV, REPO, Kubectl, _free_port, running_on, wait_until

ADDRESS = os.environ.get("VMMIGRATION_TEST_HELM_ADDRESS", "127.0.14.1")
RELEASE = "vmmigration"
NAMESPACE = "vmm-chart"
CHART = REPO / "charts" / "vmmigration-operator"


@pytest.fixture(scope="module")
def monitoring_crds() -> Path:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (scripts/fetch-monitoring-crds)."""
    return cached_tool("fetch-monitoring-crds")


@pytest.fixture(scope="module")
def chart_cluster(sandbox: Sandbox) -> Iterator[ControlPlane]:
    plane = ControlPlane(root=Settings.from_env().test_sandbox_dir / "chart-controlplane",
                         address=ADDRESS, port=_free_port(ADDRESS), bin_dir=binaries())
    plane.up()
    try:
        yield plane
    finally:
        plane.down()


def helm_run(helm: str, plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm, f"--kubeconfig={plane.admin_kubeconfig}", *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_helm_install_then_the_operator_under_the_charts_rbac_moves_a_vm(
        helm: str, chart_cluster: ControlPlane, monitoring_crds: Path, sandbox: Sandbox,
        boot: Callable[..., GuestWatch], name: str, tmp_path: Path) -> None:
    kubectl = Kubectl(chart_cluster)
    a, b = sandbox.hosts[0], sandbox.hosts[1]
    # A cluster with the Prometheus Operator's API, so the chart's ServiceMonitor and
    # PrometheusRule are installed and checked against its schema for real.
    kubectl("apply", "--server-side", "-f", str(monitoring_crds))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/prometheusrules.monitoring.coreos.com", "crd/servicemonitors.monitoring.coreos.com")
    installed = helm_run(
        helm, chart_cluster, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--create-namespace", "--set", "replicaCount=1", "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "dashboard.enabled=true",
        "--set", "hypervisors[0].name=kvm-a", "--set", f"hypervisors[0].uri={a.uri}",
        "--set", "hypervisors[1].name=kvm-b", "--set", f"hypervisors[1].uri={b.uri}")
    assert "STATUS: deployed" in installed.stdout
    assert json.loads(helm_run(helm, chart_cluster, "list", "-n", NAMESPACE, "-o", "json").stdout)[0][
        "status"] == "deployed"
    # The chart installed the CRDs (an empty cluster had none) and its Hypervisors.
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/vmmigrations.vmmigration.dev")
    assert {h["metadata"]["name"] for h in json.loads(kubectl("get", "hypervisors", "-o", "json").stdout)[
        "items"]} == {"kvm-a", "kvm-b"}
    rule = kubectl.get("prometheusrule", RELEASE, NAMESPACE)
    plain = yaml.safe_load((REPO / "deploy" / "prometheus" / "vmmigration-rules.yaml").read_text())
    assert rule["spec"] == plain, "the installed PrometheusRule differs from the plain rules file"
    monitor = kubectl.get("servicemonitor", RELEASE, NAMESPACE)
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    dashboard = kubectl.get("configmap", f"{RELEASE}-dashboard", NAMESPACE)
    assert json.loads(dashboard["data"]["vmmigration.json"])["panels"]

    # There is no kubelet here, so run the container's command ourselves, with the
    # Deployment's own environment and the chart's ServiceAccount token.
    deployment = kubectl.get("deployment", RELEASE, NAMESPACE)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["operator"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    env["VMMIGRATION_NAMESPACE"] = NAMESPACE  # the fieldRef the kubelet would resolve
    env.update({k: v for k, v in OPERATOR_ENV.items() if "INTERVAL" in k or "RETRY" in k})
    env.update({"VMMIGRATION_METRICS_PORT": "0", "VMMIGRATION_HEALTH_PORT": "0", "HOME": str(tmp_path)})
    env.pop("VMMIGRATION_CREDENTIALS_DIR")  # the pod's emptyDir; here, beside the logs
    kubeconfig = chart_cluster.service_account_kubeconfig(
        namespace=NAMESPACE, name=account, path=tmp_path / "chart-sa.kubeconfig")
    operator = OperatorProcess(kubeconfig=kubeconfig, log_dir=tmp_path / "operator", env=env,
                               peering=env["VMMIGRATION_PEERING"])
    operator.start()
    try:
        wait_until(lambda: all(
            (kubectl.get("hypervisor", h, None).get("status") or {}).get("conditions")
            for h in ("kvm-a", "kvm-b")), timeout=60, what="the chart's Hypervisors to be probed")
        watch = boot(name)
        kubectl.apply(json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"domain": name, "targetHypervisor": "kvm-b"}}))
        kubectl("wait", "--for=condition=Ready", f"vmm/{name}", "-n", "default", "--timeout=120s")
        placed = kubectl.status(name)
        assert placed["phase"] == "Placed" and placed["currentHypervisor"] == "kvm-b"
        assert "MigrationSucceeded" in kubectl.reasons(name)
        assert running_on(sandbox, name) == ["kvm-b"]
        watch.assert_kept_running(after=watch.count())
        kubectl("delete", "vmm", name, "-n", "default", "--wait=true", "--timeout=60s")
    finally:
        operator.stop()
    # kopf reports an RBAC refusal as "Forbidden" (HTTP 403); a bare "403" also
    # matches timestamps and byte counts.
    forbidden = [line for line in operator.logs().splitlines() if "Forbidden" in line]
    assert not forbidden, "the chart's RBAC refused the operator:\n" + "\n".join(forbidden[:10])
    uninstalled = helm_run(helm, chart_cluster, "uninstall", RELEASE, "--namespace", NAMESPACE)
    assert "uninstalled" in uninstalled.stdout
