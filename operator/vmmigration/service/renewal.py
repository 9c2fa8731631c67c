"""Dirty-rate readings renewed in the background, so a plan rarely waits for one.

An Auto move measures the guest before it plans: a second, or four when the
guest writes. That wait falls on the moment a user (or GitOps) asks for the
move. Each Hypervisor's timer therefore renews, one guest at a time, the
readings of the running guests that Auto VMMigrations manage there, before
they expire (:func:`vmmigration.core.dirtyrate.renewal_due`). Never while a
guest moves: libvirt's calculation started during a migration job blocks for
30 s and fails, so a guest in a move, or in its pre-checks, is skipped, and
the engine holds the guest for its whole move (:meth:`Measurer.moving`).
"""

from __future__ import annotations

import asyncio
import logging
from vmmigration.core import dirtyrate
from vmmigration.core.dirtyrate import DirtyRate
from vmmigration.core.errors import CredentialsError, VirtError
from vmmigration.core.model import PowerState
from vmmigration.service.engine import Engine
from vmmigration.service.fleet import Fleet
from vmmigration.service.probes import Probes

log = logging.getLogger(__name__)


def renew(engine: Engine, uri: str, domain: str) -> DirtyRate | None:
    """Measure a running guest for the plans to come (see :meth:`Measurer.renew`). None
    when it does not run there, moves, or is measured already."""
    with engine.connect(uri, timeout_seconds=engine.libvirt_timeout_seconds) as host:
        found = host.find(domain)
        if found is None or found.state is not PowerState.RUNNING:
            return None
        return engine.measurer.renew(host, found)


class Renewal:
    def __init__(self, *, fleet: Fleet, probes: Probes, engine: Engine,
                 interval_seconds: float) -> None:
        self.fleet = fleet
        self.probes = probes
        self.engine = engine
        self.interval_seconds = interval_seconds

    async def host(self, name: str) -> int:
        """Renew what is due on Hypervisor ``name``; how many readings were renewed.

        One guest at a time: each reading keeps the host's QEMU sampling pages
        for its periods, and the next tick comes soon enough for the rest.
        """
        view = self.fleet.hypervisors.get(name)
        wanted = self.fleet.measured_domains()
        if not self.interval_seconds or not wanted or view is None or not view.reachable \
                or view.report is None:
            return 0
        measurer = self.engine.measurer
        renewed = 0
        for found in view.report.domains:
            if (found.name not in wanted or found.state is not PowerState.RUNNING
                    or self.fleet.moving(found.name)
                    or not dirtyrate.renewal_due(measured_at=measurer.reading_time(found),
                                                 now=measurer.clock(),
                                                 max_age_seconds=measurer.max_age_seconds,
                                                 interval_seconds=self.interval_seconds)):
                continue
            try:
                uri = await self.probes.connection_uri(name)
                reading = await asyncio.to_thread(renew, self.engine, uri, found.name)
            except (VirtError, CredentialsError) as error:
                log.info("cannot renew the dirty rate of %s on %s: %s", found.name, name, error)
                continue
            if reading is not None:
                renewed += 1
                log.debug("renewed the dirty rate of %s on %s: %.1f MiB/s", found.name, name,
                          dirtyrate.as_mib(reading.bytes_per_s))
        return renewed
