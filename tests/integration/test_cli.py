"""The command line on the real test bed: a move with its summary, and Ctrl-C as a safe abort."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from vmmigration.cli import EXIT_ABORTED
from vmmigration.model import PowerState
from vmmigration.sandbox.daemons import Daemon
from vmmigration.virt.libvirt_host import Host


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vmmigration.cli", *args]


def test_migrate_moves_the_vm_and_prints_a_summary(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name)
    done = subprocess.run(cli("migrate", name, "--from", source_host.uri, "--to", target_host.uri),
                          capture_output=True, text=True, timeout=120)
    at_move = vm.count()

    assert done.returncode == 0, done.stderr
    assert f"{name} moved" in done.stdout
    assert "downtime" in done.stdout and "bytes moved" in done.stdout
    assert target.summary(name).state is PowerState.RUNNING
    assert source.find(name) is None
    vm.assert_kept_running(after=at_move)


def test_ctrl_c_aborts_the_migration_and_the_vm_keeps_running_on_the_source(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, dirty_mib=48, dirty_rate_mib=48)
    client = subprocess.Popen(
        cli("migrate", name, "--from", source_host.uri, "--to", target_host.uri, "--bandwidth", "8",
            "--progress-timeout", "0", "--completion-timeout-per-gib", "0", "--hard-timeout", "120"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ((job := source.job(name)) and job.data_processed > 0):
        time.sleep(0.2)
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=60)
    at_abort = vm.count()

    assert client.returncode == EXIT_ABORTED, err
    assert "aborted on request" in err
    assert source.summary(name).state is PowerState.RUNNING
    assert target.find(name) is None
    vm.assert_kept_running(after=at_abort)
