"""A Hypervisor's status is a probe of its libvirt host, refreshed on a timer."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from vmtestbed.controlplane import ControlPlane
from vmtestbed.testbed import Sandbox
from vmtestbed.hosts import Host
from vmmigration.core.model import format_version

from ..conftest import GuestWatch
from .conftest import Kubectl, Operator, wait_until


def test_the_status_reports_versions_cpu_memory_and_every_domain(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        operator: Operator) -> None:
    boot(name)
    with Host(sandbox.hosts[0].uri) as host:
        uuid = host.summary(name).uuid

    def listed() -> dict[str, object] | None:
        found = kubectl.get("hypervisor", "kvm-a", None)
        current = found["status"]
        # Other tests edit kvm-a's spec (maintenance, drain): the probe follows its generation.
        current["generation"] = found["metadata"]["generation"]
        return current if any(d["name"] == name for d in current.get("domains", ())) else None

    current = wait_until(listed, timeout=30, what=f"{name} in kvm-a's inventory")
    # What kvm-a's libvirt itself answers, whichever flavour it runs (both are in the status).
    with Host(sandbox.hosts[0].uri) as host:
        versions = host.versions()
    assert current["libvirtVersion"] == format_version(versions.libvirt)
    assert current["hypervisorVersion"] == format_version(versions.hypervisor)
    assert current["cpuModel"] and current["memoryTotalBytes"] > current["memoryFreeBytes"] > 0
    assert current["lastProbeTime"] and current["observedGeneration"] == current["generation"]
    entry = next(d for d in current["domains"] if d["name"] == name)
    assert entry == {"name": name, "uuid": uuid, "state": "Running",
                     "memoryBytes": 128 * 2**20, "persistent": True}
    reachable = next(c for c in current["conditions"] if c["type"] == "Reachable")
    assert reachable["status"] == "True"
    table = kubectl("get", "hypervisors").stdout
    assert "REACHABLE" in table and "kvm-a" in table


def test_an_unreachable_host_is_reported_and_a_vm_pinned_to_it_is_blocked_not_moved(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    # Nothing listens on 127.0.1.9.
    kubectl.apply("""
apiVersion: vmmigration.dev/v1alpha1
kind: Hypervisor
metadata: {name: kvm-down}
spec: {uri: "qemu+tcp://127.0.1.9/system"}
""")
    try:
        def down() -> dict[str, str] | None:
            conditions = kubectl.get("hypervisor", "kvm-down", None).get("status", {}).get("conditions", [])
            return next((c for c in conditions if c["type"] == "Reachable" and c["status"] == "False"), None)

        reachable = wait_until(down, timeout=30, what="kvm-down to be probed")
        assert "127.0.1.9" in reachable["message"]
        boot(name)
        vmm(name, domain=name, targetHypervisor="kvm-down")
        blocked = wait_until(lambda: kubectl.condition(name, "Blocked").get("status") == "True"
                             and kubectl.condition(name, "Blocked"), timeout=30, what="Blocked")
        assert blocked["reason"] == "TargetUnreachable"
        assert kubectl.get("hypervisor", "kvm-a", None)["status"]["conditions"][0]["status"] == "True"
    finally:
        kubectl("delete", "hypervisor", "kvm-down", "--ignore-not-found", check=False)


@pytest.mark.parametrize("wrong", ["not-libvirt", "missing-test-driver-file"])
def test_a_uri_that_reaches_something_other_than_libvirt_is_reported_with_the_reason(
        kubectl: Kubectl, control_plane: ControlPlane, operator: Operator, wrong: str) -> None:
    uri = {
        # A TLS web server (the API server's own port) where libvirt's protocol is expected.
        "not-libvirt": f"qemu+tcp://{control_plane.address}:{control_plane.port}/system",
        "missing-test-driver-file": "test:///nonexistent/vmmigration/host.xml",
    }[wrong]
    kubectl.apply(json.dumps({"apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
                              "metadata": {"name": f"kvm-{wrong}"}, "spec": {"uri": uri}}))
    try:
        def down() -> dict[str, str] | None:
            conditions = (kubectl.get("hypervisor", f"kvm-{wrong}", None).get("status", {})
                          .get("conditions", []))
            return next((c for c in conditions if c["type"] == "Reachable" and c["status"] == "False"),
                        None)

        # Within the probe timeout (20 s) even if the far end never answers.
        reachable = wait_until(down, timeout=45, what=f"kvm-{wrong} to be probed")
        assert reachable["reason"] == "Unreachable" and len(reachable["message"]) > 10, reachable
        assert not operator.dead()
    finally:
        kubectl("delete", "hypervisor", f"kvm-{wrong}", "--ignore-not-found", check=False)
