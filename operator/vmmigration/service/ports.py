"""The seams between the application and the outside: what it needs of a libvirt host,
of the Kubernetes API and of the metrics it exports.

The adapters implement these (``vmmigration.adapters.libvirt``, ``.kube``,
``.prometheus``) and the composition roots (the kopf handlers, the CLI) wire
them in; tests substitute fakes. Nothing here imports an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from vmmigration.core.model import (
    DiskImage,
    DomainSummary,
    HostReport,
    HostVersions,
    JobProgress,
)
from vmmigration.core.planner import MigrationFlags
from vmmigration.core.prechecks import CpuVerdict


class LibvirtHost(Protocol):
    """One open connection to a libvirt host, with the verbs the engine uses.

    Every verb raises :class:`vmmigration.core.errors.VirtError` (or a
    subclass) on failure, and answers or fails within the connection's timeout.
    """

    uri: str

    def close(self) -> None: ...

    def __enter__(self) -> LibvirtHost: ...

    def __exit__(self, *exc: object) -> None: ...

    # facts
    def versions(self) -> HostVersions: ...

    def host_uuid(self) -> str: ...

    def cpu_model(self) -> str: ...

    def memory_total_bytes(self) -> int: ...

    def free_memory_bytes(self) -> int: ...

    def compare_cpu(self, *, domain_xml: str) -> CpuVerdict: ...

    # domains
    def domains(self) -> tuple[DomainSummary, ...]: ...

    def find(self, name: str) -> DomainSummary | None: ...

    def domain_xml(self, name: str, *, inactive: bool = False) -> str: ...

    def suspend(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...

    def dirty_rate(self, name: str, *, seconds: int,
                   gate: Callable[[], AbstractContextManager[bool]] | None = None) -> float:
        """``gate()`` is entered around the calculation's start; False refuses it."""
        ...

    # storage
    def disks(self, name: str) -> tuple[DiskImage, ...]: ...

    def disk_capacity(self, name: str, path: str) -> int: ...

    def disk_visible(self, path: str) -> bool: ...

    def has_pool_for(self, path: str) -> bool: ...

    def create_image(self, image: DiskImage, *, capacity_bytes: int) -> None: ...

    def delete_image(self, path: str) -> None: ...

    # migration jobs
    def job(self, name: str) -> JobProgress | None: ...

    def completed_job(self, name: str) -> JobProgress | None: ...

    def abort_job(self, name: str) -> None: ...

    def start_post_copy(self, name: str) -> None: ...

    def set_bandwidth(self, name: str, *, mib_per_s: int) -> None: ...

    def set_max_downtime(self, name: str, *, milliseconds: int) -> None: ...

    def migrate(self, name: str, *, target_uri: str, flags: MigrationFlags,
                bandwidth_mib_per_s: int = 0, parallel_connections: int = 1,
                migration_address: str | None = None) -> None: ...


class Connect(Protocol):
    """Opens a :class:`LibvirtHost`; raises HostUnreachable when it cannot."""

    def __call__(self, uri: str, *, timeout_seconds: float) -> LibvirtHost: ...


class Probe(Protocol):
    """One probe of a host by URI; an unreachable host is a report, never an exception."""

    def __call__(self, uri: str) -> HostReport: ...


class Kube(Protocol):
    """The Kubernetes API, as far as the runtime needs it."""

    def read_secret(self, *, namespace: str, name: str) -> Mapping[str, bytes]: ...

    def patch_vmmigration_status(self, *, namespace: str, name: str,
                                 patch: Mapping[str, Any]) -> None: ...


class EventPoster(Protocol):
    def __call__(self, body: Any, *, type: str, reason: str, message: str) -> None: ...


class Stopped(Protocol):
    """kopf's daemon stop flag, as far as the runtime needs it."""

    def __bool__(self) -> bool: ...

    def is_deleted(self) -> bool: ...

    async def until_stopped(self) -> None: ...


class Metrics(Protocol):
    """What the application records; the Prometheus adapter implements it.

    Counts of migrations running and queued are not pushed here: the exporter
    reads them from the :class:`~vmmigration.core.limiter.Limiter`.
    """

    def probed(self, name: str, report: HostReport) -> None: ...

    def hypervisor_gone(self, name: str) -> None: ...

    def sample(self, key: str, progress: JobProgress | None, *, percent: float) -> None: ...

    def ended(self, key: str, *, mode: str, result: str, duration_seconds: float | None = None,
              downtime_ms: int | None = None, transferred_bytes: int = 0) -> None: ...

    def forecast_checked(self, *, quantity: str, ratio: float) -> None: ...

    def left(self, key: str) -> None: ...

    def set_drift(self, key: str, *, drifted: bool) -> None: ...

    def set_failed(self, key: str, *, failed: bool) -> None: ...

    def forget(self, key: str) -> None: ...

    def libvirt_error(self, operation: str) -> None: ...

    def status_patched(self, resource: str) -> None: ...

    def reconcile_error(self) -> None: ...
