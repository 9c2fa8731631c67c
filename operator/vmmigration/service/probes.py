"""Probing the Hypervisors: credentials into a connection URI, and a probe that cannot hang.

A probe's report goes into the :class:`~vmmigration.service.fleet.Fleet`,
which wakes the VMMigrations it concerns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from pathlib import Path

from vmmigration.core.errors import CredentialsError
from vmmigration.core.model import HostReport, display_uri
from vmmigration.service.credentials import materialise
from vmmigration.service.fleet import Fleet
from vmmigration.service.ports import Kube, Metrics, Probe

# Credential files are rewritten from their Secret at most this often.
CREDENTIALS_TTL_SECONDS = 60.0


class Probes:
    def __init__(self, *, fleet: Fleet, kube: Kube, metrics: Metrics, prober: Probe,
                 clock: Callable[[], float], timeout_seconds: float, namespace: str,
                 credentials_dir: Path) -> None:
        self.fleet = fleet
        self.kube = kube
        self.metrics = metrics
        self.prober = prober
        self.clock = clock
        self.timeout_seconds = timeout_seconds
        self.namespace = namespace
        self.credentials_dir = credentials_dir
        self._credentials: dict[str, tuple[float, str]] = {}
        # Probes run in their own threads so a hung libvirt cannot starve the shared
        # pool; at most one probe per host is outstanding (see _bounded).
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=64,
                                                           thread_name_prefix="probe")
        self._probing: dict[str, tuple[float, concurrent.futures.Future[HostReport]]] = {}

    def forget_credentials(self, name: str) -> None:
        self._credentials.pop(name, None)

    def pending(self, name: str) -> bool:
        """A probe of ``name`` is still running (a hung host)."""
        entry = self._probing.get(name)
        return entry is not None and not entry[1].done()

    async def connection_uri(self, name: str) -> str:
        """The Hypervisor's URI, with its credentials written to files when it has any."""
        view = self.fleet.hypervisors[name]
        ref = view.spec.credentials
        if ref is None:
            return view.spec.uri
        cached = self._credentials.get(name)
        if cached and self.clock() - cached[0] < CREDENTIALS_TTL_SECONDS:
            return cached[1]
        secret = await asyncio.to_thread(self.kube.read_secret, namespace=ref.namespace or self.namespace,
                                         name=ref.name)
        uri = materialise(uri=view.spec.uri, secret=secret, directory=self.credentials_dir / name)
        self._credentials[name] = (self.clock(), uri)
        return uri

    async def probe(self, name: str) -> HostReport | None:
        if name not in self.fleet.hypervisors:
            return None
        try:
            uri = await self.connection_uri(name)
        except CredentialsError as error:  # a missing Secret is a report, not a crash
            report = HostReport(reachable=False, probed_at=self.clock(), error=str(error)[:300])
        except Exception as error:  # the API server itself failing: report, retry next probe
            report = HostReport(reachable=False, probed_at=self.clock(),
                                error=f"credentials: {type(error).__name__}"[:300])
        else:
            report = await self._bounded(name, uri)
        if name in self.fleet.hypervisors:
            self.metrics.probed(name, report)
            self.fleet.reported(name, report)
        return report

    async def reprobe(self, *names: str) -> None:
        await asyncio.gather(*(self.probe(name) for name in names))

    async def _bounded(self, name: str, uri: str) -> HostReport:
        """Probe in a thread of its own, and stop waiting after the probe timeout.

        libvirt's client has no connect timeout: a host that accepts the TCP
        connection and never answers blocks virConnectOpen forever. Waiting on
        it would freeze this Hypervisor's status as it last was, and enough
        such threads would starve the shared pool. So a late probe is reported
        as unreachable, and a host gets no second probe while its first still hangs.

        A probe that is merely still running (the timer's, when a migration
        ends and asks for a re-probe) is waited for, then followed by a fresh
        one: it may have read the host before the move.
        """
        pending = self._probing.get(name)
        if pending is not None and not pending[1].done():
            began, running = pending
            left = self.timeout_seconds - (self.clock() - began)
            with contextlib.suppress(asyncio.TimeoutError):
                if left > 0:
                    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), timeout=left)
            if not running.done():
                return HostReport(reachable=False, probed_at=self.clock(), error=(
                    f"libvirt at {display_uri(uri)} has not answered for "
                    f"{self.clock() - began:.0f} s"))
        future = self._pool.submit(self.prober, uri)
        self._probing[name] = (self.clock(), future)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          timeout=self.timeout_seconds)
        except asyncio.TimeoutError:
            return HostReport(reachable=False, probed_at=self.clock(), error=(
                f"libvirt at {display_uri(uri)} did not answer within "
                f"{self.timeout_seconds:g} s"))
