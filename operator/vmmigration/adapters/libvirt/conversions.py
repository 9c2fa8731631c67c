"""libvirt's numbers and XML turned into vmmigration's values, and back."""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from vmmigration.core.model import CLIENT_FILE_PARAMETERS, JobDirection, JobProgress, PauseReason, PowerState
from vmmigration.core.planner import MigrationFlags

STATES = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUT_OFF,
}
PAUSE_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_USER: PauseReason.USER,
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: PauseReason.MIGRATION,
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: PauseReason.STARTING_UP,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: PauseReason.POST_COPY,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: PauseReason.POST_COPY_FAILED,
}

ACTIVE_JOBS = {libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED}
# Pause reasons a migration gives, at either of its ends.
MIGRATION_PAUSES = {PauseReason.MIGRATION, PauseReason.STARTING_UP}


def direction_from_stats(stats: dict[str, Any]) -> JobDirection:
    """The end of a migration a domain is, from ``virDomainGetJobStats``' operation."""
    operation = stats.get("operation")
    if stats.get("type") in ACTIVE_JOBS or operation is not None:
        if operation == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
            return JobDirection.OUTGOING
        if operation == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN:
            return JobDirection.INCOMING
    return JobDirection.NONE

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
    "post_copy_resume": libvirt.VIR_MIGRATE_POSTCOPY_RESUME,
}


def flag_bits(flags: MigrationFlags) -> int:
    bits = 0
    for name, bit in _FLAG_BITS.items():
        if getattr(flags, name):
            bits |= bit
    return bits


def source_path(element: ET.Element) -> str | None:
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


def peer_uri(uri: str) -> str:
    """The target URI as the *source libvirtd* must see it in a peer-to-peer migration.

    There the source daemon, not this process, connects to the target, and it
    reads any ``pkipath``/``keyfile``/``known_hosts`` on its own host. Those
    name the operator's credential files (inside its pod), which the host does
    not have; the daemon must use its own client identity from /etc/pki or
    its ssh set-up instead. The operator reaches an SSH host over libssh (see
    ``service.credentials``); the daemon uses plain ``qemu+ssh://`` with its
    own ssh binary, key and known_hosts, as ``virsh migrate --p2p`` would.
    """
    parts = urllib.parse.urlsplit(uri)
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k not in CLIENT_FILE_PARAMETERS and k != "sshauth"]
    driver, _, transport = parts.scheme.partition("+")
    scheme = f"{driver}+ssh" if transport in ("libssh", "libssh2") else parts.scheme
    return urllib.parse.urlunsplit(parts._replace(
        scheme=scheme, query=urllib.parse.urlencode(kept, safe="/")))
