"""After the fact: where the VM is and whether a job still runs, even when the client died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from vmmigration.model import JobProgress
from vmmigration.placement import Location
from vmmigration.sandbox.daemons import Daemon
from vmmigration.virt import aftermath
from vmmigration.virt.libvirt_host import Host

_IDLE = JobProgress(elapsed_seconds=0)


def wait_for(predicate, timeout_seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_migration_whose_client_was_killed_is_seen_in_flight_and_then_on_the_target(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    # Converges, but slowly: 24 MiB/s of link against 4 MiB/s of dirtying.
    vm = boot(name, dirty_mib=16, dirty_rate_mib=4)
    client = subprocess.Popen(
        [sys.executable, "-m", "vmmigration.cli", "migrate", name, "--from", source_host.uri,
         "--to", target_host.uri, "--bandwidth", "24", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        wait_for(lambda: (source.job(name) or _IDLE).data_total > 0, 30, "memory to be copying")
        os.killpg(client.pid, signal.SIGKILL)  # the crash
    finally:
        client.wait(10)

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
