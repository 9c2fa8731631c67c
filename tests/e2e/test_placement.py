"""Placement through the resource: kubectl apply, and the VM really moves (or stays)."""

from __future__ import annotations

from collections.abc import Callable

from vmtestbed.testbed import Sandbox

from ..conftest import GuestWatch
from .conftest import REPO, Kubectl, Operator, forget, running_on, wait_until, where


def test_a_live_migration_applied_from_the_examples_moves_the_running_vm(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch],
        operator: Operator) -> None:
    watch = boot("demo-web", dirty_mib=32, dirty_rate_mib=8)
    kubectl("apply", "-f", str(REPO / "examples" / "live.yaml"))
    try:
        placed = kubectl.wait_phase("demo-web", "Placed", timeout=120)
        beat = watch.count()
        assert running_on(sandbox, "demo-web") == ["kvm-b"]
        assert where(sandbox, "demo-web") == {"kvm-b": "Running"}, "the source still defines it"
        watch.assert_kept_running(after=beat)
        assert placed["currentHypervisor"] == "kvm-b" and placed["sourceHypervisor"] == "kvm-a"
        assert placed["effectiveMode"] == "Live"
        assert placed["progress"]["percent"] == 100 and placed["progressText"] == "100%"
        assert placed["progress"]["memoryTotalBytes"] > 0
        assert placed["downtimeMs"] >= 0 and placed["durationSeconds"] > 0
        assert placed["attempts"] == 1 and placed["observedGeneration"] == 1
        assert kubectl.condition("demo-web", "Ready")["status"] == "True"
        reasons = kubectl.reasons("demo-web")
        assert "MigrationStarted" in reasons and "MigrationSucceeded" in reasons
        done = kubectl("wait", "--for=condition=Ready", "vmm/demo-web", "-n", "default",
                       "--timeout=10s")
        assert "condition met" in done.stdout
    finally:
        kubectl("delete", "-f", str(REPO / "examples" / "live.yaml"), "--wait=true", check=False)
        forget(sandbox, "demo-web")


def test_a_vm_already_on_its_target_is_placed_without_a_migration(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-a")
    placed = kubectl.wait_phase(name, "Placed", timeout=60)
    assert placed.get("attempts") in (None, 0) and "startTime" not in placed
    assert "MigrationStarted" not in kubectl.reasons(name)
    assert running_on(sandbox, name) == ["kvm-a"]


def test_an_offline_migration_moves_only_the_definition_of_a_shut_off_vm(
        kubectl: Kubectl, sandbox: Sandbox, name: str, vmm: Callable[..., str]) -> None:
    sandbox.define(sandbox.guest_spec(name), host=sandbox.hosts[0])
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Offline")
    placed = kubectl.wait_phase(name, "Placed", timeout=60)
    assert where(sandbox, name) == {"kvm-b": "ShutOff"}
    assert placed["effectiveMode"] == "Offline"


def test_the_hybrid_suspends_a_vm_that_dirties_memory_too_fast_and_it_resumes_on_the_target(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch],
        operator: Operator) -> None:
    watch = boot("demo-hot", dirty_mib=48, dirty_rate_mib=48)
    kubectl("apply", "-f", str(REPO / "examples" / "hybrid.yaml"))
    try:
        saw_progress = wait_until(
            lambda: (kubectl.status("demo-hot").get("progress") or {}).get("memoryRemainingBytes"),
            timeout=60, what="live progress in status")
        assert saw_progress > 0
        placed = kubectl.wait_phase("demo-hot", "Placed", timeout=150)
        beat = watch.count()
        assert placed["effectiveMode"] == "LiveSuspended"
        # Auto measured the guest and planned the hybrid; the move did what the plan said.
        assert placed["plan"]["strategy"] == "Hybrid" and placed["plan"]["inputs"]["hotSetKnown"]
        assert placed["plan"]["actual"]["effectiveMode"] == "LiveSuspended"
        assert running_on(sandbox, "demo-hot") == ["kvm-b"]
        watch.assert_kept_running(after=beat)
    finally:
        kubectl("delete", "-f", str(REPO / "examples" / "hybrid.yaml"), "--wait=true", check=False)
        forget(sandbox, "demo-hot")


def test_a_failing_pre_check_blocks_the_resource_before_anything_moves(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    # A stale, shut-off definition of the same name waits on the target.
    sandbox.define(sandbox.guest_spec(name), host=sandbox.hosts[1])
    watch = boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b")
    blocked = wait_until(lambda: kubectl.condition(name, "Blocked").get("status") == "True"
                         and kubectl.condition(name, "Blocked"), timeout=60, what="Blocked")
    assert blocked["reason"] in ("DomainAlreadyOnTarget", "NameClash", "UuidClash"), blocked
    current = kubectl.status(name)
    assert current["phase"] == "Failed" and current.get("attempts", 0) == 0
    assert current["lastFailure"]["reason"] == blocked["reason"]
    assert "nextAttemptTime" in current
    assert "Blocked" in kubectl.reasons(name) and "MigrationStarted" not in kubectl.reasons(name)
    assert where(sandbox, name) == {"kvm-a": "Running", "kvm-b": "ShutOff"}
    watch.assert_kept_running(after=watch.count())
