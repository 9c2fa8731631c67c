"""Probing the Hypervisors: credentials into a connection URI, a probe that cannot hang,
and the domains libvirt's events name, read again at once.

A report goes into the :class:`~vmmigration.service.fleet.Fleet`, which wakes
the VMMigrations it concerns. With an :class:`~vmmigration.service.ports.Inventory`
the timer's probe costs no call to the host while events keep its report
current; an event is read back within milliseconds, so drift shows in a
VMMigration's status within a second, not a probe interval.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from vmmigration.core.errors import CredentialsError
from vmmigration.core.model import HostReport, display_uri
from vmmigration.service.credentials import materialise
from vmmigration.service.fleet import Fleet
from vmmigration.service.ports import Inventory, Kube, Metrics, Probe

log = logging.getLogger(__name__)

# Credential files are rewritten from their Secret at most this often.
CREDENTIALS_TTL_SECONDS = 60.0
# An event is read back after this pause, so the burst one change makes (a migration's
# end sends three or four per host) costs one read.
COALESCE_SECONDS = 0.01


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
        self._probing: dict[str, tuple[float, concurrent.futures.Future[HostReport | None]]] = {}
        # Events: which Hypervisors each connection URI serves, the domains named
        # since the last read, the hosts whose connection dropped, and one catch-up task per host.
        self._inventory = prober if isinstance(prober, Inventory) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uris: dict[str, str] = {}
        self._names: dict[str, set[str]] = {}
        self._dirty: dict[str, set[str]] = {}
        self._dropped: set[str] = set()
        self._catching_up: dict[str, asyncio.Task[None]] = {}
        if self._inventory is not None:
            self._inventory.listen(self._heard)

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
            self._loop = asyncio.get_running_loop()
            self._serves(name, uri)
            report = self._current(name, uri) or await self._full(name, uri)
        self._record(name, report)
        return report

    def _current(self, name: str, uri: str) -> HostReport | None:
        """The report events keep, when nothing calls for a full probe."""
        if self._inventory is None or self.pending(name) or name in self._dropped:
            return None
        return self._inventory.current(uri)

    async def _full(self, name: str, uri: str) -> HostReport:
        self._dropped.discard(name)
        report = await self._bounded(name, uri, job=lambda: self.prober(uri))
        assert report is not None  # a probe always reports
        self.metrics.inventory_updated(how="probe")
        return report

    def _record(self, name: str, report: HostReport) -> None:
        if name in self.fleet.hypervisors:
            self.metrics.probed(name, report)
            self.fleet.reported(name, report)

    # ---- events --------------------------------------------------------------------

    def _serves(self, name: str, uri: str) -> None:
        before = self._uris.get(name)
        if before == uri:
            return
        if before is not None:
            self._names.get(before, set()).discard(name)
        self._uris[name] = uri
        self._names.setdefault(uri, set()).add(name)

    def _heard(self, uri: str, domain: str | None) -> None:
        """libvirt's event thread: hand the news to the event loop, nothing more."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: shutting down
                loop.call_soon_threadsafe(self._on_heard, uri, domain)

    def _on_heard(self, uri: str, domain: str | None) -> None:
        for name in tuple(self._names.get(uri, ())):
            if name not in self.fleet.hypervisors:
                continue
            if domain is None:
                # Events since the drop are lost: probe in full now (it reconnects, or
                # says the host is unreachable), and no report from events until then.
                self._dropped.add(name)
            else:
                self._dirty.setdefault(name, set()).add(domain)
            task = self._catching_up.get(name)
            if task is None or task.done():
                self._catching_up[name] = asyncio.ensure_future(self._catch_up(name))

    async def _catch_up(self, name: str) -> None:
        """Read back what events named, until none is left unread."""
        try:
            while name in self._dropped or self._dirty.get(name):
                await asyncio.sleep(COALESCE_SECONDS)
                uri = self._uris.get(name)
                domains = self._dirty.pop(name, set())
                if uri is None or name not in self.fleet.hypervisors:
                    return
                report = None
                inventory = self._inventory
                if name not in self._dropped and inventory is not None:
                    report = await self._bounded(name, uri,
                                                 job=lambda: inventory.refresh(uri, domains))
                    if report is not None:
                        self.metrics.inventory_updated(how="event")
                if report is None:
                    report = await self._full(name, uri)
                self._record(name, report)
        except Exception:  # the next timer's probe reads the host in full anyway
            log.exception("reading back the events of Hypervisor %s failed", name)

    async def reprobe(self, *names: str) -> None:
        await asyncio.gather(*(self.probe(name) for name in names))

    async def _bounded(self, name: str, uri: str,
                       job: Callable[[], HostReport | None]) -> HostReport | None:
        """Run ``job`` (a probe, or a read-back) in a thread of its own, and stop waiting
        after the probe timeout.

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
        future = self._pool.submit(job)
        self._probing[name] = (self.clock(), future)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          timeout=self.timeout_seconds)
        except asyncio.TimeoutError:
            return HostReport(reachable=False, probed_at=self.clock(), error=(
                f"libvirt at {display_uri(uri)} did not answer within "
                f"{self.timeout_seconds:g} s"))
