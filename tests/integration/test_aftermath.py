"""After the fact: where the VM is and whether a job still runs, even when the client died."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from vmmigration.core.model import (
    EffectiveMode,
    JobProgress,
    MigrationRequest,
    Mode,
    OnTimeout,
    Policy,
    PowerState,
)
from vmmigration.core.location import Location
from vmtestbed.daemons import Daemon
from vmmigration.service import aftermath
from vmmigration.service.engine import Detached, NoJobToAdopt, PrecheckFailed
from vmmigration.adapters.libvirt import engine
from vmtestbed.hosts import Host

_IDLE = JobProgress(elapsed_seconds=0)


def wait_for(predicate, timeout_seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def crash_mid_migration(name: str, source_host: Daemon, target_host: Daemon, source: Host,
                        *options: str) -> None:
    """Start ``vmmigration migrate`` and kill -9 it once memory is being copied."""
    client = subprocess.Popen(
        [sys.executable, "-m", "vmmigration.cli", "migrate", name, "--from", source_host.uri,
         "--to", target_host.uri, "--json", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        wait_for(lambda: (source.job(name) or _IDLE).data_total > 0, 30, "memory to be copying")
        os.killpg(client.pid, signal.SIGKILL)  # the crash
    finally:
        client.wait(10)


def test_a_migration_whose_client_was_killed_is_seen_in_flight_and_then_on_the_target(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    # Converges, but slowly: 24 MiB/s of link against 4 MiB/s of dirtying.
    vm = boot(name, dirty_mib=16, dirty_rate_mib=4)
    crash_mid_migration(name, source_host, target_host, source, "--bandwidth", "24")

    during = aftermath.inspect(domain=name, source=source, target=target)
    # Peer-to-peer: the source daemon drives the job, so it outlives its client.
    assert during.job_active, "a restarted process must see the job and not start a second one"
    assert during.location is Location.SOURCE
    assert during.job is not None and during.job.data_total > 0

    wait_for(lambda: source.job(name) is None, 60, "the orphaned job to finish")
    after = aftermath.inspect(domain=name, source=source, target=target)
    assert after.location is Location.TARGET
    assert not after.job_active
    assert after.final is not None and after.final.downtime_ms is not None
    vm.assert_kept_running(after=vm.count())


def test_inspect_reports_an_unreachable_host_instead_of_failing(
    boot, name: str, source: Host  # type: ignore[no-untyped-def]
) -> None:
    boot(name)
    found = aftermath.inspect(domain=name, source=source, target=None)
    assert found.location is Location.SOURCE
    assert not found.job_active


def test_a_restarted_process_adopts_the_orphaned_job_and_escalates_it_to_completion(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    # Cannot converge: the dead client's escalation died with it.
    vm = boot(name, dirty_mib=48, dirty_rate_mib=48)
    crash_mid_migration(name, source_host, target_host, source, "--mode", "live", "--bandwidth", "8",
                        "--progress-timeout", "0", "--completion-timeout-per-gib", "0")

    # A second migration is refused while the orphan still moves the VM.
    with pytest.raises(PrecheckFailed) as refused:
        engine().migrate(MigrationRequest(domain=name, source_uri=source_host.uri,
                                          target_uri=target_host.uri))
    assert refused.value.reasons == ["MigrationInProgress"]

    policy = Policy(on_timeout=OnTimeout.SUSPEND, progress_timeout_seconds=3,
                    completion_timeout_seconds_per_gib=0, hard_timeout_seconds=120)
    result = engine().adopt(MigrationRequest(domain=name, source_uri=source_host.uri,
                                             target_uri=target_host.uri, policy=policy))
    at_move = vm.count()

    assert result.mode is EffectiveMode.LIVE_SUSPENDED
    assert target.summary(name).state is PowerState.RUNNING
    assert aftermath.inspect(domain=name, source=source, target=target).location is Location.TARGET
    vm.assert_kept_running(after=at_move)


def test_adopting_when_no_job_runs_changes_nothing_and_says_where_the_vm_is(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host  # type: ignore[no-untyped-def]
) -> None:
    boot(name)
    with pytest.raises(NoJobToAdopt, match="it is on the source") as caught:
        engine().adopt(MigrationRequest(domain=name, source_uri=source_host.uri,
                                        target_uri=target_host.uri))
    assert caught.value.found.location is Location.SOURCE
    assert source.summary(name).state is PowerState.RUNNING


def test_a_detached_watch_lets_go_without_touching_the_job_and_an_adopter_finishes_it(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    # An operator replica paused by peering lets go; its successor adopts.
    vm = boot(name, dirty_mib=48, dirty_rate_mib=48)
    detach = threading.Event()
    raised: list[BaseException] = []
    request = MigrationRequest(domain=name, source_uri=source_host.uri, target_uri=target_host.uri,
                               mode=Mode.LIVE,
                               policy=Policy(bandwidth_mib_per_s=8, progress_timeout_seconds=3,
                                             on_timeout=OnTimeout.ABORT))

    def first_watcher() -> None:
        try:
            engine().migrate(request, detach=detach)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=first_watcher, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while source.job(name) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    detach.set()
    thread.join(10)
    assert raised and isinstance(raised[0], Detached)
    # Its policy would have aborted this non-converging job after 3 s; detached, it did not.
    time.sleep(5)
    assert source.job(name) is not None, "the detached watcher still acted on the job"

    result = engine().adopt(dataclasses.replace(request, policy=Policy(
        on_timeout=OnTimeout.SUSPEND, progress_timeout_seconds=2, bandwidth_mib_per_s=8)))
    assert result.mode is EffectiveMode.LIVE_SUSPENDED
    assert target.summary(name).state is PowerState.RUNNING
    vm.assert_kept_running(after=vm.count())
