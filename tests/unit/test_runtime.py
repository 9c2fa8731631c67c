"""The per-VMMigration loop with its seams faked: what it writes, in which order, and when not."""

from __future__ import annotations

import asyncio
import threading

from vmmigration.core import plans
from vmmigration.core.model import MIB, Policy
from vmmigration.core.plans import IN_USE_MEMORY, LINK_UNKNOWN, InUse, LinkRate, Measured, MovePlan
import time
from collections.abc import Callable
from typing import Any

from vmmigration.core import status
from vmmigration.core.config import Settings
from vmmigration.core.spec import HypervisorSpec
from vmmigration.service.runtime import Runtime
from vmmigration.core.model import EffectiveMode, HostReport, MigrationRequest, MigrationResult, Mode
from vmmigration.core.prechecks import Finding
from vmmigration.adapters.prometheus import Metrics
from vmmigration.service.engine import Engine, PrecheckFailed

from .conftest import domain

KEY = "default/web"


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch_vmmigration_status(self, *, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)

    def read_secret(self, *, namespace: str, name: str) -> dict[str, bytes]:
        raise AssertionError("no Secret in these tests")

    def phases(self) -> list[str]:
        return [p["phase"] for p in self.patches if "phase" in p]


class NeverStopped:
    def __bool__(self) -> bool:
        return False

    def is_deleted(self) -> bool:
        return False

    async def until_stopped(self) -> None:
        await asyncio.Event().wait()


def no_libvirt(uri: str, *, timeout_seconds: float) -> Any:
    raise AssertionError(f"these tests reach no libvirt host ({uri})")


def make_runtime(*, kube: Any, settings: Settings | None = None, engine: Engine | None = None,
                 prober: Callable[[str], HostReport] | None = None,
                 clock: Callable[[], float] = time.time,
                 metrics: Metrics | None = None) -> Runtime:
    """A runtime on fakes: no libvirt, no API server, a registry of its own."""
    exported = metrics or Metrics.isolated()
    runtime = Runtime(settings=settings or Settings(), kube=kube, post_event=lambda *a, **k: None,
                      engine=engine or Engine(connect=no_libvirt),
                      prober=prober or (lambda uri: HostReport(reachable=False, probed_at=0.0)),
                      metrics=exported, clock=clock)
    exported.watch(runtime.limiter)  # as the kopf handlers wire it
    return runtime


class FakeEngine(Engine):
    """Moves the VM in the fake inventory, and records what the status said when it was asked."""

    def __init__(self, hosts: dict[str, list[str]], kube: FakeKube, *, refuse: str | None = None) -> None:
        super().__init__(connect=no_libvirt)
        self.hosts = hosts
        self.kube = kube
        self.refuse = refuse
        self.phase_at_start: list[str] = []

    def check(self, request: MigrationRequest, *, measure: bool = False) -> MovePlan:
        if self.refuse:
            raise PrecheckFailed([Finding(self.refuse, f"{self.refuse} on the target")])
        measured = Measured(memory_bytes=MIB << 7, in_use=InUse(bytes=MIB << 7, source=IN_USE_MEMORY),
                            link=LinkRate(bytes_per_s=None, source=LINK_UNKNOWN), dirty=None)
        return plans.make(requested=request.mode, policy=request.policy, measured=measured)

    def migrate(self, request: MigrationRequest, *, on_update: Callable[..., None] | None = None,
                cancel: threading.Event | None = None,
                detach: threading.Event | None = None,
                planned: MovePlan | None = None,
                retune: Callable[[], Policy | None] | None = None) -> MigrationResult:
        self.phase_at_start.append(self.kube.phases()[-1])
        source = next(h for h, uri in URIS.items() if uri == request.source_uri)
        target = next(h for h, uri in URIS.items() if uri == request.target_uri)
        self.hosts[source].remove(request.domain)
        self.hosts[target].append(request.domain)
        return MigrationResult(domain=request.domain, mode=EffectiveMode.LIVE, duration_seconds=2.5,
                               downtime_ms=40, bytes_transferred=1000, final=None)


URIS = {"kvm-a": "test:///a", "kvm-b": "test:///b"}


