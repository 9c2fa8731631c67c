"""The command line on the real test bed: a move with its summary, and Ctrl-C as a safe abort."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from vmmigration.cli.common import EXIT_ABORTED
from vmmigration.core.model import PowerState
from vmtestbed.daemons import Daemon
from vmtestbed.hosts import Host


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
        cli("migrate", name, "--from", source_host.uri, "--to", target_host.uri, "--mode", "live",
            "--bandwidth", "8", "--progress-timeout", "0", "--completion-timeout-per-gib", "0",
            "--hard-timeout", "120"),
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


def test_a_recorded_hybrid_migration_is_plotted_with_its_switch_over_marked(
    boot, name: str, source_host: Daemon, target_host: Daemon, target: Host, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    from vmmigration.core.trace import Trace

    vm = boot(name, dirty_mib=32, dirty_rate_mib=32)
    recording, png = tmp_path / "move.json", tmp_path / "move.png"
    done = subprocess.run(
        cli("migrate", name, "--from", source_host.uri, "--to", target_host.uri, "--bandwidth", "8",
            "--on-timeout", "suspend", "--progress-timeout", "3", "--record", str(recording),
            "--plot", str(png)),
        capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    trace = Trace.from_json(recording.read_text())
    assert trace.outcome == "succeeded" and trace.mode == "LiveSuspended"
    assert len(trace.samples) >= 5 and max(s.dirty_rate_bytes_per_s for s in trace.samples) > 0
    switch = trace.switch_over()
    assert switch is not None and 0 < switch < trace.samples[-1].seconds + 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    again = tmp_path / "again.png"
    shown = subprocess.run(cli("report", str(recording), "--png", str(again)),
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "LiveSuspended" in shown.stdout and "switch-over" in shown.stdout
    assert again.read_bytes()[:4] == b"\x89PNG"
    assert target.summary(name).state is PowerState.RUNNING
    vm.assert_kept_running(after=vm.count())
