"""Capacity, not only failover: replicas that share the fleet by a label, each shard with its
own peering, each serving only its own Hypervisors and VMMigrations.

The shard's hosts are libvirt test-driver connections (``test:///default``, whose
domain ``test`` runs from the start): what is under test is who serves what, and
every operator process has a test driver of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmmigration.core.config import SHARD_LABEL
from vmtestbed.controlplane import ControlPlane

from .conftest import NAMESPACE, OPERATOR_ENV, Kubectl, Operator, wait_until

SHARDS = ("east", "west")


def manifests(shard: str) -> str:
    """A Hypervisor of ``shard``, and a VMMigration of it that names the other shard's host."""
    other = next(s for s in SHARDS if s != shard)
    labels = {SHARD_LABEL: shard}
    objects = [
        {"apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
         "metadata": {"name": f"{shard}-host", "labels": labels},
         "spec": {"uri": "test:///default"}},
        {"apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
         "metadata": {"name": f"{shard}-vm", "namespace": "default", "labels": labels},
         "spec": {"domain": "test", "targetHypervisor": f"{other}-host"}},
    ]
    return "\n---\n".join(json.dumps(o) for o in objects)


@pytest.fixture
def shard_operators(control_plane: ControlPlane, kubectl: Kubectl, operator: Operator,
                    tmp_path: Path) -> Iterator[dict[str, Operator]]:
    """One operator process per shard, as a second Helm release per shard would run it."""
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace=NAMESPACE, name="vmmigration-operator", path=tmp_path / "operator.kubeconfig")
    started: dict[str, Operator] = {}
    try:
        for shard in SHARDS:
            kubectl.apply(json.dumps({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                      "metadata": {"name": f"vmmigration-{shard}"}}))
            env = {**OPERATOR_ENV, "VMMIGRATION_SHARD": shard,
                   "VMMIGRATION_METRICS_PORT": "0", "VMMIGRATION_HEALTH_PORT": "0"}
            started[shard] = Operator(kubeconfig=kubeconfig, log_dir=tmp_path / shard, env=env)
            started[shard].start()
        yield started
    finally:
        for shard in SHARDS:
            kubectl("delete", "vmmigration", f"{shard}-vm", "-n", "default",
                    "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)
            kubectl("delete", "hypervisor", f"{shard}-host", "--ignore-not-found", "--wait=true",
                    "--timeout=60s", check=False)
        for process in started.values():
            process.stop()
        for shard in SHARDS:
            kubectl("delete", "clusterkopfpeering", f"vmmigration-{shard}", "--ignore-not-found",
                    check=False)


def test_two_shards_each_serve_only_their_own_hypervisors_and_vmmigrations(
        kubectl: Kubectl, operator: Operator, shard_operators: dict[str, Operator]) -> None:
    for shard in SHARDS:
        kubectl.apply(manifests(shard))
    for shard in SHARDS:
        # The other shard's Hypervisor does not exist for this shard's replica ...
        other = next(s for s in SHARDS if s != shard)
        blocked = wait_until(
            lambda: kubectl.condition(f"{shard}-vm", "Blocked").get("reason") == "UnknownHypervisor"
            and kubectl.condition(f"{shard}-vm", "Blocked"),
            timeout=30, what=f"{shard}-vm to find no Hypervisor {other}-host in its shard")
        assert f"{other}-host" in blocked["message"]
        # ... and its own is served.
        kubectl.patch("vmmigration", f"{shard}-vm", {"spec": {"targetHypervisor": f"{shard}-host"}})
    for shard in SHARDS:
        placed = kubectl.wait_phase(f"{shard}-vm", "Placed", timeout=60)
        assert placed["currentHypervisor"] == f"{shard}-host"
        reachable = kubectl.get("hypervisor", f"{shard}-host", None)["status"]["conditions"]
        assert any(c["type"] == "Reachable" and c["status"] == "True" for c in reachable)

    # Each replica holds its own shard's peering, and served only its own resources
    # (kopf names the object of every line it logs about one: "[default/east-vm]").
    for shard, process in shard_operators.items():
        other = next(s for s in SHARDS if s != shard)
        log = process.logs()
        assert f"[default/{shard}-vm]" in log and f"[{shard}-host]" in log, (
            f"the {shard} replica never served its own resources")
        assert f"[default/{other}-vm]" not in log and f"[{other}-host]" not in log, (
            f"the {shard} replica touched the {other} shard")
        assert f"vmmigration-{shard}" in process.command()
    # The unsharded operator of the other tests served neither shard.
    main_log = operator.logs()
    for shard in SHARDS:
        assert f"[default/{shard}-vm]" not in main_log and f"[{shard}-host]" not in main_log
