"""Draining a host in maintenance, and bringing its VMs back: real hosts, real guests.

What moved is read from libvirt (where each domain is, how many incoming
migrations each host's own log records), never from the operator's log.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vmtestbed.records import incoming_migrations
from vmtestbed.testbed import Sandbox

from ..conftest import GuestWatch
from .conftest import NAMESPACE, Kubectl, Operator, forget, running_on, wait_until, where

ZONE = {"matchLabels": {"vmmigration.dev/zone": "lab"}}
MADE = "vmmigration.dev/drained-from=kvm-a"


def hv_status(kubectl: Kubectl, name: str = "kvm-a") -> dict[str, Any]:
    return kubectl.get("hypervisor", name, None).get("status") or {}


def drained(kubectl: Kubectl, host: str = "kvm-a") -> bool:
    conditions = hv_status(kubectl, host).get("conditions") or ()
    if any(c["type"] == "Drained" and c["status"] == "True" for c in conditions):
        return True
    # What the failure message shows: the drain, and each of its VMMigrations.
    raise AssertionError(json.dumps({"drain": hv_status(kubectl, host).get("drain"), "made": [
        (m["metadata"]["name"], (m.get("status") or {}).get("phase"),
         next((c.get("message") for c in (m.get("status") or {}).get("conditions") or ()
               if c["type"] == "Ready"), None)) for m in made(kubectl)]}))


def drain(kubectl: Kubectl, host: str, on: bool) -> None:
    kubectl.patch("hypervisor", host, {"spec": {"maintenance": on}}, namespace=None)


def made(kubectl: Kubectl) -> list[dict[str, Any]]:
    listed = json.loads(kubectl("get", "vmm", "-n", NAMESPACE, "-l", MADE, "-o", "json").stdout)
    return listed["items"]  # type: ignore[no-any-return]


def hv_events(kubectl: Kubectl, host: str = "kvm-a") -> list[str]:
    listed = json.loads(kubectl("get", "events", "-A", "-o", "json", "--field-selector",
                                f"involvedObject.name={host},involvedObject.kind=Hypervisor").stdout)
    return [e["reason"] for e in listed["items"]]


@pytest.fixture
def cleanup(kubectl: Kubectl, sandbox: Sandbox) -> Iterator[list[str]]:
    """Domains to remove after the test; kvm-a out of maintenance and its link unshaped."""
    domains: list[str] = []
    yield domains
    drain(kubectl, "kvm-a", False)
    kubectl.patch("hypervisor", "kvm-a", {"spec": {"drain": None}}, namespace=None)
    with contextlib.suppress(Exception):
        sandbox.shape(sandbox.hosts[0], rate_mbit=None)
    wait_until(lambda: not made(kubectl), timeout=60, what="the drain's VMMigrations to go")
    kubectl("delete", "events", "-A", "--field-selector", "involvedObject.kind=Hypervisor", check=False)
    for domain in domains:
        forget(sandbox, domain)


def test_a_host_in_maintenance_drains_to_empty_and_its_pinned_vm_comes_back_after(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator, cleanup: list[str]) -> None:
    pinned, selected, loose, cold = (f"{name}-pin", f"{name}-sel", f"{name}-free", f"{name}-off")
    cleanup += [pinned, selected, loose, cold]
    watches = {d: boot(d) for d in (pinned, selected, loose)}
    sandbox.define(sandbox.guest_spec(cold), host=sandbox.hosts[0])
    vmm(pinned, domain=pinned, targetHypervisor="kvm-a", mode="Live")
    vmm(selected, domain=selected, targetSelector=ZONE, mode="Live")
    kubectl.wait_phase(pinned, "Placed", timeout=60)
    kubectl.wait_phase(selected, "Placed", timeout=60)
    beats = {d: w.count() for d, w in watches.items()}

    drain(kubectl, "kvm-a", True)
    done = kubectl("wait", "--for=condition=Drained", "hv/kvm-a", "--timeout=100s", check=False)
    assert done.returncode == 0, (done.stderr, hv_status(kubectl).get("drain"))

    # libvirt's own view: kvm-a holds nothing of ours, and every VM is in one place.
    for domain in (pinned, selected, loose):
        assert len(running_on(sandbox, domain)) == 1 and "kvm-a" not in where(sandbox, domain), domain
        assert incoming_migrations(sandbox.hosts, domain) == 1, f"{domain} moved more than once"
    assert list(where(sandbox, cold).values()) == ["ShutOff"] and "kvm-a" not in where(sandbox, cold)
    status = hv_status(kubectl)
    assert status["drain"]["state"] == "Drained", status["drain"]
    # The drain counts what it found on its first pass: the loops of the pinned and the
    # selected VM react to maintenance at once and may have moved them before it.
    assert status["drain"]["moved"] == status["drain"]["total"] >= 2, status["drain"]
    assert [d["domain"] for d in status["displaced"]] == [pinned]
    shown = kubectl.status(pinned)
    assert shown["phase"] == "Displaced" and shown["displacedFrom"] == "kvm-a"
    assert {m["spec"]["domain"] for m in made(kubectl)} == {loose, cold}
    events = hv_events(kubectl)
    assert "DrainStarted" in events and "Drained" in events, events
    for domain, watch in watches.items():
        watch.assert_kept_running(after=beats[domain])

    drain(kubectl, "kvm-a", False)
    back = kubectl.wait_phase(pinned, "Placed", timeout=120)
    assert back["currentHypervisor"] == "kvm-a" and running_on(sandbox, pinned) == ["kvm-a"]
    assert incoming_migrations(sandbox.hosts, pinned) == 2, "out once and back once"
    wait_until(lambda: not made(kubectl), timeout=60, what="the drain's VMMigrations to be deleted")
    wait_until(lambda: not hv_status(kubectl).get("displaced"), timeout=30, what="no VM displaced")
    # The others stay where the drain put them, each still running once.
    for domain in (selected, loose):
        assert len(running_on(sandbox, domain)) == 1 and incoming_migrations(sandbox.hosts, domain) == 1
    watches[pinned].assert_kept_running(after=watches[pinned].count())


def test_clearing_maintenance_half_way_stops_the_drain_and_leaves_the_queued_vms_untouched(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        operator: Operator, cleanup: list[str]) -> None:
    domains = [f"{name}-{i}" for i in range(4)]
    cleanup += domains
    watches = {d: boot(d, dirty_mib=24, dirty_rate_mib=0) for d in domains}
    # About 2 MiB/s out of kvm-a: each move takes seconds, and two at a time run (the limits).
    # The guests write nothing while they move: on a shared 2 MiB/s they would never converge.
    sandbox.shape(sandbox.hosts[0], rate_mbit=16)
    drain(kubectl, "kvm-a", True)

    def under_way() -> dict[str, Any] | None:
        shown = hv_status(kubectl).get("drain") or {}
        return shown if shown.get("moving", 0) >= 1 and shown.get("queued", 0) >= 1 else None
    wait_until(under_way, timeout=90, what="a drain with moves running and queued")
    drain(kubectl, "kvm-a", False)
    wait_until(lambda: not made(kubectl), timeout=90, what="the drain's VMMigrations to be deleted")
    wait_until(lambda: hv_status(kubectl).get("drain", {}).get("state") == "Cancelled", timeout=30,
               what="the drain shown Cancelled")
    sandbox.shape(sandbox.hosts[0], rate_mbit=None)
    untouched = 0
    for domain in domains:
        assert len(running_on(sandbox, domain)) == 1, f"{domain} runs {where(sandbox, domain)}"
        moves = incoming_migrations(sandbox.hosts, domain)
        if moves == 0:
            untouched += 1
            assert running_on(sandbox, domain) == ["kvm-a"]
        watches[domain].assert_kept_running(after=watches[domain].count())
    assert untouched >= 1, "a queued VM was moved after the drain was cancelled"
    assert "DrainCancelled" in hv_events(kubectl)


def test_a_kill_9_of_the_operator_mid_drain_then_a_restart_moves_each_vm_once(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        operator: Operator, cleanup: list[str]) -> None:
    domains = [f"{name}-{i}" for i in range(3)]
    cleanup += domains
    watches = {d: boot(d, dirty_mib=24, dirty_rate_mib=0) for d in domains}
    sandbox.shape(sandbox.hosts[0], rate_mbit=32)
    drain(kubectl, "kvm-a", True)
    wait_until(lambda: (hv_status(kubectl).get("drain") or {}).get("moving", 0) >= 1, timeout=90,
               what="a move of the drain under way")
    operator.kill9()
    operator.start()
    wait_until(lambda: drained(kubectl), timeout=300, what="kvm-a drained after the restart",
               interval=1.0)
    for domain in domains:
        assert len(running_on(sandbox, domain)) == 1 and "kvm-a" not in where(sandbox, domain)
        assert incoming_migrations(sandbox.hosts, domain) == 1, f"{domain} was migrated twice"
        watches[domain].assert_kept_running(after=watches[domain].count())
    assert len(made(kubectl)) == len(domains), "one VMMigration per domain, made once"


# ---- rebalancing a pool ------------------------------------------------------------

POOL = "e2e-pool"
GIB = 2**30


@pytest.fixture
def pool(kubectl: Kubectl, sandbox: Sandbox) -> Iterator[Callable[..., None]]:
    """The three hosts in one pool of 1 GiB each (so three tiny guests make a real load)."""
    def make(**rebalance: Any) -> None:
        kubectl.apply(json.dumps({"apiVersion": "vmmigration.dev/v1alpha1", "kind": "HypervisorPool",
                                  "metadata": {"name": POOL}, "spec": {"rebalance": rebalance}}))

    for host in ("kvm-a", "kvm-b", "kvm-c"):
        kubectl("label", "hypervisor", host, f"vmmigration.dev/pool={POOL}", "--overwrite")
        kubectl.patch("hypervisor", host, {"spec": {"capacity": {"memoryBytes": GIB}}}, namespace=None)
    yield make
    kubectl("delete", "hypervisorpool", POOL, "--ignore-not-found", check=False)
    for host in ("kvm-a", "kvm-b", "kvm-c"):
        kubectl("label", "hypervisor", host, "vmmigration.dev/pool-", check=False)
        kubectl.patch("hypervisor", host, {"spec": {"capacity": None}}, namespace=None)


def pool_status(kubectl: Kubectl) -> dict[str, Any]:
    return kubectl.get("hypervisorpool", POOL, None).get("status") or {}


def test_a_pool_out_of_balance_is_planned_in_a_dry_run_then_evened_out_and_left_alone(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator, pool: Callable[..., None],
        cleanup: list[str]) -> None:
    domains = [f"{name}-{i}" for i in range(3)]
    cleanup += domains
    watches = {d: boot(d, dirty_mib=16) for d in domains}
    for domain in domains:
        vmm(domain, domain=domain, mode="Live",
            targetSelector={"matchLabels": {"vmmigration.dev/pool": POOL}})
    for domain in domains:
        kubectl.wait_phase(domain, "Placed", timeout=60)
    assert all(running_on(sandbox, d) == ["kvm-a"] for d in domains)

    # Three 128 MiB guests on one 1 GiB host: 37.5 % against 0 %, beyond 20 points.
    pool(enabled=True, dryRun=True, thresholdPercent=20, targetPercent=10, cooldownSeconds=0,
         maxMovesPerHour=10)
    planned = wait_until(lambda: pool_status(kubectl).get("plan"), timeout=60, what="a dry-run plan")
    assert len(planned) == 2 and all(m["from"] == "kvm-a" for m in planned), planned
    assert {m["to"] for m in planned} == {"kvm-b", "kvm-c"}, planned
    assert pool_status(kubectl)["spreadPercent"] > 20
    wait_until(lambda: "RebalancePlanned" in _pool_events(kubectl), timeout=30, what="the plan's Event")
    assert sum(incoming_migrations(sandbox.hosts, d) for d in domains) == 0, "a dry run moved a VM"

    pool(enabled=True, dryRun=False, thresholdPercent=20, targetPercent=10, cooldownSeconds=0,
         maxMovesPerHour=10)

    def balanced() -> dict[str, Any] | None:
        shown = pool_status(kubectl)
        ok = any(c["type"] == "Balanced" and c["status"] == "True" for c in shown.get("conditions") or ())
        return shown if ok and shown.get("spreadPercent", 100) <= 10 else None
    shown = wait_until(balanced, timeout=180, what="the pool within its target spread", interval=1.0)
    moves = sum(incoming_migrations(sandbox.hosts, d) for d in domains)
    assert moves == 2, (moves, shown)
    assert sorted(running_on(sandbox, d)[0] for d in domains) == ["kvm-a", "kvm-b", "kvm-c"]
    # Settled: no VM moves again (hysteresis), over a window of many passes (probes every 1 s).
    time.sleep(15)
    assert sum(incoming_migrations(sandbox.hosts, d) for d in domains) == moves, "it moved again"
    assert "Rebalancing" in _pool_events(kubectl)
    for domain, watch in watches.items():
        watch.assert_kept_running(after=watch.count())


def _pool_events(kubectl: Kubectl) -> list[str]:
    listed = json.loads(kubectl("get", "events", "-A", "-o", "json", "--field-selector",
                                f"involvedObject.name={POOL}").stdout)
    return [e["reason"] for e in listed["items"]]
