"""Libvirt over TLS, end to end, and the operator's RBAC as the API server saw it used.

kvm-a and kvm-b are switched to qemu+tls:// for this module, with a Secret
holding a client certificate from the sandbox hosts' CA. The hosts check it
(a TLS connection without a certificate they trust is refused), so a
Reachable host here proves the operator used the Secret.

The last test reads the API server's audit log: every grant we ship was used
and no request of the operator's was refused. This module exercises every
path that needs a grant (including reading a credentials Secret), so the
check holds whether the module runs alone or after the whole tier.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmtestbed.controlplane import ControlPlane
from vmtestbed.daemons import Daemon
from vmtestbed.pki import Certificate, ensure_ca, issue
from vmtestbed.testbed import Sandbox
from vmtestbed.hosts import Host
from vmmigration.core.errors import HostUnreachable
from vmmigration.core.model import format_version

from ..conftest import GuestWatch
from .conftest import (
    NAMESPACE,
    OPERATOR_USER,
    REPO,
    Kubectl,
    Operator,
    denied_requests,
    forget,
    reachable,
    running_on,
    wait_until,
    where,
)

SECRET = "kvm-ab-tls"
OPERATOR_SUBJECT = "/O=vmmigration/CN=vmmigration-operator"


def secret_manifest(name: str, *, cert: Path, key: Path, ca: Path) -> str:
    data = {k: base64.b64encode(p.read_bytes()).decode()
            for k, p in (("tls.crt", cert), ("tls.key", key), ("ca.crt", ca))}
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": name, "namespace": NAMESPACE}, "data": data})


def tls_clients(daemon: Daemon) -> set[str]:
    """The distinguished names of the TLS clients connected to ``daemon`` right now,
    from libvirtd's admin interface."""
    admin = f"libvirtd:///system?socket={daemon.root / 'run' / 'libvirt-admin-sock'}"

    def run(*args: str) -> str:
        return subprocess.run(["virt-admin", "-c", admin, *args], capture_output=True,
                              text=True, timeout=10, check=False).stdout

    names = set()
    for line in run("client-list", "libvirtd").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1] == "tls":
            found = re.search(r"tls_x509_dname\s*:\s*(.+)", run("client-info", "libvirtd", fields[0]))
            if found:
                names.add(found.group(1).strip())
    return names


@pytest.fixture(scope="module")
def operator_certificate(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A client certificate for the operator from the CA the sandbox hosts trust."""
    out = tmp_path_factory.mktemp("operator-tls")
    return issue(ensure_ca(sandbox.hosts[0].ca_dir), subject=OPERATOR_SUBJECT,
                         cert=out / "tls.crt", key=out / "tls.key")


@pytest.fixture(scope="module")
def tls_hosts(kubectl: Kubectl, sandbox: Sandbox, operator_process: Operator,
              operator_certificate: Certificate) -> Iterator[None]:
    """kvm-a and kvm-b over qemu+tls://, with the operator's certificate in a Secret."""
    cert = operator_certificate
    kubectl.apply(secret_manifest(SECRET, cert=cert.cert, key=cert.key, ca=cert.ca_cert))
    hosts = {"kvm-a": sandbox.hosts[0], "kvm-b": sandbox.hosts[1]}
    try:
        for name, daemon in hosts.items():
            kubectl.patch("hypervisor", name, {"spec": {
                "uri": daemon.tls_uri, "credentialsSecretRef": {"name": SECRET}}}, namespace=None)
        yield
    finally:
        for name, daemon in hosts.items():
            kubectl.patch("hypervisor", name, {"spec": {
                "uri": daemon.uri, "credentialsSecretRef": None}}, namespace=None)
        # The tests after this module expect both hosts as they were: reachable over TCP.
        for name in hosts:
            wait_until(lambda name=name: reachable(kubectl, name).get("status") == "True",
                       timeout=60, what=f"{name} to be reachable over TCP again")
        kubectl("delete", "secret", SECRET, "-n", NAMESPACE, "--ignore-not-found", check=False)


@dataclasses.dataclass
class Moved:
    domain: str
    watch: GuestWatch
    beat: int
    placed: dict[str, Any]
    where: dict[str, str]
    target_clients: set[str]


@pytest.fixture(scope="module")
def tls_migration(kubectl: Kubectl, sandbox: Sandbox, tls_hosts: None) -> Iterator[Moved]:
    """A running guest on kvm-a, moved to kvm-b by a VMMigration while both speak TLS only
    to the operator; the target's TLS clients are recorded while it moves."""
    domain = f"vmm-tls-{os.getpid()}"
    for name in ("kvm-a", "kvm-b"):
        wait_until(lambda name=name: reachable(kubectl, name).get("status") == "True",
                   timeout=60, what=f"{name} to be reachable over TLS")
    watch = GuestWatch(sandbox.boot(sandbox.guest_spec(domain), host=sandbox.hosts[0]))
    seen: set[str] = set()
    done = threading.Event()

    def record() -> None:
        while not done.is_set():
            seen.update(tls_clients(sandbox.hosts[1]))
            done.wait(0.1)

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    try:
        kubectl.apply(json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
            "metadata": {"name": domain, "namespace": "default"},
            "spec": {"domain": domain, "targetHypervisor": "kvm-b", "placement": "Once"}}))
        try:
            placed = kubectl.wait_phase(domain, "Placed", timeout=150)
        finally:
            done.set()
            recorder.join()
        yield Moved(domain=domain, watch=watch, beat=watch.count(), placed=placed,
                    where=where(sandbox, domain), target_clients=seen)
    finally:
        done.set()
        kubectl("delete", "vmmigration", domain, "-n", "default", "--ignore-not-found",
                "--wait=true", "--timeout=60s", check=False)
        forget(sandbox, domain)


