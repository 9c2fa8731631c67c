"""A live migration that cannot converge: hybrid suspend, post-copy, abort by policy or on request.

The guest rewrites its memory faster than the bandwidth cap lets it be
copied, so without escalation the job would never end.
"""

from __future__ import annotations

import threading

import pytest

from vmmigration.core.model import (
    EffectiveMode,
    MigrationResult,
    Mode,
    OnTimeout,
    PauseReason,
    Policy,
    PowerState,
)
from vmmigration.core.location import Location
from vmtestbed.daemons import Daemon
from vmmigration.core.reasons import Reason
from vmmigration.service.engine import MigrationCancelled, MigrationError, MigrationTimedOut, Update
from vmmigration.adapters.libvirt import connect, engine
from vmtestbed.hosts import Host

from .helpers import request

# 48 MiB rewritten at 48 MiB/s against an 8 MiB/s link: hopeless live.
HOT = {"dirty_mib": 48, "dirty_rate_mib": 48}


def stuck_policy(on_timeout: OnTimeout) -> Policy:
    return Policy(on_timeout=on_timeout, progress_timeout_seconds=3, bandwidth_mib_per_s=8,
                  completion_timeout_seconds_per_gib=0, hard_timeout_seconds=120)


def test_hybrid_suspends_the_source_and_the_vm_resumes_running_on_the_target(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, **HOT)
    notes: list[str] = []
    result = engine().migrate(
        request(name, source_host, target_host, mode=Mode.LIVE, policy=stuck_policy(OnTimeout.SUSPEND)),
        on_update=lambda u: notes.append(u.note) if u.note else None,
    )
    at_move = vm.count()

    assert result.mode is EffectiveMode.LIVE_SUSPENDED
    assert any("suspended the source" in n for n in notes)
    moved = target.summary(name)
    # The trap: a source suspended mid-migration must not arrive paused.
    assert moved.state is PowerState.RUNNING, f"arrived {moved.state} ({moved.pause_reason})"
    assert source.find(name) is None
    assert result.downtime_ms is not None and result.downtime_ms > 0
    vm.assert_kept_running(after=at_move)


def test_post_copy_finishes_a_migration_that_cannot_converge_live(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, **HOT)
    result = engine().migrate(
        request(name, source_host, target_host, mode=Mode.LIVE, policy=stuck_policy(OnTimeout.POST_COPY))
    )
    at_move = vm.count()

    assert result.mode is EffectiveMode.POST_COPY
    assert result.bytes_transferred > 0
    moved = target.summary(name)
    assert (moved.state, moved.pause_reason) == (PowerState.RUNNING, PauseReason.NONE)
    assert source.find(name) is None
    vm.assert_kept_running(after=at_move)


def test_abort_on_timeout_leaves_the_vm_running_on_the_source(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, **HOT)
    with pytest.raises(MigrationTimedOut, match="did not converge") as caught:
        engine().migrate(
            request(name, source_host, target_host, mode=Mode.LIVE, policy=stuck_policy(OnTimeout.ABORT))
        )
    at_abort = vm.count()

    assert caught.value.location is Location.SOURCE
    assert source.summary(name).state is PowerState.RUNNING
    assert target.find(name) is None, "an aborted incoming domain was left on the target"
    vm.assert_kept_running(after=at_abort)


def test_an_abort_on_request_leaves_the_vm_running_on_the_source(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, **HOT)
    cancel = threading.Event()

    def abort_once_copying(update: Update) -> None:
        if update.progress is not None and update.progress.data_processed > 8 * 1024 * 1024:
            cancel.set()

    # Suspend as the escalation, with no trigger that could fire first: only the request stops it.
    policy = Policy(on_timeout=OnTimeout.SUSPEND, progress_timeout_seconds=0, bandwidth_mib_per_s=8,
                    completion_timeout_seconds_per_gib=0, hard_timeout_seconds=120)
    with pytest.raises(MigrationCancelled, match="aborted on request"):
        engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE, policy=policy),
                         on_update=abort_once_copying, cancel=cancel)
    at_abort = vm.count()

    assert source.summary(name).state is PowerState.RUNNING
    assert target.find(name) is None
    vm.assert_kept_running(after=at_abort)


