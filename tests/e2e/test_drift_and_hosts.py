"""Continuous placement: drift is corrected or reported; selectors, maintenance and conflicts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from vmmigration.core.model import MigrationRequest, Mode
from vmtestbed.testbed import Sandbox
from vmmigration.adapters.libvirt import engine

from ..conftest import GuestWatch
from vmtestbed.records import incoming_migrations

from .conftest import Kubectl, forget, running_on, wait_until


def move_by_hand(sandbox: Sandbox, domain: str, *, source: int, target: int) -> None:
    """What an admin does behind the operator's back: a plain live migration."""
    engine().migrate(MigrationRequest(domain=domain, source_uri=sandbox.hosts[source].uri,
                                      target_uri=sandbox.hosts[target].uri, mode=Mode.LIVE))


@pytest.fixture
def hosts_restored(kubectl: Kubectl) -> Iterator[None]:
    """Tests below change Hypervisor labels and maintenance; put them back afterwards."""
    yield
    for name in ("kvm-a", "kvm-b", "kvm-c"):
        kubectl.patch("hypervisor", name, {"spec": {"maintenance": False},
                                           "metadata": {"labels": {"pool": None}}}, namespace=None)


def test_a_vm_moved_by_hand_is_moved_back_to_its_target(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    watch = boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b")
    kubectl.wait_phase(name, "Placed", timeout=90)
    assert running_on(sandbox, name) == ["kvm-b"]

    move_by_hand(sandbox, name, source=1, target=0)
    wait_until(lambda: "DriftDetected" in kubectl.reasons(name), timeout=30,
               what="the drift to be noticed")
    wait_until(lambda: running_on(sandbox, name) == ["kvm-b"]
               and kubectl.status(name).get("phase") == "Placed", timeout=90,
               what="the VM to be moved back to kvm-b")
    assert kubectl.reasons(name).count("MigrationSucceeded") == 2
    # libvirt's own record: there, the admin's move back, and the correction.
    assert incoming_migrations(sandbox.hosts, name) == 3
    assert kubectl.condition(name, "Drifted")["status"] == "False"
    watch.assert_kept_running(after=watch.count())


def test_drift_with_report_only_is_reported_and_left_alone(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b", driftAction="Report")
    kubectl.wait_phase(name, "Placed", timeout=90)
    move_by_hand(sandbox, name, source=1, target=0)
    drifted = wait_until(lambda: kubectl.condition(name, "Drifted").get("status") == "True"
                         and kubectl.condition(name, "Drifted"), timeout=30, what="Drifted")
    assert "kvm-a" in drifted["message"]
    assert kubectl.condition(name, "Ready")["status"] == "False"
    assert kubectl.status(name)["currentHypervisor"] == "kvm-a"
    assert "DriftDetected" in kubectl.reasons(name)
    # Several probe and resync rounds later it is still where the admin put it.
    time.sleep(5)
    assert running_on(sandbox, name) == ["kvm-a"]
    assert kubectl.reasons(name).count("MigrationStarted") == 1
    assert incoming_migrations(sandbox.hosts, name) == 2, "Report must not move it back"


def test_a_selector_picks_a_matching_host_and_maintenance_moves_the_vm_off_it(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], hosts_restored: None) -> None:
    for host in ("kvm-b", "kvm-c"):
        kubectl.patch("hypervisor", host, {"metadata": {"labels": {"pool": "blue"}}}, namespace=None)
    watch = boot(name)
    vmm(name, domain=name, targetSelector={"matchLabels": {"pool": "blue"}})
    placed = kubectl.wait_phase(name, "Placed", timeout=90)
    first = placed["currentHypervisor"]
    assert first in ("kvm-b", "kvm-c") and running_on(sandbox, name) == [first]

    kubectl.patch("hypervisor", first, {"spec": {"maintenance": True}}, namespace=None)
    other = "kvm-c" if first == "kvm-b" else "kvm-b"
    wait_until(lambda: running_on(sandbox, name) == [other]
               and kubectl.status(name).get("phase") == "Placed"
               and kubectl.status(name).get("currentHypervisor") == other,
               timeout=90, what=f"the VM to leave {first} for {other}")
    watch.assert_kept_running(after=watch.count())


def test_a_vm_pinned_to_a_host_in_maintenance_is_blocked(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], hosts_restored: None) -> None:
    kubectl.patch("hypervisor", "kvm-c", {"spec": {"maintenance": True}}, namespace=None)
    boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-c")
    blocked = wait_until(lambda: kubectl.condition(name, "Blocked").get("status") == "True"
                         and kubectl.condition(name, "Blocked"), timeout=30, what="Blocked")
    assert blocked["reason"] == "HostInMaintenance"
    assert "Blocked" in kubectl.reasons(name)
    assert running_on(sandbox, name) == ["kvm-a"]


def test_the_younger_of_two_resources_for_one_vm_is_blocked_with_conflict(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b")
    time.sleep(1.1)  # creationTimestamp has one-second resolution
    vmm(f"{name}-rival", domain=name, targetHypervisor="kvm-c")
    blocked = wait_until(lambda: kubectl.condition(f"{name}-rival", "Blocked").get("reason") == "Conflict"
                         and kubectl.condition(f"{name}-rival", "Blocked"), timeout=30,
                         what="the rival to be blocked")
    assert name in blocked["message"]
    kubectl.wait_phase(name, "Placed", timeout=90)
    assert running_on(sandbox, name) == ["kvm-b"]
    assert "MigrationStarted" not in kubectl.reasons(f"{name}-rival")


def test_a_selector_moves_on_to_another_host_when_its_first_choice_refuses_the_vm(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], hosts_restored: None) -> None:
    for host in ("kvm-b", "kvm-c"):
        kubectl.patch("hypervisor", host, {"metadata": {"labels": {"pool": "blue"}}}, namespace=None)
    # kvm-b is the less loaded choice, but a stale definition there refuses the VM ...
    sandbox.define(sandbox.guest_spec(name), host=sandbox.hosts[1])
    busy = f"{name}-busy"
    sandbox.boot(sandbox.guest_spec(busy), host=sandbox.hosts[2])
    try:
        watch = boot(name)
        vmm(name, domain=name, targetSelector={"matchLabels": {"pool": "blue"}})
        # ... so after the refusal it goes to kvm-c, without waiting out a backoff.
        placed = kubectl.wait_phase(name, "Placed", timeout=90)
        assert placed["currentHypervisor"] == "kvm-c"
        assert placed["lastFailure"]["reason"] in ("DomainAlreadyOnTarget", "NameClash", "UuidClash")
        assert kubectl.reasons(name).count("MigrationStarted") == 1
        assert incoming_migrations(sandbox.hosts, name) == 1, "the refusal must start nothing"
        assert running_on(sandbox, name) == ["kvm-c"]
        watch.assert_kept_running(after=watch.count())
    finally:
        forget(sandbox, busy)
