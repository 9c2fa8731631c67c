"""Pure pre-checks: given what the hosts report, may this domain move?

Each check returns a :class:`Finding` with its own reason and a message that
tells the user what to do. The engine gathers the facts (I/O) and raises if
any finding is present, before it changes anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vmmigration.core.model import MIB, DiskImage, DomainSummary, HostVersions, Storage, format_version


@dataclasses.dataclass(frozen=True)
class Finding:
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class CpuVerdict:
    compatible: bool
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class MachineVerdict:
    """Whether the target's QEMU has the domain's machine type (``pc-q35-10.0``…)."""

    machine: str
    supported: bool = True
    # The versioned machine types of the same family the target does have, newest first.
    offered: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SourceFacts:
    host: str
    domain: DomainSummary
    versions: HostVersions
    disks: tuple[DiskImage, ...]
    host_uuid: str = ""


@dataclasses.dataclass(frozen=True)
class TargetFacts:
    host: str
    versions: HostVersions
    free_memory_bytes: int
    domains: tuple[DomainSummary, ...]
    cpu: CpuVerdict
    invisible_disks: tuple[str, ...]
    host_uuid: str = ""
    # Of the invisible disks: those in a directory no storage pool on the
    # target manages (libvirt cannot create them there) …
    uncreatable_disks: tuple[str, ...] = ()
    # … and backing files the target cannot see (CopyIncremental needs them).
    invisible_backing: tuple[str, ...] = ()
    machine: MachineVerdict = MachineVerdict(machine="")


def check_distinct_hosts(*, source: SourceFacts, target: TargetFacts) -> list[Finding]:
    # Two URIs can name one host (an alias, a unix and a TCP socket); the host
    # UUID cannot lie, and libvirt would refuse the move only half-way through.
    if source.host_uuid and source.host_uuid == target.host_uuid:
        return [
            Finding(
                "SameHost",
                f"{source.host} and {target.host} are the same host (uuid {source.host_uuid}); "
                "pick a different target",
            )
        ]
    return []


def check_placement(*, source: SourceFacts, target: TargetFacts) -> list[Finding]:
    """The domain must not already run on the target, and nothing there may share its name or UUID."""
    found = []
    mine = source.domain
    for other in target.domains:
        same_uuid = other.uuid == mine.uuid
        same_name = other.name == mine.name
        if same_uuid and same_name and other.active:
            found.append(
                Finding(
                    "DomainAlreadyOnTarget",
                    f"domain {mine.name} is already active on {target.host} as well as on "
                    f"{source.host}; resolve which copy is authoritative before moving it",
                )
            )
        elif same_name and not same_uuid:
            found.append(
                Finding(
                    "NameClash",
                    f"{target.host} already has a different domain named {mine.name} "
                    f"(uuid {other.uuid}); rename or remove it first",
                )
            )
        elif same_uuid and not same_name:
            found.append(
                Finding(
                    "UuidClash",
                    f"{target.host} already has domain {other.name} with uuid {mine.uuid}; "
                    "two domains cannot share a uuid",
                )
            )
    return found


def check_memory(*, source: SourceFacts, target: TargetFacts) -> list[Finding]:
    # A shut-off domain needs its memory on the target too: a VM placed where
    # it cannot start is not placed.
    need = source.domain.memory_bytes
    if target.free_memory_bytes < need:
        return [
            Finding(
                "InsufficientMemory",
                f"{target.host} has {target.free_memory_bytes // MIB} MiB free, domain "
                f"{source.domain.name} needs {need // MIB} MiB",
            )
        ]
    return []


def check_cpu(*, source: SourceFacts, target: TargetFacts) -> list[Finding]:
    if target.cpu.compatible:
        return []
    detail = f": {target.cpu.detail}" if target.cpu.detail else ""
    return [
        Finding(
            "CpuIncompatible",
            f"the CPU of domain {source.domain.name} is not compatible with {target.host}{detail}",
        )
    ]


def check_storage(*, storage: Storage, target: TargetFacts) -> list[Finding]:
    if storage is Storage.SHARED:
        if not target.invisible_disks:
            return []
        return [
            Finding(
                "DiskNotVisible",
                f"storage is Shared but {target.host} cannot see {', '.join(target.invisible_disks)}; "
                "put the disks on storage both hosts share, or use storage CopyAll",
            )
        ]
    found = []
    if target.uncreatable_disks:
        found.append(
            Finding(
                "NoTargetPool",
                f"{target.host} has no storage pool for the directory of "
                f"{', '.join(target.uncreatable_disks)}; define one so the copy can be created",
            )
        )
    if storage is Storage.COPY_INCREMENTAL and target.invisible_backing:
        found.append(
            Finding(
                "BackingNotVisible",
                f"CopyIncremental copies only the top image, but {target.host} cannot see its "
                f"backing file {', '.join(target.invisible_backing)}; share it, or use CopyAll",
            )
        )
    return found


def check_machine(*, source: SourceFacts, target: TargetFacts) -> list[Finding]:
    """A machine type is the guest's hardware: QEMU cannot start the incoming side without it.
    An older QEMU lacks the newer versioned types; a newer one drops the oldest."""
    verdict = target.machine
    if verdict.supported or not verdict.machine:
        return []
    offered = (f" (it offers {', '.join(verdict.offered[:3])})" if verdict.offered else "")
    return [
        Finding(
            "MachineTypeUnsupported",
            f"{target.host}'s QEMU {format_version(target.versions.hypervisor)} has no machine "
            f"type {verdict.machine}, which domain {source.domain.name} runs with{offered}; "
            "a machine type cannot change while the VM runs: move it to a host whose QEMU "
            "has it, or change it at the VM's next cold boot",
        )
    ]


def check_versions(*, source: SourceFacts, target: TargetFacts,
                   allow_older: bool = False) -> list[Finding]:
    """Vendors support forward moves only. ``allow_older`` (policy.allowOlderTarget) lets a
    move go back to an older libvirt or QEMU, as rolling an upgrade back needs, and leaves
    the machine type and CPU checks to refuse what the older side cannot run."""
    if allow_older:
        return []
    found = []
    for what, mine, theirs in (
        ("libvirt", source.versions.libvirt, target.versions.libvirt),
        ("QEMU", source.versions.hypervisor, target.versions.hypervisor),
    ):
        if theirs < mine:
            found.append(
                Finding(
                    "TargetOlder",
                    f"{target.host} runs {what} {format_version(theirs)}, older than "
                    f"{format_version(mine)} on {source.host}; migrating to an older "
                    f"{what} is unsupported unless policy.allowOlderTarget is set (the "
                    "guest's machine type and CPU model are then checked against it)",
                )
            )
    return found


def evaluate(*, source: SourceFacts, target: TargetFacts, storage: Storage,
             allow_older: bool = False) -> Sequence[Finding]:
    same_host = check_distinct_hosts(source=source, target=target)
    if same_host:
        # Every other check would compare the host with itself and mislead.
        return same_host
    return [
        *check_placement(source=source, target=target),
        *check_versions(source=source, target=target, allow_older=allow_older),
        *check_machine(source=source, target=target),
        *check_cpu(source=source, target=target),
        *check_memory(source=source, target=target),
        *check_storage(storage=storage, target=target),
    ]