def test_an_abort_from_outside_is_reported_as_such_not_as_a_timeout(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, **HOT)
    aborted = threading.Event()

    def admin_aborts_once_copying(update: Update) -> None:
        # What an admin's `virsh domjobabort` does: libvirt's job is cancelled behind our back.
        if (update.progress is not None and update.progress.data_processed > 8 * 1024 * 1024
                and not aborted.is_set()):
            aborted.set()
            with Host(source_host.uri) as admin:
                admin.abort_job(name)

    # No trigger of ours can fire: only the outside abort stops it.
    policy = Policy(on_timeout=OnTimeout.ABORT, progress_timeout_seconds=0, bandwidth_mib_per_s=8,
                    completion_timeout_seconds_per_gib=0, hard_timeout_seconds=120)
    with pytest.raises(MigrationError) as failed:
        engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE, policy=policy),
                         on_update=admin_aborts_once_copying)
    assert aborted.is_set()
    assert failed.value.reason is Reason.ABORTED_OUTSIDE, failed.value
    assert not isinstance(failed.value, (MigrationTimedOut, MigrationCancelled))
    assert "aborted outside vmmigration" in str(failed.value)
    assert "converge" not in str(failed.value) and "policy" not in str(failed.value)
    assert failed.value.location is Location.SOURCE
    at_abort = vm.count()
    assert source.summary(name).state is PowerState.RUNNING
    assert target.find(name) is None
    vm.assert_kept_running(after=at_abort)


def test_an_abort_after_the_hybrid_suspend_resumes_the_source(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, **HOT)
    cancel = threading.Event()

    def abort_after_suspend(update: Update) -> None:
        if update.mode is EffectiveMode.LIVE_SUSPENDED:
            cancel.set()

    # After the suspend, 48 MiB of dirty pages at 8 MiB/s: seconds for the abort to land in.
    with pytest.raises(MigrationCancelled):
        engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE,
                                 policy=stuck_policy(OnTimeout.SUSPEND)),
                         on_update=abort_after_suspend, cancel=cancel)
    at_abort = vm.count()

    # A VM is never left paused.
    assert source.summary(name).state is PowerState.RUNNING
    assert target.find(name) is None
    vm.assert_kept_running(after=at_abort)


def test_a_post_copy_paused_on_purpose_is_resumed_and_completes_on_the_target(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    """What the monitor does to a post-copy whose stream has carried nothing for 45 s:
    libvirt's post-copy abort pauses both halves, and the engine's resume carries the VM
    on to the target over fresh streams."""
    vm = boot(name, **HOT)
    switched = threading.Event()
    results: list[object] = []
    waits: list[str] = []

    def seen(update: Update) -> None:
        if update.mode is EffectiveMode.POST_COPY:
            switched.set()
        if update.waiting_for_link:
            waits.append(update.waiting_for_link)

    def move() -> None:
        try:
            results.append(engine().migrate(
                request(name, source_host, target_host, mode=Mode.LIVE,
                        policy=stuck_policy(OnTimeout.POST_COPY)),
                on_update=seen))
        except Exception as error:  # handed to the test's thread
            results.append(error)

    mover = threading.Thread(target=move, daemon=True)
    mover.start()
    assert switched.wait(90), "never switched to post-copy"
    # Past the switch-over window: the guest has written heartbeats from the target.
    vm.assert_kept_running(after=vm.count(), timeout_seconds=30)
    with connect(source_host.uri) as host:
        host.pause_post_copy(name)
    mover.join(120)
    assert results, "the move did not end"
    result = results[0]
    assert isinstance(result, MigrationResult), result
    assert result.mode is EffectiveMode.POST_COPY
    assert any("paused on both hosts" in w and "resuming it" in w for w in waits), waits
    assert result.degraded_seconds is not None and result.degraded_seconds > 0
    assert result.channels is not None and result.channels.preempt
    assert source.find(name) is None
    assert target.summary(name).state is PowerState.RUNNING
    vm.assert_kept_running(after=vm.count())
