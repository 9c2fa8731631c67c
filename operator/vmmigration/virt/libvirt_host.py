"""The only module that imports libvirt.

Thin verbs named for what they do, libvirt's job statistics normalised into
:class:`JobProgress`, and libvirt's many error codes mapped onto a few typed
errors the rest of the code can reason about.
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from vmmigration.model import (
    DiskImage,
    DomainSummary,
    HostVersions,
    JobProgress,
    PauseReason,
    PowerState,
    display_uri,
)
from vmmigration.planner import MigrationFlags
from vmmigration.prechecks import CpuVerdict


class VirtError(Exception):
    """A libvirt failure, with libvirt's own message."""


class HostUnreachable(VirtError):
    pass


class DomainNotFound(VirtError):
    pass


class OperationInvalid(VirtError):
    """The domain is not in a state that allows this (no job, not running, …)."""


class MigrationAborted(VirtError):
    pass


class MigrationFailed(VirtError):
    pass


class MigrationUnsafe(MigrationFailed):
    """libvirt refused: it cannot tell the disks are on shared storage, and would risk their data."""


_UNREACHABLE = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_INVALID_CONN,
}


def _mapped(error: libvirt.libvirtError, default: type[VirtError] = VirtError) -> VirtError:
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(message)
    if code == libvirt.VIR_ERR_OPERATION_ABORTED:
        return MigrationAborted(message)
    if code == libvirt.VIR_ERR_MIGRATE_UNSAFE:
        return MigrationUnsafe(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return OperationInvalid(message)
    # A connection libvirt's keepalive closed ("connection closed due to keepalive
    # timeout", then "client socket is closed") is an internal error of its RPC layer.
    lost = code == libvirt.VIR_ERR_INTERNAL_ERROR and error.get_error_domain() == libvirt.VIR_FROM_RPC
    if (code in _UNREACHABLE or lost) and default is not MigrationFailed:
        return HostUnreachable(message)
    return default(message)


@contextlib.contextmanager
def _translated(default: type[VirtError] = VirtError) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as error:
        raise _mapped(error, default) from error


# libvirt prints every error to stderr by default; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUT_OFF,
}
_PAUSE_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_USER: PauseReason.USER,
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: PauseReason.MIGRATION,
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: PauseReason.STARTING_UP,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: PauseReason.POST_COPY,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: PauseReason.POST_COPY_FAILED,
}

_ACTIVE_JOBS = {libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED}

_FLAG_BITS = {
    "live": libvirt.VIR_MIGRATE_LIVE,
    "offline": libvirt.VIR_MIGRATE_OFFLINE,
    "peer_to_peer": libvirt.VIR_MIGRATE_PEER2PEER,
    "persist_dest": libvirt.VIR_MIGRATE_PERSIST_DEST,
    "undefine_source": libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
    "paused": libvirt.VIR_MIGRATE_PAUSED,
    "copy_all_storage": libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    "copy_incremental_storage": libvirt.VIR_MIGRATE_NON_SHARED_INC,
    "post_copy": libvirt.VIR_MIGRATE_POSTCOPY,
    "auto_converge": libvirt.VIR_MIGRATE_AUTO_CONVERGE,
    "compressed": libvirt.VIR_MIGRATE_COMPRESSED,
    "parallel": libvirt.VIR_MIGRATE_PARALLEL,
    "unsafe": libvirt.VIR_MIGRATE_UNSAFE,
}


def flag_bits(flags: MigrationFlags) -> int:
    bits = 0
    for name, bit in _FLAG_BITS.items():
        if getattr(flags, name):
            bits |= bit
    return bits


def _source_path(element: ET.Element) -> str | None:
    source = element.find("source")
    if source is None:
        return None
    return source.get("file") or source.get("dev")


def progress_from_stats(stats: dict[str, Any]) -> JobProgress:
    page = int(stats.get("memory_page_size") or 4096)
    downtime = stats.get("downtime")
    return JobProgress(
        elapsed_seconds=int(stats.get("time_elapsed", 0)) / 1000.0,
        data_total=int(stats.get("data_total", 0)),
        data_processed=int(stats.get("data_processed", 0)),
        data_remaining=int(stats.get("data_remaining", 0)),
        memory_total=int(stats.get("memory_total", 0)),
        memory_processed=int(stats.get("memory_processed", 0)),
        memory_remaining=int(stats.get("memory_remaining", 0)),
        dirty_rate_bytes_per_s=int(stats.get("memory_dirty_rate", 0)) * page,
        transfer_rate_bytes_per_s=int(stats.get("memory_bps", 0)),
        iteration=int(stats.get("memory_iteration", 0)),
        postcopy_requests=int(stats.get("memory_postcopy_requests", 0)),
        downtime_ms=int(downtime) if downtime is not None else None,
    )


