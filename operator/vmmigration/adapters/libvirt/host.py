"""One libvirt host: thin verbs named for what they do, over one connection."""

from __future__ import annotations

import contextlib
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Self
from xml.sax.saxutils import escape

import libvirt

from vmmigration.adapters.libvirt.connection import DEFAULT_TIMEOUT_SECONDS, connection
from vmmigration.adapters.libvirt.conversions import (
    ACTIVE_JOBS,
    MIGRATION_PAUSES,
    PAUSE_REASONS,
    STATES,
    flag_bits,
    peer_uri,
    direction_from_stats,
    progress_from_stats,
    source_path,
)
from vmmigration.adapters.libvirt.errors import mapped, translated
from vmmigration.adapters.libvirt import machines
from vmmigration.adapters.libvirt.volumes import Volumes
from vmmigration.core.errors import (
    DomainNotFound,
    HostUnreachable,
    MigrationFailed,
    OperationInvalid,
)
from vmmigration.core.model import (
    DiskImage,
    DomainSummary,
    HostVersions,
    JobDirection,
    JobProgress,
    PauseReason,
    PowerState,
)
from vmmigration.core.planner import MigrationFlags
from vmmigration.core.prechecks import CpuVerdict, MachineVerdict

UNLIMITED_MIB_PER_S = (2**63 - 1) >> 20


