"""End to end: a real kube-apiserver and etcd, the CRDs and RBAC we ship, the operator
running as its own process under its ServiceAccount (not admin), and the
libvirt test bed with real guests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vmmigration.core.config import Settings
from vmtestbed.controlplane import ControlPlane, binaries
from vmtestbed.operator_process import OperatorProcess
from vmtestbed.testbed import Sandbox
from vmtestbed.hosts import Host
from vmmigration.core.errors import VirtError

from ..conftest import TEST_SUBNET

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "vmmigration-system"
# The user the operator's token authenticates as; the API server audits its every request.
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:vmmigration-operator"
T = TypeVar("T")

def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


# The control plane, the operator's endpoints and Prometheus (overridable, like TEST_SUBNET).
ADDRESS = os.environ.get("VMMIGRATION_TEST_ADDRESS", "127.0.13.1")
METRICS_PORT = _free_port(ADDRESS)
HEALTH_PORT = _free_port(ADDRESS)

# The operator's pace in tests: quick probes and retries, two migrations at once.
OPERATOR_ENV = {
    "VMMIGRATION_METRICS_ADDRESS": ADDRESS,
    "VMMIGRATION_METRICS_PORT": str(METRICS_PORT),
    "VMMIGRATION_HEALTH_ADDRESS": ADDRESS,
    "VMMIGRATION_HEALTH_PORT": str(HEALTH_PORT),
    "VMMIGRATION_PROBE_INTERVAL_SECONDS": "1",
    "VMMIGRATION_RESYNC_INTERVAL_SECONDS": "2",
    # Hosts are followed by their events; a full read only this often (and on reconnect),
    # so what a test sees within seconds came from an event.
    "VMMIGRATION_INVENTORY_RESYNC_SECONDS": "60",
    "VMMIGRATION_MEASURE_INTERVAL_SECONDS": "2",
    "VMMIGRATION_PROGRESS_INTERVAL_SECONDS": "0.5",
    "VMMIGRATION_RETRY_BASE_SECONDS": "2",
    "VMMIGRATION_RETRY_MAX_SECONDS": "10",
    "VMMIGRATION_MAX_CONCURRENT_MIGRATIONS": "2",
    "VMMIGRATION_POLL_INTERVAL_SECONDS": "0.25",
    # A restarted operator waits for its killed predecessor's keep-alive to lapse.
    "VMMIGRATION_PEERING_LIFETIME_SECONDS": "12",
    # Above the standby replica of the peering test, which must pause.
    "VMMIGRATION_PEERING_PRIORITY": "100",
}


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str,
               interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as error:  # a check may assert with a better message
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class Kubectl:
    """kubectl as an admin user would type it."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def __call__(self, *args: str, input: str | None = None, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, input=input, check=check)

    def apply(self, manifest: str) -> None:
        self("apply", "-f", "-", input=manifest)

    def get(self, kind: str, name: str, namespace: str | None = "default") -> dict[str, Any]:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        return json.loads(self(*args).stdout)  # type: ignore[no-any-return]

    def exists(self, kind: str, name: str, namespace: str = "default") -> bool:
        return self("get", kind, name, "-n", namespace, check=False).returncode == 0

    def patch(self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = "default") -> None:
        args = ["patch", kind, name, "--type=merge", "-p", json.dumps(patch)]
        if namespace:
            args += ["-n", namespace]
        self(*args)

    def events(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        listed = json.loads(self("get", "events", "-n", namespace, "-o", "json",
                                 "--field-selector", f"involvedObject.name={name}").stdout)
        return listed["items"]  # type: ignore[no-any-return]

    def reasons(self, name: str, namespace: str = "default") -> list[str]:
        return [e["reason"] for e in sorted(self.events(name, namespace),
                                            key=lambda e: e.get("firstTimestamp") or "")]

    def status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.get("vmmigration", name, namespace).get("status") or {}

    def condition(self, name: str, kind: str, namespace: str = "default") -> dict[str, Any]:
        for found in self.status(name, namespace).get("conditions") or ():
            if found["type"] == kind:
                return found  # type: ignore[no-any-return]
        return {}

    def wait_phase(self, name: str, phase: str, *, timeout: float = 90.0,
                   namespace: str = "default") -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            current = self.status(name, namespace)
            return current if current.get("phase") == phase else None
        return wait_until(reached, timeout=timeout, what=f"{name} to be {phase}")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    root = Settings.from_env().test_sandbox_dir / "controlplane"
    plane = ControlPlane(root=root, address=ADDRESS, port=_free_port(ADDRESS), bin_dir=binaries(),
                         audit_users=(OPERATOR_USER,))
    plane.up()
    try:
        plane.install_operator_manifests(REPO)
        yield plane
    finally:
        plane.down()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane)


def reachable(kubectl: Kubectl, name: str) -> dict[str, Any]:
    """The Hypervisor's Reachable condition, from a probe of its current spec only
    (the probe before a switch of URI or credentials does not count)."""
    hv = kubectl.get("hypervisor", name, None)
    status = hv.get("status") or {}
    if status.get("observedGeneration") != hv["metadata"]["generation"]:
        return {}
    return next((c for c in status.get("conditions") or () if c["type"] == "Reachable"), {})


