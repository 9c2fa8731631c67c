"""What each libvirt host holds, kept current by libvirt's events, with a full probe to resync.

A full probe (versions, CPU, memory and every domain) opens the host's kept
connection and registers for domain lifecycle events on it. From then on an
event re-reads only the domain it names (:meth:`Prober.refresh`), and between
events the report stands without a call to the host (:meth:`Prober.current`).
A full probe runs again when the connection drops (keepalive gave up, libvirtd
restarted: the events in between may be lost), when it ages out, and every
``resync_seconds``, so a missed event heals.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping

from vmmigration.core.errors import VirtError
from vmmigration.core.model import DomainSummary, HostReport, format_version
from vmmigration.service.ports import Connect, Heard, LibvirtHost


def report_of(host: LibvirtHost, *, now: float) -> HostReport:
    versions = host.versions()
    return HostReport(
        reachable=True,
        probed_at=now,
        libvirt_version=format_version(versions.libvirt),
        hypervisor_version=format_version(versions.hypervisor),
        cpu_model=host.cpu_model(),
        memory_total_bytes=host.memory_total_bytes(),
        memory_free_bytes=host.free_memory_bytes(),
        domains=host.domains(),
    )


def with_domains(report: HostReport, *, found: Mapping[str, DomainSummary | None],
                 free_bytes: int, now: float) -> HostReport:
    """``report`` with the domains in ``found`` replaced by what was read (None: gone)."""
    kept = tuple(d for d in report.domains if d.name not in found)
    fresh = tuple(summary for summary in found.values() if summary is not None)
    return dataclasses.replace(report, domains=kept + fresh,
                               memory_free_bytes=free_bytes, probed_at=now)


@dataclasses.dataclass
class _Kept:
    host: LibvirtHost
    opened: float
    used: float
    report: HostReport
    full_at: float  # the last full probe, on the clock
    # Its share of the resync interval, drawn once per connection: hosts connected
    # together (an operator start) must not all be read in full at the same moment again.
    spread: float = dataclasses.field(default_factory=lambda: random.uniform(0.8, 1.0))
    watched: bool = False  # events arrive on this connection
    dropped: bool = False  # its close callback ran: events may have been lost


class Prober:
    """Probes each host over a connection it keeps, and keeps the report current from events.

    A new connection per probe is the most of a probe's cost: about 12 ms of
    CPU against 1 ms on a kept one (a test-driver host of 20 domains; on
    qemu+tls it is a TLS handshake on both ends). A kept connection is
    replaced after ``max_age_seconds``, so rotated client certificates and
    a changed host are picked up, and closed once no probe used it for that
    long (a Hypervisor deleted or given another URI). A probe whose kept
    connection fails tries once more on a fresh one: a restarted libvirtd
    is then reported reachable at once.
    """

    def __init__(self, *, connect: Connect, timeout_seconds: float = 30.0,
                 max_age_seconds: float = 300.0, resync_seconds: float = 300.0,
                 events: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_age_seconds = max_age_seconds
        self.resync_seconds = resync_seconds
        self._connect = connect
        self._clock = clock
        self._lock = threading.Lock()  # guards _kept and _uri_locks
        self._kept: dict[str, _Kept] = {}
        # One probe or refresh per host at a time: two would open two connections.
        self._uri_locks: dict[str, threading.Lock] = {}
        self._heard: Heard | None = None
        self._events = events

    def listen(self, heard: Heard) -> None:
        self._heard = heard

    # ---- full probes -------------------------------------------------------------

    def __call__(self, uri: str) -> HostReport:
        now = time.time()
        self._close_idle()
        with self._uri_lock(uri):
            kept = self._usable(uri)
            if kept is not None:
                try:
                    report = report_of(kept.host, now=now)
                except VirtError:
                    self._drop(uri, kept)  # dead or stale: one more try, on a fresh connection
                else:
                    self._keep(uri, dataclasses.replace(kept, used=self._clock(), report=report,
                                                        full_at=self._clock()))
                    return report
            try:
                host = self._connect(uri, timeout_seconds=self.timeout_seconds)
            except VirtError as error:
                return HostReport(reachable=False, probed_at=now, error=str(error))
            # Registered before the listing: an event in between is then a re-read, not a loss.
            watched = self._watch(uri, host)
            try:
                report = report_of(host, now=now)
            except VirtError as error:
                host.close()
                return HostReport(reachable=False, probed_at=now, error=str(error))
            opened = self._clock()
            self._keep(uri, _Kept(host=host, opened=opened, used=opened, report=report,
                                  full_at=opened, watched=watched))
            return report

    # ---- between full probes -----------------------------------------------------

    def current(self, uri: str) -> HostReport | None:
        """The report events keep current, or None when a full probe is due: no events
        on this connection, the connection dropped or aged, or the resync is due."""
        now = self._clock()
        with self._lock:
            kept = self._kept.get(uri)
            if (kept is None or not kept.watched or kept.dropped
                    or now - kept.full_at >= self.resync_seconds * kept.spread
                    or now - kept.opened >= self.max_age_seconds):
                return None
            kept.used = now
            return dataclasses.replace(kept.report, probed_at=time.time())

    def refresh(self, uri: str, domains: Collection[str]) -> HostReport | None:
        """The report with ``domains`` read again (and free memory); None: probe in full."""
        with self._uri_lock(uri):
            kept = self._usable(uri)
            if kept is None or kept.dropped:
                return None
            try:
                found = {name: kept.host.find(name) for name in domains}
                free = kept.host.free_memory_bytes()
            except VirtError:
                self._drop(uri, kept)
                return None
            report = with_domains(kept.report, found=found, free_bytes=free, now=time.time())
            self._keep(uri, dataclasses.replace(kept, used=self._clock(), report=report))
            return report

    def close(self) -> None:
        with self._lock:
            kept, self._kept = list(self._kept.values()), {}
        for entry in kept:
            entry.host.close()

    # ---- the kept connections ----------------------------------------------------

    def _uri_lock(self, uri: str) -> threading.Lock:
        with self._lock:
            return self._uri_locks.setdefault(uri, threading.Lock())

    def _watch(self, uri: str, host: LibvirtHost) -> bool:
        heard = self._heard
        if heard is None or not self._events:
            return False

        def changed(domain: str) -> None:
            heard(uri, domain)

        def closed() -> None:
            with self._lock:
                kept = self._kept.get(uri)
                ours = kept is not None and kept.host is host
                if ours and kept is not None:
                    kept.dropped = True
            if ours:  # a connection we replaced or closed ourselves is no news
                heard(uri, None)

        try:
            return host.watch(changed=changed, closed=closed)
        except VirtError:
            return False

    def _usable(self, uri: str) -> _Kept | None:
        """The kept connection to ``uri``, unless it is too old or dropped (then closed)."""
        with self._lock:
            kept = self._kept.get(uri)
        if kept is None:
            return None
        if kept.dropped or self._clock() - kept.opened >= self.max_age_seconds:
            self._drop(uri, kept)
            return None
        return kept

    def _keep(self, uri: str, kept: _Kept) -> None:
        with self._lock:
            other = self._kept.get(uri)
            if other is not None and other.host is kept.host and other.dropped:
                kept.dropped = True  # its close callback ran while we worked on a copy
            self._kept[uri] = kept
        if other is not None and other.host is not kept.host:
            other.host.close()

    def _drop(self, uri: str, kept: _Kept) -> None:
        with self._lock:
            current = self._kept.get(uri)
            if current is not None and current.host is kept.host:  # not a newer connection
                del self._kept[uri]
        kept.host.close()

    def _close_idle(self) -> None:
        now = self._clock()
        with self._lock:
            idle = [uri for uri, kept in self._kept.items() if now - kept.used >= self.max_age_seconds]
            closing = [self._kept.pop(uri).host for uri in idle]
        for host in closing:
            host.close()