def test_tls_hypervisors_with_the_client_certificate_in_their_secret_are_probed_reachable(
        kubectl: Kubectl, sandbox: Sandbox, tls_hosts: None, operator: Operator) -> None:
    for name in ("kvm-a", "kvm-b"):
        condition = wait_until(lambda name=name: reachable(kubectl, name).get("status") == "True"
                               and reachable(kubectl, name), timeout=60,
                               what=f"{name} to be probed over TLS")
        assert condition["reason"]
        status = kubectl.get("hypervisor", name, None)["status"]
        with Host(sandbox.hosts["ab".index(name[-1])].uri) as conn:
            assert status["libvirtVersion"] == format_version(conn.versions().libvirt)
    # Without the Secret's files there is nothing to present (this machine has no
    # /etc/pki of its own, like the operator's pod): the Secret is what got it in.
    with pytest.raises(HostUnreachable):
        Host(sandbox.hosts[0].tls_uri).close()
    written = sorted(p.name for p in (operator.log_dir / "credentials" / "kvm-a").iterdir())
    assert written == ["cacert.pem", "clientcert.pem", "clientkey.pem"]


def test_a_vmmigration_moves_a_running_guest_between_tls_hosts(
        kubectl: Kubectl, sandbox: Sandbox, tls_migration: Moved, operator: Operator) -> None:
    moved = tls_migration
    assert moved.where == {"kvm-b": "Running"}, "running exactly once, on the target"
    assert running_on(sandbox, moved.domain) == ["kvm-b"]
    moved.watch.assert_kept_running(after=moved.beat)
    assert moved.placed["currentHypervisor"] == "kvm-b"
    assert moved.placed["sourceHypervisor"] == "kvm-a" and moved.placed["attempts"] == 1
    reasons = kubectl.reasons(moved.domain)
    assert "MigrationStarted" in reasons and "MigrationSucceeded" in reasons
    # The operator's own connections (probes, pre-checks) came with its certificate.
    assert any("CN=vmmigration-operator" in dn for dn in moved.target_clients), moved.target_clients


def test_in_a_peer_to_peer_migration_the_source_host_presents_its_own_client_certificate(
        sandbox: Sandbox, tls_migration: Moved) -> None:
    source = sandbox.hosts[0]
    own = f"CN={source.name}-{source.address}"
    assert any(own in dn for dn in tls_migration.target_clients), (
        f"the target saw only {sorted(tls_migration.target_clients)}")


