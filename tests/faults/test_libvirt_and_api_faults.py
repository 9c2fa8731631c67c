"""Faults in the parts the operator depends on: libvirtd on either side, QEMU on the
target, and the Kubernetes API server itself, each while a real migration runs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from vmtestbed.controlplane import ControlPlane
from vmtestbed.testbed import Sandbox

from ..conftest import GuestWatch
from ..e2e.conftest import Kubectl, Operator, forget, running_on, wait_until
from .helpers import (
    STEADY,
    assert_failed_on_source,
    assert_nothing_lost,
    blocked,
    domain_state,
    pause,
    restart_api,
    started,
    steady_move,
)

pytestmark = pytest.mark.watchdog(seconds=400)


def test_a_target_libvirtd_killed_mid_migration_leaves_the_vm_on_the_source_and_it_retries_until_the_host_returns(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = steady_move(kubectl=kubectl, boot=boot, vmm=vmm, name=name)
    target = sandbox.hosts[1]
    sandbox.kill_daemon(target)
    try:
        failed = kubectl.wait_phase(name, "Failed", timeout=90)
        assert_failed_on_source(failed)
        assert running_on(sandbox, name) == ["kvm-a"]
        # While the host is away, the operator keeps the VM where it is and says why.
        pause(6)
        assert running_on(sandbox, name) == ["kvm-a"]
        assert kubectl.status(name)["phase"] in ("Failed", "Pending")
    finally:
        sandbox.start_daemon(target)
    placed = assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                                 placed_on="kvm-b")
    assert placed["attempts"] >= 2
    assert "MigrationFailed" in kubectl.reasons(name)


def test_a_source_libvirtd_restarted_mid_migration_is_survived_and_the_vm_moves_once(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = steady_move(kubectl=kubectl, boot=boot, vmm=vmm, name=name)
    source = sandbox.hosts[0]
    sandbox.kill_daemon(source)
    pause(1)
    sandbox.start_daemon(source)
    assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name, placed_on="kvm-b")
    assert "kvm-a" not in running_on(sandbox, name)


def test_the_api_server_and_etcd_restarted_mid_migration_and_the_status_still_ends_right(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator, control_plane: ControlPlane) -> None:
    watch = steady_move(kubectl=kubectl, boot=boot, vmm=vmm, name=name)
    restart_api(control_plane, down_seconds=3)
    placed = assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                                 placed_on="kvm-b")
    assert placed["attempts"] == 1
    assert placed.get("durationSeconds"), placed
    assert started(kubectl, name) == 1
    assert not operator.dead()


def test_the_target_qemu_killed_during_switch_over_leaves_the_vm_running_on_the_source_then_it_moves(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    # Dirtied faster than 8 MiB/s copies it: the hybrid suspends the source, and
    # the rest of the copy is the switch-over window in which we strike.
    watch = boot(name, dirty_mib=48, dirty_rate_mib=48)
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live",
        policy={"onTimeout": "Suspend", "progressTimeoutSeconds": 4, "bandwidthMiBPerSecond": 8})
    wait_until(lambda: domain_state(sandbox, 0, name) == "Paused", timeout=90, interval=0.05,
               what="the hybrid to suspend the source")
    killed = sandbox.kill_qemu(sandbox.hosts[1], name)
    assert killed is not None, "no QEMU for the guest on the target"
    failed = kubectl.wait_phase(name, "Failed", timeout=60)
    assert failed["currentHypervisor"] == "kvm-a", failed
    # Never left paused: the source runs it again.
    assert running_on(sandbox, name) == ["kvm-a"]
    watch.assert_kept_running(after=watch.count())
    assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name, placed_on="kvm-b")


def test_a_hung_target_libvirtd_is_reported_unreachable_nothing_moves_and_the_operator_stays_responsive(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = boot(name)
    other = f"{name}-other"
    target = sandbox.hosts[1]
    # SIGSTOP: the kernel still accepts TCP connections for it, and nothing answers.
    sandbox.freeze_daemon(target)
    try:
        def reachable(host: str) -> dict[str, str]:
            conditions = kubectl.get("hypervisor", host, None).get("status", {}).get("conditions") or ()
            return next((c for c in conditions if c["type"] == "Reachable"), {})

        hung = wait_until(lambda: reachable("kvm-b").get("status") == "False" and reachable("kvm-b"),
                          timeout=30, what="the hung kvm-b to be reported unreachable")
        assert "answer" in hung["message"], hung
        vmm(name, domain=name, targetHypervisor="kvm-b", **STEADY)
        assert blocked(kubectl, name)["reason"] == "TargetUnreachable"
        # The hung host holds no one else up: another VM moves to kvm-c meanwhile.
        # (libvirt is read here only on the live hosts: a client of the hung one hangs too.)
        other_watch = boot(other)
        vmm(other, domain=other, targetHypervisor="kvm-c")
        assert kubectl.wait_phase(other, "Placed", timeout=90)["currentHypervisor"] == "kvm-c"
        assert domain_state(sandbox, 2, other) == "Running"
        assert domain_state(sandbox, 0, name) == "Running"
    finally:
        sandbox.freeze_daemon(target, frozen=False)
    try:
        assert running_on(sandbox, other) == ["kvm-c"]
        other_watch.assert_kept_running(after=other_watch.count())
    finally:
        forget(sandbox, other)
    assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name, placed_on="kvm-b")
    assert started(kubectl, name) == 1


def test_a_target_libvirtd_that_hangs_mid_migration_fails_the_move_in_bounded_time_and_the_vm_stays_on_the_source(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = steady_move(kubectl=kubectl, boot=boot, vmm=vmm, name=name)
    target = sandbox.hosts[1]
    # SIGSTOP mid-copy: QEMU streams on to the target's QEMU, but the hand-over needs
    # the target's libvirtd, which never answers. The source libvirtd gives up after
    # its keepalive (30 s) and runs the VM again; the operator's own calls to the
    # target fail by its keepalive too, instead of hanging the migration forever.
    sandbox.freeze_daemon(target)
    frozen_at = time.monotonic()
    try:
        failed = wait_until(lambda: (s := kubectl.status(name)).get("phase") in ("Failed", "Pending")
                            and s.get("lastFailure") and s, timeout=90,
                            what="the hung migration to be reported failed")
        print(f"hung target: reported {failed['phase']} {time.monotonic() - frozen_at:.1f} s after "
              f"the freeze: {failed['lastFailure']['message']}")
        assert_failed_on_source(failed)
        # Only the live hosts are read: a libvirt client of the hung one would wait.
        assert domain_state(sandbox, 0, name) == "Running"
        watch.assert_kept_running(after=watch.count())
        # While the host hangs, nothing is retried into it.
        assert blocked(kubectl, name)["reason"] == "TargetUnreachable"
        pause(5)
        assert started(kubectl, name) == 1
        assert domain_state(sandbox, 0, name) == "Running"
    finally:
        sandbox.freeze_daemon(target, frozen=False)
    # Thawed, the target discards the half-arrived copy (the source closed the
    # hand-over), and the retry moves the VM exactly once.
    placed = assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                                 placed_on="kvm-b")
    assert placed["attempts"] >= 2
    assert "MigrationFailed" in kubectl.reasons(name)