class Host:
    """One libvirt connection, with the verbs vmmigration needs.

    Every call on it either answers or fails within about ``timeout_seconds``
    of the host falling silent (libvirt's keepalive closes the connection),
    so a hung host costs a migration a bounded wait, never a stuck thread.
    """

    def __init__(self, uri: str, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.uri = uri
        self.timeout_seconds = timeout_seconds
        self._conn = connection(uri, timeout_seconds=timeout_seconds)
        self.volumes = Volumes(self._conn)

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- host facts -------------------------------------------------------

    def versions(self) -> HostVersions:
        with translated():
            return HostVersions(
                libvirt=int(self._conn.getLibVersion()), hypervisor=int(self._conn.getVersion())
            )

    def host_uuid(self) -> str:
        """The host UUID libvirt reports (what it compares to refuse a same-host migration)."""
        with translated():
            caps = ET.fromstring(self._conn.getCapabilities())
        return caps.findtext("./host/uuid") or ""

    def cpu_model(self) -> str:
        with translated():
            caps = ET.fromstring(self._conn.getCapabilities())
        return caps.findtext("./host/cpu/model") or caps.findtext("./host/cpu/arch") or ""

    def memory_total_bytes(self) -> int:
        with translated():
            return int(self._conn.getInfo()[1]) * 1024 * 1024

    def free_memory_bytes(self) -> int:
        with translated():
            return int(self._conn.getFreeMemory())

    # ---- domains ----------------------------------------------------------

    def _domain(self, name: str) -> libvirt.virDomain:
        with translated():
            return self._conn.lookupByName(name)

    @staticmethod
    def _summary(dom: libvirt.virDomain) -> DomainSummary:
        with translated():
            state, reason = dom.state()
            info = dom.info()
            power = STATES.get(state, PowerState.OTHER)
            pause = (PAUSE_REASONS.get(reason, PauseReason.OTHER) if power is PowerState.PAUSED
                     else PauseReason.NONE)
            return DomainSummary(
                name=dom.name(),
                uuid=dom.UUIDString(),
                state=power,
                pause_reason=pause,
                memory_bytes=int(info[1]) * 1024,
                persistent=bool(dom.isPersistent()),
                job=Host._direction(dom) if pause in MIGRATION_PAUSES else JobDirection.NONE,
            )

    @staticmethod
    def _direction(dom: libvirt.virDomain) -> JobDirection:
        """Which end of a migration a domain paused for one is: its pause reason cannot tell."""
        try:
            stats = dom.jobStats()
        except libvirt.libvirtError as error:
            # libvirt keeps a migration's statistics on its source and refuses them on
            # the receiving end ("available only on the source host"), and only there.
            if error.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED:
                return JobDirection.INCOMING
            raise
        return direction_from_stats(stats)

    def domains(self) -> tuple[DomainSummary, ...]:
        with translated():
            listed = self._conn.listAllDomains()
        found = []
        for dom in listed:
            # A domain can vanish between the listing and the look at it.
            with contextlib.suppress(DomainNotFound):
                found.append(self._summary(dom))
        return tuple(found)

    def watch(self, *, changed: Callable[[str], None], closed: Callable[[], None]) -> bool:
        """Call ``changed(domain)`` on each lifecycle event of a domain, ``closed()`` when the
        connection drops (keepalive gave up, libvirtd went away); False: no events here.

        Both are called on libvirt's event-loop thread, which also carries the
        keepalive of every connection: they must only hand the news on, never call libvirt.
        """
        def on_lifecycle(_conn: object, dom: libvirt.virDomain, *_: object) -> None:
            changed(dom.name())  # held by the handle: no call to the host

        def on_close(*_: object) -> None:
            closed()

        try:
            self._conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                              on_lifecycle, None)
        except libvirt.libvirtError:
            return False
        # Local drivers (test:///) have nothing to lose: no close callback there.
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.registerCloseCallback(on_close, None)
        return True

    def find(self, name: str) -> DomainSummary | None:
        try:
            return self._summary(self._domain(name))
        except DomainNotFound:
            return None

    def summary(self, name: str) -> DomainSummary:
        return self._summary(self._domain(name))

    def domain_xml(self, name: str, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with translated():
            return str(self._domain(name).XMLDesc(flags))

    def disks(self, name: str) -> tuple[DiskImage, ...]:
        """The domain's writable file and block disks (what storage must provide on a target)."""
        root = ET.fromstring(self.domain_xml(name))
        found = []
        for disk in root.findall("./devices/disk"):
            if disk.get("device") not in (None, "disk", "lun") or disk.find("readonly") is not None:
                continue
            path = source_path(disk)
            if not path:
                continue
            driver = disk.find("driver")
            backing = disk.find("backingStore")
            backing_path = source_path(backing) if backing is not None else None
            backing_format = backing.find("format") if backing is not None else None
            found.append(DiskImage(
                path=path,
                format=driver.get("type", "raw") if driver is not None else "raw",
                backing=backing_path,
                backing_format=backing_format.get("type") if backing_format is not None else None,
            ))
        return tuple(found)

    def disk_capacity(self, name: str, path: str) -> int:
        with translated():
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
            raise mapped(error) from error
        return CpuVerdict(compatible=result != libvirt.VIR_CPU_COMPARE_INCOMPATIBLE)

    def check_machine(self, *, domain_xml: str) -> MachineVerdict:
        with translated():
            capabilities = self._conn.getCapabilities()
        return machines.verdict(capabilities_xml=capabilities, domain_xml=domain_xml)

    def disk_visible(self, path: str) -> bool:
        """Whether a storage pool on this host holds ``path``."""
        self.volumes.refresh()
        return self.volumes.holds(path)

    def has_pool_for(self, path: str) -> bool:
        """Whether a storage pool here manages the directory ``path`` would be created in."""
        try:
            self._conn.storagePoolLookupByTargetPath(os.path.dirname(path))
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return False
            raise mapped(error) from error
        return True

    def create_image(self, image: DiskImage, *, capacity_bytes: int) -> None:
        """Create an empty image at ``image.path``, on the same backing chain (for CopyIncremental)."""
        backing = ""
        if image.backing:
            backing = (f"<backingStore><path>{escape(image.backing)}</path>"
                       f"<format type='{escape(image.backing_format or 'raw')}'/></backingStore>")
        with translated():
            pool = self._conn.storagePoolLookupByTargetPath(os.path.dirname(image.path))
            pool.createXML(
                f"<volume><name>{escape(os.path.basename(image.path))}</name>"
                f"<capacity unit='bytes'>{capacity_bytes}</capacity>"
                f"<target><format type='{escape(image.format)}'/></target>{backing}</volume>",
                0,
            )

    def delete_image(self, path: str) -> None:
        with translated():
            self._conn.storageVolLookupByPath(path).delete(0)

    # ---- jobs -------------------------------------------------------------

    def _job_stats(self, name: str, flags: int = 0) -> dict[str, Any] | None:
        """libvirt's job statistics, or None when the domain or its job is gone."""
        try:
            stats = self._domain(name).jobStats(flags)
        except DomainNotFound:
            return None
        except libvirt.libvirtError as error:
            found = mapped(error)
            if isinstance(found, (DomainNotFound, OperationInvalid)):
                return None
            raise found from error
        return dict(stats) if stats else None

    def job(self, name: str) -> JobProgress | None:
        """The active job's statistics, or None when no job runs. Source side only."""
        stats = self._job_stats(name)
        if stats is None or stats.get("type") not in ACTIVE_JOBS:
            return None
        return progress_from_stats(stats)

    def completed_job(self, name: str) -> JobProgress | None:
        """Statistics of the last completed job (on the target after an incoming migration)."""
        stats = self._job_stats(name, libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        if stats is None or stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
            return None
        return progress_from_stats(stats)

    def dirty_rate(self, name: str, *, seconds: int,
                   gate: Callable[[], AbstractContextManager[bool]] | None = None) -> float:
        """The guest's dirty rate over ``seconds``, by QEMU's page sampling, in bytes/s.

        Blocks for the period (plus a little). Page sampling works under TCG as
        under KVM; the dirty-bitmap and dirty-ring modes need KVM's dirty log.
        ``gate()`` is held while the calculation starts and may refuse it
        (False): libvirt's calculation started during a migration job blocks
        for 30 s and fails, while a job started during a calculation runs as
        usual (its reading is lost with the source's QEMU).
        """
        dom = self._domain(name)

        def stats() -> dict[str, Any]:
            found = self._conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
            return dict(found[0][1]) if found else {}

        with translated():
            before = stats().get("dirtyrate.calc_start_time")
            with gate() if gate is not None else contextlib.nullcontext(True) as allowed:
                if not allowed:
                    raise OperationInvalid(f"{name} is moving: its dirty rate is not measured")
                dom.startDirtyRateCalc(seconds, libvirt.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING)
            deadline = time.monotonic() + seconds + self.timeout_seconds
            time.sleep(seconds)
            while True:
                now = stats()
                # 2 is "measured"; the start time tells our calculation from an earlier one.
                if now.get("dirtyrate.calc_status") == 2 and now.get("dirtyrate.calc_start_time") != before:
                    return float(now.get("dirtyrate.megabytes_per_second", 0)) * 1024 * 1024
                if time.monotonic() > deadline:
                    raise OperationInvalid(f"the dirty-rate calculation of {name} did not finish")
                time.sleep(0.05)

    def suspend(self, name: str) -> None:
        with translated():
            self._domain(name).suspend()

    def resume(self, name: str) -> None:
        with translated():
            self._domain(name).resume()

    def abort_job(self, name: str) -> None:
        with translated():
            self._domain(name).abortJob()

    def pause_post_copy(self, name: str) -> None:
        with translated():
            self._domain(name).abortJobFlags(libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)

    def start_post_copy(self, name: str) -> None:
        with translated():
            self._domain(name).migrateStartPostCopy(0)

    def set_bandwidth(self, name: str, *, mib_per_s: int) -> None:
        """The running job's cap, pre-copy and post-copy alike; 0 lifts it."""
        # libvirt's own "unlimited" is the largest cap QEMU takes.
        cap = mib_per_s or UNLIMITED_MIB_PER_S
        with translated():
            dom = self._domain(name)
            dom.migrateSetMaxSpeed(cap, 0)
            with contextlib.suppress(libvirt.libvirtError):
                # Refused by a job that cannot switch to post-copy: nothing to cap there.
                dom.migrateSetMaxSpeed(cap, libvirt.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY)

    def set_max_downtime(self, name: str, *, milliseconds: int) -> None:
        with translated():
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
        dest_xml: str | None = None,
    ) -> None:
        """Blocks until the migration ends; raises MigrationAborted or MigrationFailed.
        ``dest_xml``: the definition the target gets (disks carried to other paths)."""
        params: dict[str, Any] = {}
        if dest_xml:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = dest_xml
        if migration_address:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{migration_address}"
        if bandwidth_mib_per_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mib_per_s
            if flags.post_copy:
                # QEMU's post-copy phase has a limit of its own, unlimited unless set:
                # without this a cap would hold only until the switch to post-copy.
                params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = bandwidth_mib_per_s
        if flags.parallel:
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = parallel_connections
            if flags.compressed:
                # libvirt's default method (xbzrle) does not work over
                # parallel connections; multifd compresses with zlib.
                params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = "zlib"
        dom = self._domain(name)
        with translated(MigrationFailed):
            if flags.peer_to_peer:
                dom.migrateToURI3(peer_uri(target_uri), params, flag_bits(flags))
            else:
                # Managed direct migration: the client drives both ends.
                try:
                    target = connection(target_uri, timeout_seconds=self.timeout_seconds)
                except HostUnreachable as error:
                    raise MigrationFailed(str(error)) from error
                try:
                    dom.migrate3(target, params, flag_bits(flags))
                finally:
                    target.close()