def hypervisor_manifests(sandbox: Sandbox) -> str:
    """examples/hypervisors.yaml, pointed at the test bed's hosts, plus a third host."""
    text = (REPO / "examples" / "hypervisors.yaml").read_text()
    # The examples name the demo's hosts (10.240.0.x, 10.241.0.x for migration);
    # the tests run beside it on their own subnet.
    text = re.sub(r"\b10\.(240|241)\.0\.(\d+)\b",
                  lambda m: f"10.{m.group(1)}.{TEST_SUBNET}.{m.group(2)}", text)
    third = sandbox.hosts[2]
    text += f"""
---
apiVersion: vmmigration.dev/v1alpha1
kind: Hypervisor
metadata:
  name: kvm-c
  labels:
    vmmigration.dev/zone: lab
spec:
  uri: {third.uri}
  migrationAddress: {third.migration_host}
  maxInboundMigrations: 2
  maxOutboundMigrations: 2
"""
    return text


Operator = OperatorProcess
HOSTS = ("kvm-a", "kvm-b", "kvm-c")


def all_reachable(kubectl: Kubectl) -> bool:
    for name in HOSTS:
        conditions = kubectl.get("hypervisor", name, None).get("status", {}).get("conditions") or ()
        if not any(c["type"] == "Reachable" and c["status"] == "True" for c in conditions):
            return False
    return True


def start_operator(*, control_plane: ControlPlane, kubectl: Kubectl, logs: Path,
                   env: dict[str, str]) -> Operator:
    """The operator as its own process under its ServiceAccount, once it has probed every host."""
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace=NAMESPACE, name="vmmigration-operator", path=logs / "operator.kubeconfig")
    operator = Operator(kubeconfig=kubeconfig, log_dir=logs, env=env)
    operator.start()
    wait_until(lambda: all_reachable(kubectl), timeout=60,
               what="every Hypervisor to be probed and reachable")
    return operator


def migrating(kubectl: Kubectl, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until libvirt is copying: status says Migrating with bytes already processed."""
    def moving() -> dict[str, Any] | None:
        current = kubectl.status(name)
        progress = current.get("progress") or {}
        return current if current.get("phase") == "Migrating" and progress.get("memoryProcessedBytes") else None
    return wait_until(moving, timeout=timeout, what=f"{name} to be migrating with progress")


@pytest.fixture(scope="session")
def operator_process(control_plane: ControlPlane, kubectl: Kubectl, sandbox: Sandbox,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    kubectl.apply(hypervisor_manifests(sandbox))
    operator = start_operator(control_plane=control_plane, kubectl=kubectl,
                              logs=tmp_path_factory.mktemp("operator"), env=OPERATOR_ENV)
    yield operator
    operator.stop()
    # Anything the operator logged as an RBAC refusal is a gap in what we ship.
    forbidden = [line for line in operator.logs().splitlines() if "403" in line and "Forbidden" in line]
    assert not forbidden, "the operator was refused by RBAC:\n" + "\n".join(forbidden[:10])
    # The API server's own record, which also sees refusals the operator swallowed.
    refused = denied_requests(control_plane)
    assert not refused, "the API server refused the operator:\n" + "\n".join(refused[:10])


def denied_requests(plane: ControlPlane) -> list[str]:
    """Every request of the operator's that RBAC refused, from the audit log."""
    return [f"{e['verb']} {e.get('requestURI')} -> {e.get('responseStatus', {}).get('code')}"
            for e in plane.audit_events()
            if e.get("user", {}).get("username") == OPERATOR_USER
            and (e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
                 or e.get("responseStatus", {}).get("code") == 403)]


@pytest.fixture
def operator(operator_process: Operator) -> Iterator[Operator]:
    if operator_process.dead():
        operator_process.start()
    yield operator_process
    assert not operator_process.dead() or operator_process.process is None, (
        "the operator died:\n" + operator_process.tail())


@pytest.fixture
def vmm(kubectl: Kubectl, operator: Operator) -> Iterator[Callable[..., str]]:
    """Create a VMMigration from keyword fields; every one is deleted after the test."""
    created: list[str] = []

    def make(name: str, **spec: Any) -> str:
        kubectl.apply(json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}))
        created.append(name)
        return name

    yield make
    # Youngest first: deleting an older claim first would hand the domain to a younger rival.
    for name in reversed(created):
        kubectl("delete", "vmmigration", name, "-n", "default", "--ignore-not-found",
                "--wait=true", "--timeout=60s", check=False)


def where(sandbox: Sandbox, domain: str) -> dict[str, str]:
    """Which sandbox hosts hold ``domain``, and in what state: read from libvirt itself."""
    found = {}
    for index, daemon in enumerate(sandbox.hosts):
        with contextlib.suppress(VirtError), Host(daemon.uri) as host:
            summary = host.find(domain)
            if summary is not None:
                found["kvm-" + "abc"[index]] = summary.state.value
    return found


def running_on(sandbox: Sandbox, domain: str) -> list[str]:
    return [name for name, state in where(sandbox, domain).items() if state == "Running"]


def forget(sandbox: Sandbox, domain: str) -> None:
    """Remove a domain the test made from every host."""
    for daemon in sandbox.hosts:
        with contextlib.suppress(VirtError), Host(daemon.uri) as host:
            host.remove_everywhere(domain)
