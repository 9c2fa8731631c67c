"""A libvirt host that goes silent costs a bounded wait, never a stuck thread.

libvirt's client has no connect timeout and, without keepalive, waits forever
on a call to a daemon that stopped answering. Here the silence is real: a
loopback socket that accepts and never speaks, and a SIGSTOPped libvirtd. Probes
keep their connection between probes, so a restarted libvirtd must not leave
them on a dead one.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from vmmigration.core.model import MigrationRequest
from vmtestbed.daemons import Daemon
from vmtestbed.testbed import Sandbox
from vmmigration.service.engine import PrecheckFailed
from vmtestbed.hosts import Host
from vmmigration.core.errors import HostUnreachable
from vmmigration.adapters.libvirt import engine, prober

# Generous: these check that the wait ends, not how fast.
BOUND_SECONDS = 25.0


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose kernel accepts connections that nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def frozen(sandbox: Sandbox, target_host: Daemon) -> Iterator[Daemon]:
    """The target's libvirtd, stopped for the test and always thawed after it."""
    sandbox.freeze_daemon(target_host)
    try:
        yield target_host
    finally:
        sandbox.freeze_daemon(target_host, frozen=False)


def test_a_host_that_accepts_the_connection_and_never_answers_is_unreachable_after_the_timeout(
        silent_port: int) -> None:
    began = time.monotonic()
    with pytest.raises(HostUnreachable, match="did not answer within 2 s"):
        Host(f"qemu+tcp://127.0.0.1:{silent_port}/system", timeout_seconds=2)
    assert time.monotonic() - began < BOUND_SECONDS


def test_a_libvirtd_that_hangs_after_the_connection_is_open_fails_the_next_call(
        sandbox: Sandbox, target_host: Daemon) -> None:
    with Host(target_host.uri, timeout_seconds=3) as host:
        assert host.versions().libvirt > 0
        sandbox.freeze_daemon(target_host)
        try:
            began = time.monotonic()
            with pytest.raises(HostUnreachable, match="keepalive|closed"):
                host.domains()
            assert time.monotonic() - began < BOUND_SECONDS
        finally:
            sandbox.freeze_daemon(target_host, frozen=False)
    # Thawed, it answers again on a new connection.
    with Host(target_host.uri, timeout_seconds=3) as host:
        assert host.versions().libvirt > 0


def test_a_hung_target_refuses_the_migration_as_unreachable_and_nothing_moves(
        boot, name: str, source_host: Daemon, source: Host, frozen: Daemon) -> None:  # type: ignore[no-untyped-def]
    vm = boot(name)
    impatient = engine(libvirt_timeout_seconds=3)
    with pytest.raises(PrecheckFailed) as refused:
        impatient.migrate(MigrationRequest(domain=name, source_uri=source_host.uri, target_uri=frozen.uri))
    assert refused.value.reasons == ["TargetUnreachable"]
    assert "did not answer within 3 s" in str(refused.value)
    assert source.summary(name).state.value == "Running"
    vm.assert_kept_running(after=vm.count())


def test_a_probe_keeps_its_connection_and_reports_a_frozen_host_unreachable_within_the_timeout(
        sandbox: Sandbox, target_host: Daemon) -> None:
    probe = prober(timeout_seconds=3)
    try:
        assert probe(target_host.uri).reachable
        sandbox.freeze_daemon(target_host)
        try:
            began = time.monotonic()
            report = probe(target_host.uri)
            assert not report.reachable
            assert "keepalive" in (report.error or "") or "did not answer" in (report.error or ""), report
            assert time.monotonic() - began < BOUND_SECONDS
        finally:
            sandbox.freeze_daemon(target_host, frozen=False)
        assert probe(target_host.uri).reachable
    finally:
        probe.close()


def test_a_probe_after_libvirtd_restarted_is_reachable_at_once_on_a_fresh_connection(
        sandbox: Sandbox, target_host: Daemon) -> None:
    probe = prober(timeout_seconds=10)
    try:
        before = probe(target_host.uri)
        assert before.reachable
        sandbox.kill_daemon(target_host)
        sandbox.start_daemon(target_host)
        after = probe(target_host.uri)
        assert after.reachable, after.error
        assert after.libvirt_version == before.libvirt_version
    finally:
        probe.close()
