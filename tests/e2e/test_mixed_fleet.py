"""A fleet of mixed versions, upgraded host by host: real hosts of two flavours.

kvm-a and kvm-b start on the previous flavour (libvirt 11.3, QEMU 10.0, the
machine's own), kvm-c on the current one (libvirt 12.9, QEMU 11.1, from a
Debian 13 root); every test puts the fleet back in that shape first, and the
module leaves every host current again. What moved is read from libvirt's own
records (each host's QEMU log), never from the operator's log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vmtestbed.hosts import Host
from vmtestbed.records import incoming_migrations
from vmtestbed.testbed import Sandbox
from vmmigration.core import recovery
from vmmigration.core.model import PauseReason, format_version

from ..conftest import GuestWatch
from .conftest import Kubectl, Operator, forget, running_on, wait_until, where
from .test_drain import drain, hv_status, made

NAMES = ("kvm-a", "kvm-b", "kvm-c")
MIXED = {"kvm-a": "previous", "kvm-b": "previous", "kvm-c": "current"}


def versions_of(sandbox: Sandbox, host: str) -> tuple[str, str]:
    """libvirt's own answer: (libvirt, QEMU) on ``host``."""
    with Host(sandbox.hosts[NAMES.index(host)].uri) as conn:
        found = conn.versions()
    return format_version(found.libvirt), format_version(found.hypervisor)


def set_flavours(sandbox: Sandbox, kubectl: Kubectl, wanted: dict[str, str]) -> None:
    """Restart the hosts whose flavour differs, and wait for the Hypervisors to show it."""
    for host, flavour in wanted.items():
        daemon = sandbox.hosts[NAMES.index(host)]
        if daemon.flavour != flavour:
            sandbox.upgrade(daemon, flavour=flavour)
    for host in wanted:
        libvirt, qemu = versions_of(sandbox, host)
        wait_until(lambda: (s := hv_status(kubectl, host)).get("libvirtVersion") == libvirt
                   and s.get("hypervisorVersion") == qemu, timeout=90,
                   what=f"{host}'s Hypervisor to show libvirt {libvirt} and QEMU {qemu}")


@pytest.fixture(scope="module")
def all_current_after(sandbox: Sandbox, kubectl: Kubectl) -> Iterator[None]:
    yield
    set_flavours(sandbox, kubectl, dict.fromkeys(NAMES, "current"))


@pytest.fixture
def fleet(sandbox: Sandbox, kubectl: Kubectl, operator: Operator,
          all_current_after: None) -> Iterator[list[str]]:
    """The mixed fleet; yields a list of domains to remove afterwards."""
    domains: list[str] = []
    set_flavours(sandbox, kubectl, MIXED)
    yield domains
    drain(kubectl, "kvm-a", False)
    wait_until(lambda: not made(kubectl), timeout=60, what="the drain's VMMigrations to go")
    with contextlib.suppress(Exception):
        sandbox.heal()
    for domain in domains:
        forget(sandbox, domain)


def test_hypervisors_show_each_hosts_libvirt_and_qemu_and_get_wide_lists_them(
        kubectl: Kubectl, sandbox: Sandbox, fleet: list[str]) -> None:
    old, new = versions_of(sandbox, "kvm-a"), versions_of(sandbox, "kvm-c")
    assert old[0].startswith("11.3.") and new[0].startswith("12.9."), (old, new)
    assert old[1].startswith("10.0.") and new[1].startswith("11.1."), (old, new)
    wide = kubectl("get", "hv", "-o", "wide").stdout
    header, *rows = wide.splitlines()
    assert "LIBVIRT" in header and "QEMU" in header, header
    shown = {row.split()[0]: row for row in rows}
    assert old[0] in shown["kvm-a"] and old[1] in shown["kvm-a"], wide
    assert new[0] in shown["kvm-c"] and new[1] in shown["kvm-c"], wide


def test_a_previous_host_drained_upgraded_to_current_and_undrained_gets_every_vm_back_each_moved_once_each_way(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], fleet: list[str]) -> None:
    first, second = f"{name}-1", f"{name}-2"
    fleet += [first, second]
    watches = {d: boot(d) for d in (first, second)}  # on kvm-a, the previous flavour
    for domain in watches:
        vmm(domain, domain=domain, targetHypervisor="kvm-a", mode="Live")
    for domain in watches:
        kubectl.wait_phase(domain, "Placed", timeout=60)

    drain(kubectl, "kvm-a", True)
    done = kubectl("wait", "--for=condition=Drained", "hv/kvm-a", "--timeout=120s", check=False)
    assert done.returncode == 0, (done.stderr, hv_status(kubectl).get("drain"))
    for domain in watches:
        assert len(running_on(sandbox, domain)) == 1 and "kvm-a" not in where(sandbox, domain)
        assert incoming_migrations(sandbox.hosts, domain) == 1, f"{domain} moved more than once"

    # The upgrade: kvm-a's daemons restart from the current root, its state and storage kept.
    set_flavours(sandbox, kubectl, {"kvm-a": "current"})
    assert versions_of(sandbox, "kvm-a")[0].startswith("12.9.")

    drain(kubectl, "kvm-a", False)
    for domain, watch in watches.items():
        back = kubectl.wait_phase(domain, "Placed", timeout=120)
        assert back["currentHypervisor"] == "kvm-a", back
        assert running_on(sandbox, domain) == ["kvm-a"], where(sandbox, domain)
        assert incoming_migrations(sandbox.hosts, domain) == 2, "out once and back once"
        watch.assert_kept_running(after=watch.count())


