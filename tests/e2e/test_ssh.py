"""Libvirt over SSH, end to end, against a real sshd in each host's namespace.

kvm-a and kvm-b are switched to qemu+ssh://root@<host>/system for this module,
with a Secret holding the operator's key and a known_hosts naming both hosts.
Each host's sshd accepts only the keys the test bed authorised, so a Reachable
host proves the operator used the Secret; the sshd's own log says who came in
with which key, which is how the peer-to-peer test knows the source host's
libvirtd used *its* key, not the operator's.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmtestbed.daemons import Daemon
from vmtestbed.hosts import Host
from vmtestbed.testbed import Sandbox
from vmmigration.core.model import format_version

from ..conftest import GuestWatch
from .conftest import (NAMESPACE, Kubectl, Operator, forget, reachable, running_on, wait_until,
                       where)

SECRET = "kvm-ab-ssh"


def secret_manifest(name: str, data: dict[str, bytes]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": name, "namespace": NAMESPACE},
                       "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})


def fingerprint(public_key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(public_key)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def accepted(daemon: Daemon) -> list[tuple[str, str]]:
    """(client address, key fingerprint) of every login the host's sshd accepted."""
    log = (daemon.root / "log" / "sshd.log").read_text(errors="replace")
    return re.findall(r"Accepted publickey for root from (\S+) port \d+ ssh2: \S+ (SHA256:\S+)", log)


@pytest.fixture(scope="module")
def ssh_hosts(kubectl: Kubectl, sandbox: Sandbox, operator_process: Operator) -> Iterator[None]:
    kubectl.apply(secret_manifest(SECRET, sandbox.ssh_client.secret_data()))
    hosts = {"kvm-a": sandbox.hosts[0], "kvm-b": sandbox.hosts[1]}
    try:
        for name, daemon in hosts.items():
            kubectl.patch("hypervisor", name, {"spec": {
                "uri": daemon.ssh_uri, "credentialsSecretRef": {"name": SECRET}}}, namespace=None)
        for name in hosts:
            wait_until(lambda name=name: reachable(kubectl, name).get("status") == "True",
                       timeout=60, what=f"{name} to be reachable over SSH")
        yield
    finally:
        for name, daemon in hosts.items():
            kubectl.patch("hypervisor", name, {"spec": {
                "uri": daemon.uri, "credentialsSecretRef": None}}, namespace=None)
        for name in hosts:
            wait_until(lambda name=name: reachable(kubectl, name).get("status") == "True",
                       timeout=60, what=f"{name} to be reachable over TCP again")
        kubectl("delete", "secret", SECRET, "-n", NAMESPACE, "--ignore-not-found", check=False)


def test_ssh_hypervisors_are_reachable_with_the_key_from_their_secret(
        kubectl: Kubectl, sandbox: Sandbox, ssh_hosts: None, operator: Operator) -> None:
    operator_key = fingerprint(Path(f"{sandbox.ssh_client.private_key}.pub"))
    gateway = sandbox.network.gateway
    for name, daemon in (("kvm-a", sandbox.hosts[0]), ("kvm-b", sandbox.hosts[1])):
        status = kubectl.get("hypervisor", name, None)["status"]
        # What the host's libvirt itself answers over TCP, whichever flavour it runs.
        with Host(daemon.uri) as conn:
            assert status["libvirtVersion"] == format_version(conn.versions().libvirt)
        # The operator, from the root namespace, came in with the Secret's key.
        assert (gateway, operator_key) in accepted(daemon), accepted(daemon)
    written = sorted(p.name for p in (operator.log_dir / "credentials" / "kvm-a").iterdir())
    assert written == ["id", "known_hosts"]


def test_a_vm_moves_between_two_ssh_hosts_peer_to_peer_with_the_source_hosts_own_key(
        kubectl: Kubectl, sandbox: Sandbox, ssh_hosts: None, operator: Operator) -> None:
    source, target = sandbox.hosts[0], sandbox.hosts[1]
    domain = f"vmm-ssh-{os.getpid()}"
    watch = GuestWatch(sandbox.boot(sandbox.guest_spec(domain), host=source))
    beat = watch.count()
    try:
        kubectl.apply(json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
            "metadata": {"name": domain, "namespace": "default"},
            "spec": {"domain": domain, "targetHypervisor": "kvm-b", "placement": "Once"}}))
        placed = kubectl.wait_phase(domain, "Placed", timeout=150)
        assert where(sandbox, domain) == {"kvm-b": "Running"}, "running exactly once, on the target"
        assert running_on(sandbox, domain) == ["kvm-b"]
        watch.assert_kept_running(after=beat)
        assert placed["attempts"] == 1
        # The source host's libvirtd dialled the target over SSH with its own key.
        own = fingerprint(source.root / "dotssh" / "id_ed25519.pub")
        assert (source.address, own) in accepted(target), accepted(target)
    finally:
        kubectl("delete", "vmmigration", domain, "-n", "default", "--ignore-not-found",
                "--wait=true", "--timeout=60s", check=False)
        forget(sandbox, domain)


@pytest.mark.parametrize("fault", ["wrong-key", "unknown-host-key"])
def test_a_wrong_key_or_an_unknown_host_key_is_one_line_naming_the_cause(
        kubectl: Kubectl, sandbox: Sandbox, operator: Operator, tmp_path: Path, fault: str) -> None:
    data = sandbox.ssh_client.secret_data()
    if fault == "wrong-key":
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                       check=True)
        data["ssh-privatekey"] = (tmp_path / "k").read_bytes()
        cause = "authenticat"
    else:
        host = sandbox.hosts[2].address
        data["known_hosts"] = b"".join(line + b"\n" for line in data["known_hosts"].splitlines()
                                       if not line.startswith(host.encode()))
        cause = "host key"
    kubectl.apply(secret_manifest("kvm-bad-ssh", data))
    kubectl.apply(json.dumps({
        "apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": "kvm-bad-ssh"},
        "spec": {"uri": sandbox.hosts[2].ssh_uri, "credentialsSecretRef": {"name": "kvm-bad-ssh"}}}))
    try:
        condition = wait_until(lambda: reachable(kubectl, "kvm-bad-ssh").get("status") == "False"
                               and reachable(kubectl, "kvm-bad-ssh"), timeout=60,
                               what="kvm-bad-ssh to be probed")
        message = condition["message"]
        assert cause in message.lower(), message
        assert "\n" not in message.strip() and "Traceback" not in message, message
        key_lines = [line for line in data["ssh-privatekey"].decode().splitlines()
                     if line and not line.startswith("-----")]
        everything = (operator.logs() + kubectl("get", "hypervisors", "-o", "json").stdout
                      + kubectl("get", "events", "-A", "-o", "json").stdout)
        assert key_lines and not any(line in everything for line in key_lines)
        assert not operator.dead()
    finally:
        kubectl("delete", "hypervisor", "kvm-bad-ssh", "--ignore-not-found", "--wait=true", check=False)
        kubectl("delete", "secret", "kvm-bad-ssh", "-n", NAMESPACE, "--ignore-not-found", check=False)
