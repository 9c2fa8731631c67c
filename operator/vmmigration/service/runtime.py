"""The operator's application: one object the kopf handlers talk to.

It wires the parts, each with one job: the :class:`~vmmigration.service.fleet.Fleet`
(hypervisors, claims, slots, wake-ups), the
:class:`~vmmigration.service.probes.Probes`, the per-VMMigration
:class:`~vmmigration.service.loop.Loop` and the
:class:`~vmmigration.service.driver.Driver` of one migration. Every seam to
the outside (libvirt, the Kubernetes API, metrics) is given to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from vmmigration.core import status
from vmmigration.core.config import Settings
from vmmigration.core.limiter import Limiter, Limits
from vmmigration.core.model import HostReport
from vmmigration.core.spec import HypervisorSpec
from vmmigration.service.drains import Drains
from vmmigration.service.driver import Driver
from vmmigration.service.engine import Engine
from vmmigration.service.fleet import Fleet
from vmmigration.service.loop import Loop, StatusWriter
from vmmigration.service.ports import EventPoster, Kube, Metrics, Probe, Stopped
from vmmigration.service.probes import Probes
from vmmigration.service.rebalancer import Rebalancer
from vmmigration.service.renewal import Renewal


log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, *, settings: Settings, kube: Kube, post_event: EventPoster, engine: Engine,
                 prober: Probe, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.fleet = Fleet(limits=Limits(max_concurrent=settings.max_concurrent_migrations))
        self.probes = Probes(fleet=self.fleet, kube=kube, metrics=metrics, prober=prober,
                             clock=clock, timeout_seconds=settings.probe_timeout_seconds,
                             namespace=settings.namespace,
                             credentials_dir=settings.credentials_dir)
        self.driver = Driver(fleet=self.fleet, probes=self.probes, engine=engine,
                             metrics=metrics, settings=settings, clock=clock)
        self.loop = Loop(fleet=self.fleet, probes=self.probes, driver=self.driver,
                         writer=StatusWriter(kube=kube, metrics=metrics), post_event=post_event,
                         metrics=metrics, settings=settings, clock=clock)
        self.drains = Drains(kube=kube, post_event=post_event, metrics=metrics,
                             namespace=settings.namespace)
        self.rebalancer = Rebalancer(fleet=self.fleet, kube=kube, post_event=post_event,
                                     metrics=metrics, clock=clock)
        self.renewal = Renewal(fleet=self.fleet, probes=self.probes, engine=engine,
                               interval_seconds=settings.measure_interval_seconds)

    @property
    def limiter(self) -> Limiter:
        return self.fleet.limiter

    # ---- what kopf tells us --------------------------------------------------

    def hypervisor_seen(self, spec: HypervisorSpec) -> None:
        if self.fleet.seen(spec):
            self.probes.forget_credentials(spec.name)

    def hypervisor_gone(self, name: str) -> None:
        self.metrics.hypervisor_gone(name)
        self.fleet.gone(name)

    def claim(self, *, key: str, domain: str | None, created: str) -> None:
        self.fleet.claim(key=key, domain=domain, created=created)

    def release(self, key: str) -> None:
        self.fleet.release(key)
        self.loop.forget(key)
        self.metrics.forget(key)

    # ---- hypervisors -----------------------------------------------------------

    async def probe(self, name: str) -> HostReport | None:
        return await self.probes.probe(name)

    async def hypervisor_status(self, name: str, *, previous: Mapping[str, Any], generation: int,
                                report: HostReport, owner_uid: str = "", body: Any = None) -> dict[str, Any]:
        """The merge patch for a Hypervisor's status after a probe (empty: nothing changed),
        with its drain's pass carried out first (core.drain)."""
        inbound, outbound = self.fleet.limiter.load(name)
        now = self.clock()
        # With events the report is current between writes: a heartbeat per resync is enough
        # to show the operator still follows the host (500 hosts at 60 s: 8 writes a second).
        heartbeat = (self.settings.inventory_resync_seconds if self.settings.inventory_events
                     else 60.0)
        new = status.hypervisor(previous=previous, report=report, generation=generation,
                                now=now, inbound=inbound, outbound=outbound,
                                heartbeat_seconds=heartbeat)
        view = self.fleet.hypervisors.get(name)
        if view is not None:
            drained = await self.drains.pass_once(spec=view.spec, owner_uid=owner_uid, body=body,
                                                  report=report, previous=previous, now=now)
            new = status.with_drain(new, previous=previous, fields=drained.fields,
                                    drained=drained.drained, generation=generation, now=now)
            new = status.stamped(new, previous=previous, probed_at=report.probed_at, now=now,
                                 heartbeat_seconds=heartbeat)
        patch = status.merge_patch(previous, new)
        if patch:
            self.metrics.status_patched("hypervisors")
        return patch

    async def rebalance(self, host: str) -> None:
        """Rebalance the pool ``host`` leads, if any (see service.rebalancer)."""
        try:
            await self.rebalancer.after_probe(host)
        except Exception:  # one pool's trouble must not stop the host's own status
            log.exception("rebalancing after the probe of %s failed; trying again after the next", host)

    async def renew_readings(self, name: str) -> int:
        """Renew the dirty-rate readings due on Hypervisor ``name`` (see service.renewal)."""
        return await self.renewal.host(name)

    # ---- VMMigrations ---------------------------------------------------------

    async def serve(self, *, key: str, body: Any, stopped: Stopped) -> None:
        await self.loop.serve(key=key, body=body, stopped=stopped)

    async def pass_once(self, *, key: str, body: Any, stopped: Stopped) -> bool:
        return await self.loop.pass_once(key=key, body=body, stopped=stopped)