def runtime_with(hosts: dict[str, list[str]], *, refuse: str | None = None) -> tuple[Runtime, FakeKube, FakeEngine]:
    kube = FakeKube()
    engine = FakeEngine(hosts, kube, refuse=refuse)

    def prober(uri: str) -> HostReport:
        name = next(h for h, u in URIS.items() if u == uri)
        return HostReport(reachable=True, probed_at=0.0, memory_free_bytes=2**33,
                          domains=tuple(domain(d) for d in hosts[name]))

    runtime = make_runtime(kube=kube, engine=engine, clock=lambda: 1000.0, prober=prober)
    for name, uri in URIS.items():
        runtime.hypervisor_seen(HypervisorSpec(name=name, uri=uri))
    return runtime, kube, engine


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"domain": "web-01", "targetHypervisor": "kvm-b", **spec}}


def run(runtime: Runtime, resource: dict[str, Any]) -> None:
    async def passes() -> None:
        for name in URIS:
            await runtime.probe(name)
        await runtime.pass_once(key=KEY, body=resource, stopped=NeverStopped())
    asyncio.run(passes())


def test_the_attempt_is_recorded_before_the_engine_is_asked_to_migrate() -> None:
    runtime, kube, engine = runtime_with({"kvm-a": ["web-01"], "kvm-b": []})
    run(runtime, body())
    assert kube.phases() == ["Validating", "Migrating", "Placed"]
    assert engine.phase_at_start == ["Migrating"]
    migrating = kube.patches[1]
    assert migrating["attempt"]["source"] == "kvm-a" and migrating["attempt"]["target"] == "kvm-b"
    placed = kube.patches[-1]
    assert placed["attempt"] is None and placed["downtimeMs"] == 40
    assert placed["currentHypervisor"] == "kvm-b"


def test_a_decision_that_changes_nothing_writes_nothing() -> None:
    runtime, kube, _ = runtime_with({"kvm-a": [], "kvm-b": ["web-01"]})
    resource = body()
    run(runtime, resource)
    assert kube.phases() == ["Placed"]
    run(runtime, resource)
    run(runtime, resource)
    assert len(kube.patches) == 1


def test_a_refused_pre_check_blocks_and_waiting_for_the_retry_keeps_it_blocked() -> None:
    runtime, kube, engine = runtime_with({"kvm-a": ["web-01"], "kvm-b": []}, refuse="InsufficientMemory")
    resource = body()
    run(runtime, resource)
    assert kube.phases() == ["Validating", "Failed"]
    assert engine.phase_at_start == [], "nothing may move after a refused pre-check"
    failed = kube.patches[-1]
    assert failed["lastFailure"]["reason"] == "InsufficientMemory"
    assert failed["nextAttemptTime"] == status.timestamp(1000.0 + Settings().retry_base_seconds)
    run(runtime, resource)  # inside the backoff: a Wait, which rewrites Ready only
    conditions = {c["type"]: c for c in kube.patches[-1]["conditions"]}
    assert conditions["Ready"]["reason"] == "Backoff"
    assert conditions["Blocked"]["status"] == "True"
    assert conditions["Blocked"]["reason"] == "InsufficientMemory"


def test_a_quiet_host_out_of_maintenance_gets_no_status_write_until_its_heartbeat() -> None:
    """Its Drained condition must not make every probe look like a change (it did: 6 writes a
    minute per host, the most of the operator's steady API writes at 50 hosts)."""
    now = [1000.0]
    runtime = make_runtime(kube=FakeKube(), clock=lambda: now[0])
    runtime.hypervisor_seen(HypervisorSpec(name="kvm-a", uri="test:///default"))

    async def at(seconds: float, previous: dict[str, Any]) -> dict[str, Any]:
        now[0] = seconds
        report = HostReport(reachable=True, probed_at=seconds, memory_free_bytes=4 << 30)
        return await runtime.hypervisor_status("kvm-a", previous=previous, generation=1, report=report)

    first = asyncio.run(at(1000.0, {}))
    assert {c["type"] for c in first["conditions"]} == {"Reachable", "Drained"}
    assert asyncio.run(at(1010.0, first)) == {}
    heartbeat = runtime.settings.inventory_resync_seconds
    assert set(asyncio.run(at(1000.0 + heartbeat, first))) == {"lastProbeTime"}
