"""Faults on the network between the hosts and the operator, each while a real migration
runs or is about to: the migration link cut in pre-copy and in post-copy, loss on it,
the operator cut off from the source mid-job or from the target before a move, and the
two hosts partitioned from each other.

Every scenario ends with the VM running exactly once (libvirt's view and each host's
QEMU log), from its first boot, its heartbeat rising and its memory intact. The hosts
run the current flavour (libvirt 12.9), which resumes a paused post-copy; a libvirt that
cannot (11.3, the previous flavour) is tested in tests/e2e/test_mixed_fleet.py. Every
test heals the network it broke, whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from vmtestbed.hosts import Host
from vmtestbed.testbed import Sandbox
from vmmigration.core import recovery
from vmmigration.core.model import PauseReason

from ..conftest import GuestWatch
from ..e2e.conftest import Kubectl, Operator, reachable, running_on, wait_until
from .helpers import (
    STEADY,
    assert_failed_on_source,
    assert_nothing_lost,
    blocked,
    domain_state,
    libvirt_migrations,
    pause,
    started,
    steady_move,
)

pytestmark = pytest.mark.watchdog(seconds=400)

# Seconds each scenario took, printed in the run's summary (tests/faults/conftest.py).
TIMINGS: dict[str, float] = {}


@pytest.fixture(autouse=True)
def healed(sandbox: Sandbox) -> Iterator[None]:
    yield
    sandbox.heal()


@pytest.mark.parametrize("lever", ["cut", "reset"])
def test_the_migration_link_cut_during_pre_copy_fails_the_move_as_a_broken_link_and_the_retry_places_it_once(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator, lever: str) -> None:
    """A silent cut is found by the stall rule (nothing crossed for 10 s); a reset fails
    QEMU's socket at once. Both are a broken link, and neither is escalated."""
    watch = steady_move(kubectl=kubectl, boot=boot, vmm=vmm, name=name)
    target = sandbox.hosts[1]
    (sandbox.cut_link if lever == "cut" else sandbox.reset_link)(target)
    cut = time.monotonic()
    try:
        failed = kubectl.wait_phase(name, "Failed", timeout=60)
        TIMINGS[f"pre-copy {lever}: {lever} to Failed"] = time.monotonic() - cut
        assert_failed_on_source(failed)
        assert failed["lastFailure"]["reason"] == "LinkBroken", failed["lastFailure"]
        assert running_on(sandbox, name) == ["kvm-a"]
        watch.assert_kept_running(after=watch.count())
    finally:
        sandbox.heal(target)
    healed_at = time.monotonic()
    placed = assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                                 placed_on="kvm-b")
    TIMINGS[f"pre-copy {lever}: heal to Placed"] = time.monotonic() - healed_at
    assert placed["attempts"] == 2
    # Two jobs in libvirt's own records (the cut one and the retry), and no more.
    assert libvirt_migrations(sandbox, name) == 2
    assert started(kubectl, name) == 2


def _into_post_copy(*, kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch],
                    name: str, vmm: Callable[..., str], settled: bool = True) -> GuestWatch:
    """A guest dirtying faster than a 40 Mbit/s link, switched to post-copy by the policy
    and running on the target, its missing pages still on the source. (A libvirt cap
    would not hold post-copy back: its bandwidth is a separate, unlimited setting.)

    ``settled``: return only once the guest has written heartbeats from the target, so
    its first interrupts there are past (see the switch-over test below); otherwise
    return the moment libvirt reports the target running."""
    sandbox.shape(sandbox.hosts[1], rate_mbit=40)
    watch = boot(name, dirty_mib=48, dirty_rate_mib=48)
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live",
        policy={"onTimeout": "PostCopy", "progressTimeoutSeconds": 3})
    wait_until(lambda: kubectl.status(name).get("effectiveMode") == "PostCopy", timeout=90,
               interval=0.1, what="the switch to post-copy")
    wait_until(lambda: domain_state(sandbox, 1, name) == "Running", timeout=30, interval=0.1,
               what="the target to run the VM in post-copy")
    if settled:
        # The source is paused: a heartbeat written from now on was written on the target.
        watch.assert_kept_running(after=watch.count(), timeout_seconds=30)
    return watch


def _can_resume(sandbox: Sandbox) -> None:
    """These tests run on hosts whose libvirt resumes post-copy (the current flavour);
    the previous flavour's refusal is tested in tests/e2e/test_mixed_fleet.py."""
    with Host(sandbox.hosts[1].uri) as conn:
        why = recovery.blocker(policy=recovery.ResumePolicy.AUTO, target=conn.versions())
    assert why is None, f"the fault tier needs hosts that can resume post-copy: {why}"


