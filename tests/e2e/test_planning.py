"""The plan through the API: shown before the move, a dry run that moves nothing, and a move
that is cancelled when it is no longer wanted instead of being finished and undone."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from vmmigration.core.memory import parse_timestamp
from vmtestbed.records import incoming_migrations
from vmtestbed.testbed import Sandbox

from ..conftest import GuestWatch
from .conftest import Kubectl, Operator, hypervisor_manifests, migrating, running_on, wait_until

# A cap that keeps an idle guest's move going for tens of seconds: time to change one's mind.
SLOW = {"bandwidthMiBPerSecond": 4, "progressTimeoutSeconds": 600, "hardTimeoutSeconds": 900}


def test_an_auto_vmmigration_shows_its_plan_in_status_before_the_move_starts(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    watch = boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b", policy={"bandwidthMiBPerSecond": 16})
    during = migrating(kubectl, name, timeout=60)

    plan = during.get("plan") or {}
    assert plan.get("strategy") == "Live", plan
    assert plan["requestedMode"] == "Auto" and plan["withinBudget"] is True
    inputs = plan["inputs"]
    # QEMU moves about 1.10x the cap it is given; the plan expects that pace.
    assert inputs["linkSource"] == "PolicyCap" and inputs["linkBytesPerSecond"] == int(16 * 2**20 * 1.10)
    assert "dirtyRateBytesPerSecond" in inputs and inputs["dirtyRatePeriodsSeconds"]
    assert {c["strategy"] for c in plan["candidates"]} == {
        "Live", "LiveAutoConverge", "PostCopy", "Hybrid", "NonLive"}
    # The plan is written with the attempt, in the one status write before libvirt is asked.
    planned = [e["message"] for e in kubectl.events(name) if e["reason"] == "Planned"]
    assert planned and planned[0].startswith("Live: forecast"), planned

    placed = kubectl.wait_phase(name, "Placed", timeout=90)
    actual = placed["plan"]["actual"]
    assert actual["durationSeconds"] > 0 and actual["effectiveMode"] == "Live"
    assert running_on(sandbox, name) == ["kvm-b"]
    watch.assert_kept_running(after=watch.count())


def test_an_auto_vmmigration_keeps_its_guests_reading_fresh_so_the_next_plan_does_not_wait_for_one(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = boot(name, dirty_mib=16, dirty_rate_mib=4)
    # Already where it is wanted: placed without a move, so nothing has measured it yet.
    vmm(name, domain=name, targetHypervisor="kvm-a", policy={"bandwidthMiBPerSecond": 16})
    kubectl.wait_phase(name, "Placed", timeout=60)
    wait_until(lambda: f"renewed the dirty rate of {name} on kvm-a" in operator.tail(3000),
               timeout=60, what="the background renewal of the guest's reading")
    time.sleep(1.5)  # past the second of that reading, which status timestamps keep
    asked_at = time.time()
    kubectl.patch("vmmigration", name, {"spec": {"targetHypervisor": "kvm-b"}})
    plan = migrating(kubectl, name, timeout=60).get("plan") or {}
    # The plan rests on the reading renewed before the user asked: it waited for none.
    measured = plan["inputs"]["measuredTime"]
    assert (parse_timestamp(measured) or float("inf")) <= asked_at, plan
    # Taken in the background, so with the long period when the short ones leave the hot set open.
    assert plan["inputs"]["dirtyRatePeriodsSeconds"][:2] == [1, 3], plan
    assert plan["strategy"] == "Live" and plan["candidates"], plan
    kubectl.wait_phase(name, "Placed", timeout=90)
    assert running_on(sandbox, name) == ["kvm-b"] and incoming_migrations(sandbox.hosts, name) == 1
    watch.assert_kept_running(after=watch.count())


def test_a_dry_run_shows_the_plan_and_moves_nothing_until_it_is_cleared(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    watch = boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live", dryRun=True)
    ready = wait_until(lambda: kubectl.condition(name, "Ready").get("reason") == "DryRun"
                       and kubectl.condition(name, "Ready"), timeout=60, what="the dry run's plan")
    assert "would move from kvm-a to kvm-b" in ready["message"]
    status = kubectl.status(name)
    assert status["phase"] == "Pending" and status["plan"]["strategy"] == "Live"
    # A dry run measures even for an explicit mode: it is asked for the numbers.
    assert "dirtyRateBytesPerSecond" in status["plan"]["inputs"]
    assert "Planned" in kubectl.reasons(name) and "MigrationStarted" not in kubectl.reasons(name)
    # libvirt's own record: nothing was migrated.
    assert running_on(sandbox, name) == ["kvm-a"] and incoming_migrations(sandbox.hosts, name) == 0

    kubectl.patch("vmmigration", name, {"spec": {"dryRun": False}})
    kubectl.wait_phase(name, "Placed", timeout=90)
    assert running_on(sandbox, name) == ["kvm-b"] and incoming_migrations(sandbox.hosts, name) == 1
    watch.assert_kept_running(after=watch.count())


def test_setting_the_target_back_mid_move_cancels_it_instead_of_moving_the_vm_twice(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    watch = boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live", policy=SLOW)
    migrating(kubectl, name, timeout=60)

    kubectl.patch("vmmigration", name, {"spec": {"targetHypervisor": "kvm-a"}})
    placed = kubectl.wait_phase(name, "Placed", timeout=60)
    assert placed["currentHypervisor"] == "kvm-a"
    reasons = kubectl.reasons(name)
    assert "Replanned" in reasons and "MigrationSucceeded" not in reasons, reasons
    # One migration began (and was cancelled), not two that both completed.
    assert running_on(sandbox, name) == ["kvm-a"] and incoming_migrations(sandbox.hosts, name) == 1
    watch.assert_kept_running(after=watch.count())


@pytest.fixture
def kvm_c_restored(kubectl: Kubectl, sandbox: Sandbox) -> Iterator[None]:
    yield
    kubectl.apply(hypervisor_manifests(sandbox))


def test_a_move_to_a_hypervisor_deleted_mid_move_is_cancelled_and_the_vm_stays_on_a_managed_host(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], kvm_c_restored: None) -> None:
    watch = boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-c", mode="Live", policy=SLOW)
    migrating(kubectl, name, timeout=60)

    kubectl("delete", "hypervisor", "kvm-c", "--wait=true", "--timeout=60s")
    wait_until(lambda: "Replanned" in kubectl.reasons(name), timeout=30, what="the move to be cancelled")
    blocked = wait_until(lambda: kubectl.condition(name, "Blocked").get("reason") == "UnknownHypervisor"
                         and kubectl.condition(name, "Blocked"), timeout=30,
                         what="the VMMigration to say its target is unknown")
    assert "kvm-c" in blocked["message"]
    assert running_on(sandbox, name) == ["kvm-a"]
    assert "MigrationSucceeded" not in kubectl.reasons(name)
    watch.assert_kept_running(after=watch.count())


def test_a_cap_lifted_mid_move_applies_to_the_running_job_and_only_then_is_its_generation_claimed(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live", policy=SLOW)
    during = migrating(kubectl, name, timeout=60)
    assert during["observedGeneration"] == 1
    rate = during["progress"]["transferRateBytesPerSecond"]
    assert rate < 6 * 2**20, f"the 4 MiB/s cap does not hold: {rate} B/s"

    # parallelConnections cannot change under a running job: the claim stays at 1.
    kubectl.patch("vmmigration", name, {"spec": {"policy": {"parallelConnections": 2}}})
    time.sleep(2)
    assert kubectl.status(name)["observedGeneration"] == 1
    kubectl.patch("vmmigration", name, {"spec": {"policy": {"parallelConnections": 1}}})
    # Generation 3 equals generation 1: followed. Now lift the cap (generation 4).
    kubectl.patch("vmmigration", name, {"spec": {"policy": {"bandwidthMiBPerSecond": 0}}})
    lifted = time.monotonic()
    placed = kubectl.wait_phase(name, "Placed", timeout=60)
    # The rest of a 4 MiB/s copy would take far longer; uncapped it is over in seconds.
    assert time.monotonic() - lifted < 15
    assert placed["observedGeneration"] == 4
    assert "the changed policy applies to the running job: bandwidth unlimited" in operator.logs()
    assert running_on(sandbox, name) == ["kvm-b"] and incoming_migrations(sandbox.hosts, name) == 1
    watch.assert_kept_running(after=watch.count())
