"""The inventory follows events: a full read on connect, then only the domains events name,
no call to the host between events, and a full read again after a drop or the resync time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from vmmigration.core.errors import HostUnreachable
from vmmigration.core.model import DomainSummary, HostVersions, PauseReason, PowerState
from vmmigration.core.spec import HypervisorSpec
from vmmigration.service.inventory import Prober

from .test_runtime import FakeKube, make_runtime

URI = "qemu+tcp://127.0.0.2/system"


def summary(name: str, state: PowerState = PowerState.RUNNING) -> DomainSummary:
    return DomainSummary(name=name, uuid=f"uuid-{name}", state=state, pause_reason=PauseReason.NONE,
                         memory_bytes=1 << 30, persistent=True)


class EventfulHost:
    """A host whose domains a test changes, announcing each change as libvirt would."""

    def __init__(self, uri: str, domains: dict[str, DomainSummary]) -> None:
        self.uri = uri
        self.domains_now = domains
        self.calls: list[str] = []
        self.changed: Callable[[str], None] | None = None
        self.closed_callback: Callable[[], None] | None = None
        self.closed = False
        self.broken = False

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if self.broken:
            raise HostUnreachable("internal error: client socket is closed")

    def watch(self, *, changed: Callable[[str], None], closed: Callable[[], None]) -> bool:
        self.changed, self.closed_callback = changed, closed
        return True

    def versions(self) -> HostVersions:
        self._call("versions")
        return HostVersions(libvirt=11_003_000, hypervisor=9_002_000)

    def cpu_model(self) -> str:
        return "x86_64"

    def memory_total_bytes(self) -> int:
        return 8 << 30

    def free_memory_bytes(self) -> int:
        self._call("free")
        return 4 << 30

    def domains(self) -> tuple[DomainSummary, ...]:
        self._call("domains")
        return tuple(self.domains_now.values())

    def find(self, name: str) -> DomainSummary | None:
        self._call(f"find {name}")
        return self.domains_now.get(name)

    def close(self) -> None:
        self.closed = True

    # what happens on the host
    def set(self, name: str, state: PowerState | None) -> None:
        if state is None:
            self.domains_now.pop(name, None)
        else:
            self.domains_now[name] = summary(name, state)
        assert self.changed is not None
        self.changed(name)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def inventory(*, resync: float = 300.0) -> tuple[Prober, list[EventfulHost], Clock, list[tuple[str, str | None]]]:
    opened: list[EventfulHost] = []
    clock = Clock()

    def connect(uri: str, *, timeout_seconds: float) -> EventfulHost:
        host = EventfulHost(uri, {"vm": summary("vm")})
        opened.append(host)
        return host

    prober = Prober(connect=connect, clock=clock, resync_seconds=resync)
    heard: list[tuple[str, str | None]] = []
    prober.listen(lambda uri, domain: heard.append((uri, domain)))
    return prober, opened, clock, heard


def test_between_events_the_report_costs_no_call_to_the_host() -> None:
    prober, opened, clock, _ = inventory()
    assert [d.name for d in prober(URI).domains] == ["vm"]
    calls = len(opened[0].calls)
    clock.now = 100.0
    report = prober.current(URI)
    assert report is not None and [d.name for d in report.domains] == ["vm"]
    assert len(opened[0].calls) == calls


def test_an_event_is_passed_on_and_only_the_domain_it_names_is_read_again() -> None:
    prober, opened, _, heard = inventory()
    prober(URI)
    host = opened[0]
    host.domains_now["other"] = summary("other")  # no event: not seen until a full read
    host.set("vm", PowerState.SHUT_OFF)
    assert heard == [(URI, "vm")]
    host.calls.clear()
    report = prober.refresh(URI, {"vm"})
    assert report is not None
    assert {d.name: d.state for d in report.domains} == {"vm": PowerState.SHUT_OFF}
    assert host.calls == ["find vm", "free"]
    host.set("vm", None)  # undefined
    refreshed = prober.refresh(URI, {"vm"})
    assert refreshed is not None and refreshed.domains == ()


def test_a_dropped_connection_is_announced_and_the_next_report_is_a_full_read() -> None:
    prober, opened, _, heard = inventory()
    prober(URI)
    assert opened[0].closed_callback is not None
    opened[0].closed_callback()
    assert heard == [(URI, None)]
    assert prober.current(URI) is None, "events since the drop may be lost"
    assert prober.refresh(URI, {"vm"}) is None
    report = prober(URI)
    assert report.reachable and len(opened) == 2, "a fresh connection, watched anew"
    assert opened[0].closed and opened[1].changed is not None
    assert prober.current(URI) is not None


def test_the_close_of_a_connection_the_prober_replaced_is_no_news() -> None:
    prober, opened, clock, heard = inventory()
    prober(URI)
    clock.now = 301.0  # aged out: replaced by the next probe
    prober(URI)
    assert len(opened) == 2 and opened[0].closed
    assert opened[0].closed_callback is not None
    opened[0].closed_callback()
    assert heard == []
    assert prober.current(URI) is not None


def test_the_resync_time_calls_for_a_full_read_again() -> None:
    prober, opened, clock, _ = inventory(resync=60.0)
    prober(URI)
    # Each connection's resync falls in the last fifth of the interval, so hosts connected
    # together are not all read in full at once again.
    clock.now = 47.9
    assert prober.current(URI) is not None
    clock.now = 60.0
    assert prober.current(URI) is None
    prober(URI)
    assert len(opened) == 1, "the resync reads over the same connection"
    assert prober.current(URI) is not None


def test_a_read_back_that_fails_closes_the_connection_and_asks_for_a_full_probe() -> None:
    prober, opened, _, _ = inventory()
    prober(URI)
    opened[0].broken = True
    assert prober.refresh(URI, {"vm"}) is None
    assert opened[0].closed
    assert prober.current(URI) is None


def test_a_host_without_events_is_probed_in_full_every_time() -> None:
    def connect(uri: str, *, timeout_seconds: float) -> EventfulHost:
        host = EventfulHost(uri, {"vm": summary("vm")})
        host.watch = lambda **_: False  # type: ignore[method-assign]
        return host

    prober = Prober(connect=connect)
    prober.listen(lambda uri, domain: None)
    prober(URI)
    assert prober.current(URI) is None


def test_an_event_reaches_the_vmmigrations_of_its_domain_through_the_runtime() -> None:
    prober, opened, _, _ = inventory()
    runtime = make_runtime(kube=FakeKube(), prober=prober)
    runtime.hypervisor_seen(HypervisorSpec(name="kvm-a", uri=URI))
    runtime.claim(key="default/vm", domain="vm", created="2026-01-01T00:00:00Z")
    waker = runtime.fleet.waker("default/vm")

    async def scenario() -> None:
        first = await runtime.probe("kvm-a")
        assert first is not None and first.by_name["vm"][0].state is PowerState.RUNNING
        waker.clear()
        calls = len(opened[0].calls)
        # The timer's probe between events: the kept report, no call to the host.
        assert await runtime.probe("kvm-a") is not None
        assert len(opened[0].calls) == calls
        # libvirt's event thread says the domain changed.
        started = time.monotonic()
        await asyncio.to_thread(opened[0].set, "vm", PowerState.SHUT_OFF)
        await asyncio.wait_for(waker.wait(), timeout=2)
        assert time.monotonic() - started < 1
        report = runtime.fleet.hypervisors["kvm-a"].report
        assert report is not None and report.by_name["vm"][0].state is PowerState.SHUT_OFF
        # The connection drops: the next report is a full read on a new connection.
        assert opened[0].closed_callback is not None
        await asyncio.to_thread(opened[0].closed_callback)
        for _ in range(100):
            if len(opened) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(opened) == 2 and "domains" in opened[1].calls

    asyncio.run(scenario())
