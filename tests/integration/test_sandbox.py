"""The test bed itself: it survives a killed run and stops only what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vmmigration.core.config import CACHE
from vmtestbed import daemons
from vmtestbed.testbed import Sandbox
from vmtestbed.hosts import Host


def test_up_recovers_from_a_killed_run_and_down_stops_only_its_own_processes() -> None:
    box = Sandbox(root=CACHE / "leftover-sandbox", count=2, subnet=3)
    box.up()
    hosts = box.hosts
    box.boot(box.guest_spec("leftover"), host=hosts[0])
    orphan_qemu = daemons.qemu_pids(hosts[0])
    assert orphan_qemu, "the guest's QEMU has no pid file"

    # A killed run: the daemons die hard, their QEMU lives on, state stays behind,
    # and one stale pid file now names an unrelated process (the PID was reused).
    for daemon in hosts:
        os.kill(int(daemon.pid_file.read_text()), signal.SIGKILL)
    decoy = subprocess.Popen(["sleep", "300"])
    try:
        hosts[1].pid_file.write_text(str(decoy.pid))
        time.sleep(0.5)
        status = box.up()
        assert all(h["up"] for h in status["hosts"])  # type: ignore[index, union-attr]
        for pid in orphan_qemu:
            assert not _running(pid), f"leftover QEMU {pid} was not stopped"
        assert decoy.poll() is None, "up killed a process the test bed did not start"
        with Host(hosts[0].uri) as host:
            assert host.domains() == (), "a fresh test bed must not inherit old domains"

        stopped = box.down()
        assert len([s for s in stopped if s.startswith("libvirtd")]) == 2
        assert decoy.poll() is None, "down killed a process the test bed did not start"
        assert not any(_answers(d.uri) for d in hosts), "a daemon survived down"
    finally:
        decoy.kill()
        box.down()


def test_a_test_bed_that_fails_half_way_up_stops_the_daemons_it_had_started(
        monkeypatch: pytest.MonkeyPatch) -> None:
    box = Sandbox(root=CACHE / "leftover-sandbox", count=2, subnet=3)

    def broken(_self: Sandbox, _daemon: daemons.Daemon) -> None:
        assert daemons.daemon_pid(box.hosts[0]) is not None, "the first daemon should be up by now"
        raise RuntimeError("a step after the first daemon started failed")

    monkeypatch.setattr(Sandbox, "_prime_capabilities", broken)
    try:
        with pytest.raises(RuntimeError, match="half|after the first daemon"):
            box.up()
        assert all(daemons.daemon_pid(d) is None for d in box.hosts), "a daemon outlived the failed up"
        assert not any(_answers(d.uri) for d in box.hosts)
    finally:
        box.down()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _answers(uri: str) -> bool:
    from vmmigration.core.errors import HostUnreachable

    try:
        with Host(uri):
            return True
    except HostUnreachable:
        return False
