"""Probes keep one connection per host, replace it when it fails or ages, and close idle ones."""

from __future__ import annotations

from typing import Any

from vmmigration.core.model import HostVersions
from vmmigration.service.inventory import Prober
from vmmigration.core.errors import HostUnreachable, VirtError


class FakeHost:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.broken = False
        self.closed = False

    def _check(self) -> None:
        if self.broken or self.closed:
            raise HostUnreachable("internal error: client socket is closed")

    def versions(self) -> HostVersions:
        self._check()
        return HostVersions(libvirt=11_003_000, hypervisor=9_002_000)

    def cpu_model(self) -> str:
        return "x86_64"

    def memory_total_bytes(self) -> int:
        return 8 << 30

    def free_memory_bytes(self) -> int:
        return 4 << 30

    def domains(self) -> tuple[Any, ...]:
        self._check()
        return ()

    def close(self) -> None:
        self.closed = True


class Hosts:
    """The connect seam: records every connection opened, and can refuse."""

    def __init__(self) -> None:
        self.opened: list[FakeHost] = []
        self.refuse: str | None = None

    def __call__(self, uri: str, *, timeout_seconds: float) -> FakeHost:
        if self.refuse:
            raise HostUnreachable(self.refuse)
        host = FakeHost(uri)
        self.opened.append(host)
        return host


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def prober(hosts: Hosts, clock: Clock) -> Prober:
    return Prober(connect=hosts, clock=clock, max_age_seconds=300)


def test_a_second_probe_reuses_the_kept_connection() -> None:
    hosts, clock = Hosts(), Clock()
    probe = prober(hosts, clock)
    assert probe("qemu+tls://a/system").reachable
    clock.now = 10
    assert probe("qemu+tls://a/system").reachable
    assert len(hosts.opened) == 1 and not hosts.opened[0].closed


def test_a_kept_connection_that_fails_is_replaced_within_the_same_probe() -> None:
    hosts, clock = Hosts(), Clock()
    probe = prober(hosts, clock)
    probe("qemu+tls://a/system")
    hosts.opened[0].broken = True  # libvirtd restarted: the old socket is gone
    report = probe("qemu+tls://a/system")
    assert report.reachable
    assert len(hosts.opened) == 2 and hosts.opened[0].closed


def test_a_host_that_cannot_be_reached_is_reported_and_nothing_is_kept() -> None:
    hosts, clock = Hosts(), Clock()
    probe = prober(hosts, clock)
    hosts.refuse = "cannot connect to qemu+tls://a/system: libvirt did not answer within 20 s"
    report = probe("qemu+tls://a/system")
    assert not report.reachable and report.error == hosts.refuse
    hosts.refuse = None
    assert probe("qemu+tls://a/system").reachable
    assert len(hosts.opened) == 1


def test_a_fresh_connection_whose_calls_fail_is_closed_and_reported() -> None:
    hosts, clock = Hosts(), Clock()

    def broken(uri: str, *, timeout_seconds: float) -> FakeHost:
        host = hosts(uri, timeout_seconds=timeout_seconds)
        host.broken = True
        return host

    report = Prober(connect=broken, clock=clock)("qemu+tls://a/system")
    assert not report.reachable and "socket is closed" in (report.error or "")
    assert hosts.opened[0].closed


def test_a_connection_older_than_the_maximum_age_is_replaced_so_rotated_credentials_apply() -> None:
    hosts, clock = Hosts(), Clock()
    probe = prober(hosts, clock)
    probe("qemu+tls://a/system")
    clock.now = 299
    probe("qemu+tls://a/system")
    assert len(hosts.opened) == 1
    clock.now = 301
    probe("qemu+tls://a/system")
    assert len(hosts.opened) == 2 and hosts.opened[0].closed


def test_a_connection_no_probe_uses_any_more_is_closed() -> None:
    hosts, clock = Hosts(), Clock()
    probe = prober(hosts, clock)
    probe("qemu+tls://old/system")  # then the Hypervisor got another URI
    for second in range(10, 400, 10):
        clock.now = second
        probe("qemu+tls://new/system")
    old = next(h for h in hosts.opened if h.uri == "qemu+tls://old/system")
    assert old.closed


def test_close_closes_every_kept_connection() -> None:
    hosts, clock = Hosts(), Clock()
    probe = prober(hosts, clock)
    probe("qemu+tls://a/system")
    probe("qemu+tls://b/system")
    probe.close()
    assert all(h.closed for h in hosts.opened)


def test_a_probe_never_raises_for_a_libvirt_failure() -> None:
    def failing(uri: str, *, timeout_seconds: float) -> FakeHost:
        raise VirtError("anything at all")

    assert Prober(connect=failing)("qemu+tls://a/system").error == "anything at all"