def _refused(kubectl: Kubectl, name: str, reason: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: (c := kubectl.condition(name, "Blocked")).get("reason") == reason and c,
        timeout=60, what=f"{name} Blocked with {reason}")
    return found


def test_a_move_back_to_an_older_host_is_refused_unless_allowed_and_then_only_with_the_machine_type(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], fleet: list[str]) -> None:
    """Forward (previous -> current) always; backward (current -> previous) only with
    policy.allowOlderTarget, and then only for a guest the older QEMU can run: one defined
    on a previous host keeps that QEMU's machine type after moving forward, and can go back;
    one defined on the current host has a machine type the older QEMU lacks, and cannot."""
    rolled, born_new = name, f"{name}-new"
    fleet += [rolled, born_new]
    watch = boot(rolled)  # on kvm-a (previous): machine type pc-i440fx-10.0
    vmm(rolled, domain=rolled, targetHypervisor="kvm-c", mode="Live")
    assert kubectl.wait_phase(rolled, "Placed", timeout=90)["currentHypervisor"] == "kvm-c"

    kubectl.patch("vmm", rolled, {"spec": {"targetHypervisor": "kvm-b"}})
    older = _refused(kubectl, rolled, "TargetOlder")
    assert "older than" in older["message"] and "allowOlderTarget" in older["message"], older
    assert running_on(sandbox, rolled) == ["kvm-c"]
    assert incoming_migrations(sandbox.hosts, rolled) == 1, "the refusal must start nothing"

    kubectl.patch("vmm", rolled, {"spec": {"policy": {"allowOlderTarget": True}}})
    back = kubectl.wait_phase(rolled, "Placed", timeout=120)
    assert back["currentHypervisor"] == "kvm-b" and running_on(sandbox, rolled) == ["kvm-b"]
    assert incoming_migrations(sandbox.hosts, rolled) == 2
    watch.assert_kept_running(after=watch.count())

    log = sandbox.boot(sandbox.guest_spec(born_new), host=sandbox.hosts[2])
    fresh = GuestWatch(log)
    with Host(sandbox.hosts[2].uri) as conn:
        machine = conn.domain_xml(born_new).split("machine='", 1)[1].split("'", 1)[0]
    assert not machine.startswith("pc-i440fx-10."), machine
    vmm(born_new, domain=born_new, targetHypervisor="kvm-b", mode="Live",
        policy={"allowOlderTarget": True})
    missing = _refused(kubectl, born_new, "MachineTypeUnsupported")
    assert f"no machine type {machine}" in missing["message"], missing
    assert running_on(sandbox, born_new) == ["kvm-c"]
    assert incoming_migrations(sandbox.hosts, born_new) == 0
    fresh.assert_kept_running(after=fresh.count())


def test_a_post_copy_reset_into_a_libvirt_that_crashes_on_resume_is_left_split_for_a_person(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], fleet: list[str]) -> None:
    """libvirt 11.2 to 11.3 crash their target daemon on a post-copy resume. Into such a
    target (kvm-b, previous) the operator never sends one: it leaves both halves as the
    failure left them and says what a person must do; the target's daemon lives on."""
    fleet.append(name)
    target = sandbox.hosts[1]
    with Host(target.uri) as conn:
        why = recovery.blocker(policy=recovery.ResumePolicy.AUTO, target=conn.versions())
    assert why is not None and "crashes on a post-copy resume" in why, why
    sandbox.shape(target, rate_mbit=40)
    boot(name, dirty_mib=48, dirty_rate_mib=48)
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live",
        policy={"onTimeout": "PostCopy", "progressTimeoutSeconds": 3})
    wait_until(lambda: kubectl.status(name).get("effectiveMode") == "PostCopy", timeout=90,
               interval=0.1, what="the switch to post-copy")
    wait_until(lambda: where(sandbox, name).get("kvm-b") == "Running", timeout=30, interval=0.1,
               what="the target to run the VM in post-copy")
    pid_before = _daemon_pid(sandbox, 1)
    sandbox.reset_link(target)
    try:
        failed = kubectl.wait_phase(name, "Failed", timeout=90)
    finally:
        sandbox.heal(target)
    message = failed["lastFailure"]["message"]
    assert failed["lastFailure"]["reason"] == "LocationSplitPostCopy", failed["lastFailure"]
    assert why.split(" on the target")[0] in message and "--postcopy-resume" in message
    assert "Do not resume or destroy either half" in message
    # libvirt's own view: both halves held where the failure left them, neither resumed
    # alone, and the target's daemon the same process (no resume was sent to crash it).
    time.sleep(3)
    with Host(sandbox.hosts[0].uri) as src, Host(target.uri) as dst:
        source_half, target_half = src.find(name), dst.find(name)
    assert source_half is not None and source_half.pause_reason is PauseReason.POST_COPY_FAILED
    assert target_half is not None and target_half.active
    assert _daemon_pid(sandbox, 1) == pid_before
    assert incoming_migrations(sandbox.hosts, name) == 1
    split = wait_until(lambda: (c := kubectl.condition(name, "Blocked")).get("reason")
                       == "LocationSplitPostCopy" and c, timeout=60, interval=0.5,
                       what="the split to be reported as such")
    assert "post-copy resume" in split["message"], split
    assert incoming_migrations(sandbox.hosts, name) == 1


def _daemon_pid(sandbox: Sandbox, index: int) -> int | None:
    from vmtestbed import daemons

    return daemons.daemon_pid(sandbox.hosts[index])
