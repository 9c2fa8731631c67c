"""A host that accepts connections and never answers must not freeze what the operator knows."""

from __future__ import annotations

import asyncio
import threading
import time

from vmmigration.core.config import Settings
from vmmigration.core.spec import HypervisorSpec
from vmmigration.service.runtime import Runtime
from vmmigration.core.model import HostReport

from .test_runtime import FakeKube, make_runtime

HUNG = "qemu+tcp://127.0.0.9/system"


def hung_runtime(release: threading.Event, calls: list[str]) -> Runtime:
    def prober(uri: str) -> HostReport:
        calls.append(uri)
        if uri == HUNG:
            release.wait(10)  # what virConnectOpen does on a host that never answers
        return HostReport(reachable=True, probed_at=time.time())

    runtime = make_runtime(settings=Settings(probe_timeout_seconds=0.2), kube=FakeKube(),
                           prober=prober)
    runtime.hypervisor_seen(HypervisorSpec(name="hung", uri=HUNG))
    runtime.hypervisor_seen(HypervisorSpec(name="fine", uri="qemu+tcp://127.0.0.2/system"))
    return runtime


def test_a_probe_that_gets_no_answer_is_reported_unreachable_after_the_timeout() -> None:
    release, calls = threading.Event(), []
    runtime = hung_runtime(release, calls)
    try:
        started = time.monotonic()
        report = asyncio.run(runtime.probe("hung"))
        assert report is not None and not report.reachable
        assert time.monotonic() - started < 2
        assert "did not answer within 0.2 s" in report.error and "127.0.0.9" in report.error
        assert runtime.fleet.hypervisors["hung"].report == report
    finally:
        release.set()


def test_a_host_still_hanging_gets_no_second_probe_and_other_hosts_are_probed_as_usual() -> None:
    release, calls = threading.Event(), []
    runtime = hung_runtime(release, calls)
    try:
        async def probes() -> tuple[HostReport | None, ...]:
            first = await runtime.probe("hung")
            second = await runtime.probe("hung")
            fine = await runtime.probe("fine")
            return first, second, fine

        first, second, fine = asyncio.run(probes())
        assert calls.count(HUNG) == 1, "a second thread was spent on a host that still hangs"
        assert second is not None and not second.reachable and "has not answered for" in second.error
        assert fine is not None and fine.reachable
    finally:
        release.set()


def test_once_the_host_answers_again_it_is_probed_and_reachable() -> None:
    release, calls = threading.Event(), []
    runtime = hung_runtime(release, calls)
    assert not asyncio.run(runtime.probe("hung")).reachable  # type: ignore[union-attr]
    release.set()
    deadline = time.monotonic() + 5
    while runtime.probes.pending("hung") and time.monotonic() < deadline:
        time.sleep(0.01)
    again = asyncio.run(runtime.probe("hung"))
    assert again is not None and again.reachable
    assert calls.count(HUNG) == 2


def test_a_reprobe_while_a_probe_runs_waits_for_it_and_reads_the_host_afresh_instead_of_calling_it_unreachable() -> None:
    # A migration ends while the timer's probe of its target is still reading the host.
    reads: list[float] = []
    slow = threading.Event()

    def prober(uri: str) -> HostReport:
        reads.append(time.monotonic())
        if len(reads) == 1:
            slow.wait(5)  # the timer's probe, a little slow (under load, or a big host)
        return HostReport(reachable=True, probed_at=time.time())

    runtime = make_runtime(settings=Settings(probe_timeout_seconds=5), kube=FakeKube(),
                           prober=prober)
    runtime.hypervisor_seen(HypervisorSpec(name="kvm-b", uri="qemu+tcp://127.0.0.3/system"))

    async def both() -> tuple[HostReport | None, HostReport | None]:
        timer = asyncio.ensure_future(runtime.probe("kvm-b"))
        await asyncio.sleep(0.1)
        reprobe = asyncio.ensure_future(runtime.probe("kvm-b"))
        await asyncio.sleep(0.2)
        released = time.monotonic()
        slow.set()
        first, second = await timer, await reprobe
        assert reads[-1] >= released, "the re-probe reused a read from before the migration ended"
        return first, second

    first, second = asyncio.run(both())
    assert first is not None and first.reachable
    assert second is not None and second.reachable, second.error if second else None
    assert len(reads) == 2