def test_the_migration_link_cut_for_20_s_during_post_copy_is_waited_out_and_the_vm_ends_on_the_target_intact(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    """A silent cut leaves both QEMU sockets open: TCP resends what the cut swallowed once
    the link is back, and the stream carries on by itself, with no resume needed. (Failing
    the sockets early, with a short tcp_retries2, can leave the target waiting forever for
    a page it already asked for: docs/network.md, "Post-copy and a cut link".)"""
    _can_resume(sandbox)
    # Strike once the target runs the VM, not during the switch-over itself (see
    # docs/network.md: a cut inside that window wedges QEMU's incoming side).
    watch = _into_post_copy(kubectl=kubectl, sandbox=sandbox, boot=boot, name=name, vmm=vmm)
    target = sandbox.hosts[1]
    sandbox.cut_link(target)
    cut = time.monotonic()
    try:
        waiting = wait_until(
            lambda: kubectl.condition(name, "Progressing").get("reason") == "Recovering"
            and kubectl.condition(name, "Progressing"), timeout=40, interval=0.2,
            what="the status to say post-copy waits for the link")
        TIMINGS["post-copy cut: cut to Recovering shown"] = time.monotonic() - cut
        assert "link" in waiting["message"], waiting
        assert kubectl.status(name)["phase"] == "Migrating"
        pause(max(0.0, 20.0 - (time.monotonic() - cut)))
    finally:
        sandbox.heal(target)
    healed_at = time.monotonic()
    wait_until(lambda: kubectl.condition(name, "Progressing").get("reason") != "Recovering",
               timeout=60, interval=0.1, what="the status to say the stream carries data again")
    TIMINGS["post-copy cut (20 s): heal to data flowing"] = time.monotonic() - healed_at
    placed = assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                                 placed_on="kvm-b")
    TIMINGS["post-copy cut (20 s): heal to Placed"] = time.monotonic() - healed_at
    assert placed["attempts"] == 1 and placed["effectiveMode"] == "PostCopy", placed
    assert libvirt_migrations(sandbox, name) == 1


def test_the_migration_link_reset_during_post_copy_is_resumed_by_the_operator_once_it_is_back(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    """A reset fails QEMU's sockets at once, so post-copy pauses on both hosts by itself;
    the operator tries to resume it while the link is down (each try refused at once)
    and resumes it once the link is back."""
    _can_resume(sandbox)
    watch = _into_post_copy(kubectl=kubectl, sandbox=sandbox, boot=boot, name=name, vmm=vmm)
    target = sandbox.hosts[1]
    sandbox.reset_link(target)
    reset = time.monotonic()
    try:
        waiting = wait_until(
            lambda: "paused on both hosts" in kubectl.condition(name, "Progressing").get(
                "message", "") and kubectl.condition(name, "Progressing"), timeout=60,
            interval=0.2, what="the status to say the operator resumes the split post-copy")
        TIMINGS["post-copy reset: reset to Recovering shown"] = time.monotonic() - reset
        assert waiting["reason"] == "Recovering", waiting
        pause(5)  # a resume or two fails against the reset link, then backs off
    finally:
        sandbox.heal(target)
    healed_at = time.monotonic()
    placed = assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                                 placed_on="kvm-b")
    TIMINGS["post-copy reset: heal to Placed (resumed)"] = time.monotonic() - healed_at
    assert placed["effectiveMode"] == "PostCopy", placed
    assert libvirt_migrations(sandbox, name) == 1
    # The VM ran on the target from the switch to the end, the outage included.
    assert placed["degradedSeconds"] >= 5, placed
    assert placed["channels"]["postCopyPreempt"] is True, placed["channels"]


def test_the_migration_link_reset_at_the_switch_to_post_copy_leaves_the_vm_running_once_and_says_so(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    """A reset in the first moments after the switch, before the guest has run on the
    target, often wedges the target's QEMU under TCG: its vCPU fetches the pages its first
    interrupts need while holding QEMU's global lock, and waits for them for good, so
    QEMU's monitor never answers again, not even the resume's command (docs/network.md).
    Then the operator hands the VM to a person, whichever way the wedge shows: libvirt saw
    the failure and the resume waits its bounded time (20 s here) on the target; or QEMU
    wedged first, the source's job never ends, and the pause libvirt refuses is followed
    by 15 s more of silence. When the reset misses the wedge, the resume carries the VM
    on. Either way libvirt has it running on the target only, never twice, and the status
    says which of the two ends it reached."""
    _can_resume(sandbox)
    watch = _into_post_copy(kubectl=kubectl, sandbox=sandbox, boot=boot, name=name, vmm=vmm,
                            settled=False)
    target = sandbox.hosts[1]
    sandbox.reset_link(target)
    reset = time.monotonic()
    try:
        pause(3)
    finally:
        sandbox.heal(target)
    ended = wait_until(lambda: (s := kubectl.status(name)).get("phase") in ("Placed", "Failed")
                       and s, timeout=150, interval=0.5, what="the move to end, placed or handed over")
    wedged = ended["phase"] == "Failed"
    TIMINGS["post-copy reset at the switch: reset to " + (
        "handed to a person (wedged)" if wedged else "Placed (resumed)")] = time.monotonic() - reset
    # libvirt's own view, both ways: the target's half the only one running, one incoming
    # migration; the source's half paused by the post-copy, or gone.
    assert running_on(sandbox, name) == ["kvm-b"]
    assert libvirt_migrations(sandbox, name) == 1
    with Host(sandbox.hosts[0].uri) as src:
        source_half = src.find(name)
    if wedged:
        last = ended["lastFailure"]
        assert last["reason"] == "LocationSplitPostCopy", last
        assert "no longer answers" in last["message"] and "never on both" in last["message"], last
        assert source_half is not None and source_half.pause_reason in (
            PauseReason.POST_COPY_FAILED, PauseReason.POST_COPY), source_half
    else:
        assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                            placed_on="kvm-b")
        assert source_half is None or not source_half.active, source_half


