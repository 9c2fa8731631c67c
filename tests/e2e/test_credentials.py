"""Hypervisor credentials come from a Secret and never show up in logs, status or Events."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator

import pytest

from vmtestbed.testbed import Sandbox

from .conftest import NAMESPACE, Kubectl, Operator, wait_until


def reachable(kubectl: Kubectl, name: str) -> dict[str, str]:
    conditions = kubectl.get("hypervisor", name, None).get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Reachable"), {})


@pytest.fixture
def marker(kubectl: Kubectl) -> Iterator[str]:
    """Secret material with a unique marker we can search for."""
    mark = f"SECRET-MATERIAL-{secrets.token_hex(8)}"
    data = {key: base64.b64encode(f"-----BEGIN X-----\n{mark}-{key}\n-----END X-----\n".encode()).decode()
            for key in ("tls.crt", "tls.key", "ca.crt")}
    kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "kvm-tls-client", "namespace": NAMESPACE},
                              "type": "Opaque", "data": data}))
    yield mark
    kubectl("delete", "secret", "kvm-tls-client", "-n", NAMESPACE, "--ignore-not-found", check=False)
    kubectl("delete", "hypervisor", "kvm-tls", "kvm-nosecret", "--ignore-not-found", check=False)


def test_a_tls_hypervisor_reads_its_secret_and_no_key_material_leaks(
        kubectl: Kubectl, sandbox: Sandbox, operator: Operator, marker: str) -> None:
    kubectl.apply(json.dumps({
        "apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": "kvm-tls"},
        # The host listens for TLS, but this "certificate" is no PEM: unreachable, and reported.
        "spec": {"uri": sandbox.hosts[0].tls_uri,
                 "credentialsSecretRef": {"name": "kvm-tls-client"}}}))
    condition = wait_until(lambda: reachable(kubectl, "kvm-tls").get("status") == "False"
                           and reachable(kubectl, "kvm-tls"), timeout=30, what="a probe of kvm-tls")
    assert condition["message"], "an unreachable host must say why"
    # The operator wrote the files libvirt reads, so it did read the Secret ...
    assert any((operator.log_dir / "credentials" / "kvm-tls").glob("*.pem"))
    # ... and its material appears nowhere a user or a log collector can see.
    everything = (operator.logs()
                  + kubectl("get", "hypervisors", "-o", "json").stdout
                  + kubectl("get", "vmmigrations", "-A", "-o", "json").stdout
                  + kubectl("get", "events", "-A", "-o", "json").stdout)
    assert marker not in everything


def test_a_missing_secret_is_reported_on_the_hypervisor_not_fatal(
        kubectl: Kubectl, sandbox: Sandbox, operator: Operator, marker: str) -> None:
    kubectl.apply(json.dumps({
        "apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": "kvm-nosecret"},
        "spec": {"uri": sandbox.hosts[1].tls_uri,
                 "credentialsSecretRef": {"name": "no-such-secret"}}}))
    condition = wait_until(lambda: reachable(kubectl, "kvm-nosecret").get("status") == "False"
                           and reachable(kubectl, "kvm-nosecret"), timeout=30,
                           what="a probe of kvm-nosecret")
    assert "no-such-secret" in condition["message"] and "404" in condition["message"]
    assert not operator.dead()