def test_no_secret_material_appears_in_logs_events_or_any_status(
        kubectl: Kubectl, operator: Operator, operator_certificate: Certificate,
        tls_migration: Moved) -> None:
    key_pem = operator_certificate.key.read_text()
    body_lines = [line for line in key_pem.splitlines() if line and not line.startswith("-----")]
    assert len(body_lines) > 10
    needles = {f"line {i} of the key": line for i, line in enumerate(body_lines)}
    for label, path in (("tls.key", operator_certificate.key), ("tls.crt", operator_certificate.cert)):
        needles[f"{label} as PEM"] = path.read_text().strip()
        # As the Secret stores it (kopf's verbose log would show a dumped Secret so).
        encoded = base64.b64encode(path.read_bytes()).decode()
        needles[f"{label} base64"] = encoded
        needles[f"{label} base64, in part"] = encoded[200:264]
    places = {
        "the operator's logs": operator.logs(),
        "Events": kubectl("get", "events", "-A", "-o", "json").stdout,
        "Hypervisors": kubectl("get", "hypervisors", "-o", "json").stdout,
        "VMMigrations": kubectl("get", "vmmigrations", "-A", "-o", "json").stdout,
        "ClusterKopfPeerings": kubectl("get", "clusterkopfpeerings", "-o", "json").stdout,
    }
    # JSON escapes newlines; look for the PEMs as written and as JSON strings.
    leaks = [f"{label} in {where_}" for label, needle in needles.items()
             for where_, text in places.items()
             if needle in text or json.dumps(needle)[1:-1] in text]
    assert not leaks, leaks
    assert "vmm-tls" in places["the operator's logs"], "the logs are there to be searched"


@pytest.mark.parametrize("trusted_ca", [True, False], ids=["client-cert-of-another-ca",
                                                           "everything-from-another-ca"])
def test_a_client_certificate_from_another_ca_is_reported_readably_not_a_crash(
        kubectl: Kubectl, sandbox: Sandbox, operator: Operator, operator_certificate: Certificate,
        tmp_path: Path, trusted_ca: bool) -> None:
    rogue = issue(ensure_ca(tmp_path / "rogue-ca", name="not the hosts' CA"),
                          subject=OPERATOR_SUBJECT, cert=tmp_path / "tls.crt", key=tmp_path / "tls.key")
    ca = operator_certificate.ca_cert if trusted_ca else rogue.ca_cert
    kubectl.apply(secret_manifest("kvm-rogue-tls", cert=rogue.cert, key=rogue.key, ca=ca))
    kubectl.apply(json.dumps({
        "apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": "kvm-rogue"},
        "spec": {"uri": sandbox.hosts[2].tls_uri, "credentialsSecretRef": {"name": "kvm-rogue-tls"}}}))
    try:
        condition = wait_until(lambda: reachable(kubectl, "kvm-rogue").get("status") == "False"
                               and reachable(kubectl, "kvm-rogue"), timeout=60,
                               what="kvm-rogue to be probed")
        message = condition["message"]
        # One line a person can act on: it names the certificate problem, no traceback.
        assert "certificate" in message.lower() and "Traceback" not in message, message
        assert "\n" not in message.strip(), message
        key_lines = [line for line in rogue.key.read_text().splitlines() if not line.startswith("-----")]
        assert not any(line in message for line in key_lines if line)
        assert not operator.dead()
        assert reachable(kubectl, "kvm-c").get("status") == "True", "other hosts are unaffected"
    finally:
        kubectl("delete", "hypervisor", "kvm-rogue", "--ignore-not-found", "--wait=true", check=False)
        kubectl("delete", "secret", "kvm-rogue-tls", "-n", NAMESPACE, "--ignore-not-found", check=False)


def rbac_grants() -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every rule in deploy/rbac.yaml, which
    tests/artifacts/test_chart.py proves equal to the chart's rendered ClusterRole and Role."""
    grants = set()
    for doc in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()):
        if doc and doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                grants |= {(group, resource, verb) for group in rule["apiGroups"]
                           for resource in rule["resources"] for verb in rule["verbs"]}
    return grants


def test_the_operator_used_every_rbac_grant_we_ship_and_was_refused_nothing(
        control_plane: ControlPlane, tls_migration: Moved, operator: Operator) -> None:
    # Runs last in this module, after a TLS migration: every path that needs a grant ran.
    events = [e for e in control_plane.audit_events()
              if e.get("user", {}).get("username") == OPERATOR_USER and "objectRef" in e]
    assert events, f"no audit events for {OPERATOR_USER} in {control_plane.audit_log}"
    used = set()
    for event in events:
        ref = event["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
    assert not denied_requests(control_plane)
    unused = sorted(rbac_grants() - used)
    assert not unused, (f"granted but never used (remove them, or exercise the path): {unused}; "
                        f"used: {sorted(used)}")
    # Anything else must be what every authenticated user may do (asking what it may do).
    beyond = sorted(used - rbac_grants())
    assert all(resource.startswith("selfsubject") for _, resource, _ in beyond), beyond