@pytest.mark.parametrize("percent", [0, 2, 10])
def test_loss_on_the_migration_link_slows_the_move_and_it_still_completes_once_against_no_loss(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator, percent: int) -> None:
    watch = boot(name, dirty_mib=24, dirty_rate_mib=1)
    sandbox.lose(sandbox.hosts[1], percent=percent)
    began = time.monotonic()
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live")
    placed = assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                                 placed_on="kvm-b")
    TIMINGS[f"{percent}% loss: apply to Placed"] = time.monotonic() - began
    TIMINGS[f"{percent}% loss: libvirt job seconds"] = float(placed.get("durationSeconds") or 0)
    assert placed["attempts"] == 1
    assert libvirt_migrations(sandbox, name) == 1


def test_the_operator_cut_off_from_the_source_mid_job_says_unreachable_not_failed_and_adopts_the_job(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = steady_move(kubectl=kubectl, boot=boot, vmm=vmm, name=name)
    source = sandbox.hosts[0]
    # Only the operator loses kvm-a: the peer-to-peer job between the hosts goes on.
    sandbox.cut_from_operator(source)
    cut = time.monotonic()
    try:
        recovering = wait_until(
            lambda: "unreachable" in kubectl.condition(name, "Progressing").get("message", "")
            and kubectl.condition(name, "Progressing"), timeout=90, interval=0.2,
            # libvirt's keepalive closes the silent connections (the operator's
            # libvirt timeout, 30 s by default) before anything can be said.
            what="the status to say the source cannot be read")
        TIMINGS["management cut: cut to unreachable shown"] = time.monotonic() - cut
        assert recovering["reason"] == "Recovering", recovering
        assert kubectl.status(name)["phase"] == "Migrating", "a lost host is not a failed move"
        assert reachable(kubectl, "kvm-a").get("status") == "False"
        pause(4)
        assert kubectl.status(name)["phase"] == "Migrating"
        assert not kubectl.status(name).get("lastFailure")
    finally:
        sandbox.heal(source)
    healed_at = time.monotonic()
    placed = assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name,
                                 placed_on="kvm-b")
    TIMINGS["management cut: heal to Placed"] = time.monotonic() - healed_at
    # One job in libvirt's records, one start Event: adopted, never moved twice.
    assert placed["attempts"] == 1
    assert libvirt_migrations(sandbox, name) == 1
    assert started(kubectl, name) == 1


def test_the_operator_cut_off_from_the_target_blocks_the_move_and_nothing_moves_until_it_returns(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = boot(name)
    target = sandbox.hosts[1]
    sandbox.cut_from_operator(target)
    try:
        wait_until(lambda: reachable(kubectl, "kvm-b").get("status") == "False", timeout=40,
                   what="kvm-b to be reported unreachable")
        vmm(name, domain=name, targetHypervisor="kvm-b", **STEADY)
        assert blocked(kubectl, name)["reason"] == "TargetUnreachable"
        pause(3)
        assert running_on(sandbox, name) == ["kvm-a"]
        assert started(kubectl, name) == 0 and libvirt_migrations(sandbox, name) == 0
    finally:
        sandbox.heal(target)
    assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name, placed_on="kvm-b")
    assert libvirt_migrations(sandbox, name) == 1


def test_hosts_that_cannot_see_each_other_fail_the_move_saying_so_and_nothing_is_lost(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    watch = boot(name)
    source, target = sandbox.hosts[0], sandbox.hosts[1]
    sandbox.partition(source, target)
    began = time.monotonic()
    try:
        vmm(name, domain=name, targetHypervisor="kvm-b", **STEADY)
        failed = kubectl.wait_phase(name, "Failed", timeout=90)
        TIMINGS["partition: apply to Failed"] = time.monotonic() - began
        assert_failed_on_source(failed)
        assert failed["lastFailure"]["reason"] == "PeerUnreachable", failed["lastFailure"]
        assert "could not reach the target" in failed["lastFailure"]["message"]
        # The operator still sees both hosts: this is not a host being down.
        assert reachable(kubectl, "kvm-a").get("status") == "True"
        assert reachable(kubectl, "kvm-b").get("status") == "True"
        assert running_on(sandbox, name) == ["kvm-a"]
    finally:
        sandbox.heal()
    assert_nothing_lost(kubectl=kubectl, sandbox=sandbox, watch=watch, name=name, placed_on="kvm-b")