# How long a libvirt host may stay silent before we give up on it: the time to
# connect, and, through libvirt's keepalive, the silence allowed on a connection
# (libvirtd gives its own peer-to-peer connections the same 30 s: 5 s x 5).
DEFAULT_TIMEOUT_SECONDS = 30.0
KEEPALIVE_COUNT = 5

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ensure_event_loop() -> None:
    """Run libvirt's default event loop in a thread of its own, once per process.

    libvirt's client sends keepalive messages only when an event loop is
    registered, and must have it before the first connection is opened.
    Without keepalive a call to a host that hangs (a stopped libvirtd, a host
    gone from the network without a reset) blocks forever.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _open(uri: str, *, timeout_seconds: float) -> libvirt.virConnect:
    """libvirt.open(), given up after ``timeout_seconds``.

    libvirt's client has no connect timeout: a host that accepts the TCP
    connection and never answers holds virConnectOpen forever. The opening
    runs in a thread of its own; if we stop waiting, that thread closes
    whatever it opens later, so nothing leaks but the thread, for as long as
    the host hangs.
    """
    lock = threading.Lock()
    outcome: list[libvirt.virConnect | libvirt.libvirtError] = []
    abandoned = False

    def opener() -> None:
        try:
            result: libvirt.virConnect | libvirt.libvirtError = libvirt.open(uri)
        except libvirt.libvirtError as error:
            result = error
        with lock:
            if not abandoned:
                outcome.append(result)
                return
        if isinstance(result, libvirt.virConnect):
            with contextlib.suppress(libvirt.libvirtError):
                result.close()

    thread = threading.Thread(target=opener, name=f"libvirt-open {display_uri(uri)}", daemon=True)
    thread.start()
    thread.join(timeout_seconds)
    with lock:
        if not outcome:
            abandoned = True
            raise HostUnreachable(f"cannot connect to {display_uri(uri)}: libvirt did not "
                                  f"answer within {timeout_seconds:g} s")
    result = outcome[0]
    if isinstance(result, libvirt.libvirtError):
        raise HostUnreachable(
            f"cannot connect to {uri}: {result.get_error_message() or result}") from result
    return result


def _connection(uri: str, *, timeout_seconds: float) -> libvirt.virConnect:
    """A connection that fails, rather than hangs, once its host is silent for the timeout."""
    _ensure_event_loop()
    conn = _open(uri, timeout_seconds=timeout_seconds)
    # Local drivers (test:///) have no keepalive; they cannot hang on a peer.
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(max(1, round(timeout_seconds / (KEEPALIVE_COUNT + 1))), KEEPALIVE_COUNT)
    return conn


class Host:
    """One libvirt connection, with the verbs vmmigration needs.

    Every call on it either answers or fails within about ``timeout_seconds``
    of the host falling silent (libvirt's keepalive closes the connection),
    so a hung host costs a migration a bounded wait, never a stuck thread.
    """

    def __init__(self, uri: str, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.uri = uri
        self.timeout_seconds = timeout_seconds
        self._conn = _connection(uri, timeout_seconds=timeout_seconds)

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- host facts -------------------------------------------------------

    def versions(self) -> HostVersions:
        with _translated():
            return HostVersions(
                libvirt=int(self._conn.getLibVersion()), hypervisor=int(self._conn.getVersion())
            )

    def host_uuid(self) -> str:
        """The host UUID libvirt reports (what it compares to refuse a same-host migration)."""
        with _translated():
            caps = ET.fromstring(self._conn.getCapabilities())
        return caps.findtext("./host/uuid") or ""

    def cpu_model(self) -> str:
        with _translated():
            caps = ET.fromstring(self._conn.getCapabilities())
        return caps.findtext("./host/cpu/model") or caps.findtext("./host/cpu/arch") or ""

    def memory_total_bytes(self) -> int:
        with _translated():
            return int(self._conn.getInfo()[1]) * 1024 * 1024

    def free_memory_bytes(self) -> int:
        with _translated():
            return int(self._conn.getFreeMemory())

    # ---- domains ----------------------------------------------------------

    def _domain(self, name: str) -> libvirt.virDomain:
        with _translated():
            return self._conn.lookupByName(name)

    @staticmethod
    def _summary(dom: libvirt.virDomain) -> DomainSummary:
        with _translated():
            state, reason = dom.state()
            info = dom.info()
            power = _STATES.get(state, PowerState.OTHER)
            return DomainSummary(
                name=dom.name(),
                uuid=dom.UUIDString(),
                state=power,
                pause_reason=(
                    _PAUSE_REASONS.get(reason, PauseReason.OTHER)
                    if power is PowerState.PAUSED
                    else PauseReason.NONE
                ),
                memory_bytes=int(info[1]) * 1024,
                persistent=bool(dom.isPersistent()),
            )

    def domains(self) -> tuple[DomainSummary, ...]:
        with _translated():
            listed = self._conn.listAllDomains()
        found = []
        for dom in listed:
            # A domain can vanish between the listing and the look at it.
            with contextlib.suppress(DomainNotFound):
                found.append(self._summary(dom))
        return tuple(found)

    def find(self, name: str) -> DomainSummary | None:
        try:
            return self._summary(self._domain(name))
        except DomainNotFound:
            return None

    def summary(self, name: str) -> DomainSummary:
        return self._summary(self._domain(name))

    def domain_xml(self, name: str, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with _translated():
            return str(self._domain(name).XMLDesc(flags))

    def disks(self, name: str) -> tuple[DiskImage, ...]:
        """The domain's writable file and block disks (what storage must provide on a target)."""
        root = ET.fromstring(self.domain_xml(name))
        found = []
        for disk in root.findall("./devices/disk"):
            if disk.get("device") not in (None, "disk", "lun") or disk.find("readonly") is not None:
                continue
            path = _source_path(disk)
            if not path:
                continue
            driver = disk.find("driver")
            backing = disk.find("backingStore")
            backing_path = _source_path(backing) if backing is not None else None
            backing_format = backing.find("format") if backing is not None else None
            found.append(DiskImage(
                path=path,
                format=driver.get("type", "raw") if driver is not None else "raw",
                backing=backing_path,
                backing_format=backing_format.get("type") if backing_format is not None else None,
            ))
        return tuple(found)

    def disk_capacity(self, name: str, path: str) -> int:
        with _translated():
            return int(self._domain(name).blockInfo(path)[0])

    def compare_cpu(self, *, domain_xml: str) -> CpuVerdict:
        """libvirt's hypervisor CPU compare of the domain's CPU against this host."""
        root = ET.fromstring(domain_xml)
        cpu = root.find("cpu")
        if cpu is None or (cpu.find("model") is None and cpu.get("mode") != "host-passthrough"):
            return CpuVerdict(compatible=True, detail="domain has no CPU model to compare")
        if cpu.get("mode") == "host-passthrough":
            return CpuVerdict(compatible=True, detail="host-passthrough is not comparable")
        os_type = root.find("./os/type")
        emulator = root.findtext("./devices/emulator")
        try:
            result = self._conn.compareHypervisorCPU(
                emulator,
                os_type.get("arch") if os_type is not None else None,
                os_type.get("machine") if os_type is not None else None,
                root.get("type"),
                ET.tostring(cpu, encoding="unicode"),
                libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE,
            )
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
                return CpuVerdict(compatible=False, detail=error.get_error_message() or "")
            raise _mapped(error) from error
        return CpuVerdict(compatible=result != libvirt.VIR_CPU_COMPARE_INCOMPATIBLE)

    def disk_visible(self, path: str) -> bool:
        """Whether a storage pool on this host holds ``path``."""
        with _translated():
            for pool in self._conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    pool.refresh(0)
        try:
            self._conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise _mapped(error) from error
        return True

    def has_pool_for(self, path: str) -> bool:
        """Whether a storage pool here manages the directory ``path`` would be created in."""
        try:
            self._conn.storagePoolLookupByTargetPath(os.path.dirname(path))
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return False
            raise _mapped(error) from error
        return True

    def create_image(self, image: DiskImage, *, capacity_bytes: int) -> None:
        """Create an empty image at ``image.path``, on the same backing chain (for CopyIncremental)."""
        backing = ""
        if image.backing:
            backing = (f"<backingStore><path>{escape(image.backing)}</path>"
                       f"<format type='{escape(image.backing_format or 'raw')}'/></backingStore>")
        with _translated():
            pool = self._conn.storagePoolLookupByTargetPath(os.path.dirname(image.path))
            pool.createXML(
                f"<volume><name>{escape(os.path.basename(image.path))}</name>"
                f"<capacity unit='bytes'>{capacity_bytes}</capacity>"
                f"<target><format type='{escape(image.format)}'/></target>{backing}</volume>",
                0,
            )

    def delete_image(self, path: str) -> None:
        with _translated():
            self._conn.storageVolLookupByPath(path).delete(0)

    # ---- jobs -------------------------------------------------------------

    def _job_stats(self, name: str, flags: int = 0) -> dict[str, Any] | None:
        """libvirt's job statistics, or None when the domain or its job is gone."""
        try:
            stats = self._domain(name).jobStats(flags)
        except DomainNotFound:
            return None
        except libvirt.libvirtError as error:
            mapped = _mapped(error)
            if isinstance(mapped, (DomainNotFound, OperationInvalid)):
                return None
            raise mapped from error
        return dict(stats) if stats else None

    def job(self, name: str) -> JobProgress | None:
        """The active job's statistics, or None when no job runs. Source side only."""
        stats = self._job_stats(name)
        if stats is None or stats.get("type") not in _ACTIVE_JOBS:
            return None
        return progress_from_stats(stats)

    def completed_job(self, name: str) -> JobProgress | None:
        """Statistics of the last completed job (on the target after an incoming migration)."""
        stats = self._job_stats(name, libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        if stats is None or stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
            return None
        return progress_from_stats(stats)

    def suspend(self, name: str) -> None:
        with _translated():
            self._domain(name).suspend()

    def resume(self, name: str) -> None:
        with _translated():
            self._domain(name).resume()

    def abort_job(self, name: str) -> None:
        with _translated():
            self._domain(name).abortJob()

    def start_post_copy(self, name: str) -> None:
        with _translated():
            self._domain(name).migrateStartPostCopy(0)

    def set_max_downtime(self, name: str, *, milliseconds: int) -> None:
        with _translated():
            self._domain(name).migrateSetMaxDowntime(milliseconds, 0)

    def migrate(
        self,
        name: str,
        *,
        target_uri: str,
        flags: MigrationFlags,
        bandwidth_mib_per_s: int = 0,
        parallel_connections: int = 1,
        migration_address: str | None = None,
    ) -> None:
        """Blocks until the migration ends; raises MigrationAborted or MigrationFailed."""
        params: dict[str, Any] = {}
        if migration_address:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{migration_address}"
        if bandwidth_mib_per_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mib_per_s
        if flags.parallel:
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = parallel_connections
            if flags.compressed:
                # libvirt's default method (xbzrle) does not work over
                # parallel connections; multifd compresses with zlib.
                params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = "zlib"
        dom = self._domain(name)
        with _translated(MigrationFailed):
            if flags.peer_to_peer:
                dom.migrateToURI3(peer_uri(target_uri), params, flag_bits(flags))
            else:
                # Managed direct migration: the client drives both ends.
                try:
                    target = _connection(target_uri, timeout_seconds=self.timeout_seconds)
                except HostUnreachable as error:
                    raise MigrationFailed(str(error)) from error
                try:
                    dom.migrate3(target, params, flag_bits(flags))
                finally:
                    target.close()

    # ---- test-bed verbs (the sandbox builds hosts and guests with these) ----

    def define_domain(self, xml: str) -> str:
        with _translated():
            return str(self._conn.defineXML(xml).name())

    def start(self, name: str) -> None:
        with _translated():
            self._domain(name).create()

    def destroy(self, name: str) -> None:
        with _translated():
            self._domain(name).destroy()

    def undefine(self, name: str) -> None:
        with _translated():
            self._domain(name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)

    def remove_everywhere(self, name: str) -> None:
        """Destroy and undefine, ignoring a domain that is not there."""
        with contextlib.suppress(DomainNotFound, OperationInvalid):
            self.destroy(name)
        with contextlib.suppress(DomainNotFound, OperationInvalid):
            self.undefine(name)

    def ensure_dir_pool(self, *, name: str, path: str) -> None:
        with _translated():
            try:
                pool = self._conn.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                pool = self._conn.storagePoolDefineXML(
                    f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
                )
            if not pool.isActive():
                pool.create(0)
            pool.setAutostart(1)

    def create_volume(self, *, pool: str, name: str, size_bytes: int) -> str:
        with _translated():
            storage = self._conn.storagePoolLookupByName(pool)
            vol = storage.createXML(
                f"<volume><name>{name}</name><capacity unit='bytes'>{size_bytes}</capacity>"
                "<target><format type='qcow2'/></target></volume>",
                0,
            )
            return str(vol.path())

    def domain_capabilities_virt_types(self) -> set[str]:
        """Which virt types ('qemu', 'kvm') this host's QEMU offers."""
        with _translated():
            caps = ET.fromstring(self._conn.getCapabilities())
        return {
            d.get("type", "")
            for d in caps.findall("./guest/arch[@name='x86_64']/domain")
        }


# Query parameters that name files on the client's own machine (libvirt URI syntax).
CLIENT_FILE_PARAMETERS = frozenset({"pkipath", "keyfile", "known_hosts"})


def peer_uri(uri: str) -> str:
    """The target URI as the *source libvirtd* must see it in a peer-to-peer migration.

    There the source daemon, not this process, connects to the target, and it
    reads any ``pkipath``/``keyfile``/``known_hosts`` on its own host. Those
    name the operator's credential files (inside its pod), which the host does
    not have; the daemon must use its own client identity from /etc/pki or
    its ssh set-up instead.
    """
    parts = urllib.parse.urlsplit(uri)
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k not in CLIENT_FILE_PARAMETERS]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(kept, safe="/")))
