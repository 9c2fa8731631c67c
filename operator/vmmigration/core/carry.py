"""Pure: carrying a shut-off domain's disks to the target through libvirt's volume streams.

An Offline move with a storage mode that copies (CopyAll, CopyIncremental) sends each
volume the target cannot see through the operator: ``virStorageVolDownload`` on the
source, ``virStorageVolUpload`` on the target, sparse both ways. This module holds the
rules: which volumes go where (:func:`plan`), what refuses the move before anything is
made, and the progress the status shows (:class:`Tally`). The stream's digest and pace are
in :mod:`vmmigration.core.streams`.

A copy is the volume's file, byte for byte: a qcow2 container arrives as the same qcow2
container, with the same format, capacity and backing reference. That is why a backing
layer must land at the path it had: the image above names it inside its header.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence

from vmmigration.core.model import MIB, Storage
from vmmigration.core.prechecks import Finding

# A partial copy is marked by a small volume beside it, named after it. The marker lives in
# the target pool itself, so whoever looks next (the retry, an operator restarted after a
# crash, an SRE with virsh) knows the volume is an unfinished copy, whatever else was lost.
MARKER_SUFFIX = ".vmm-partial"


def marker_name(volume_name: str) -> str:
    return volume_name + MARKER_SUFFIX


def marked_volume(name: str) -> str | None:
    """The volume a marker's name stands beside, or None when ``name`` is no marker."""
    return name[: -len(MARKER_SUFFIX)] if name.endswith(MARKER_SUFFIX) and name != MARKER_SUFFIX else None


@dataclasses.dataclass(frozen=True)
class Volume:
    """A storage volume as its host reports it."""

    path: str
    pool: str
    name: str
    format: str  # raw, qcow2, …
    capacity_bytes: int  # what the guest sees
    physical_bytes: int  # the file's length: what a copy must reproduce
    allocation_bytes: int  # what it occupies: about what a sparse stream sends
    backing: str | None = None
    kind: str = "file"  # libvirt's volume type; only files are carried
    # The file's modification time as libvirt reports it: unchanged from the plan to the
    # verification means the source was not written while it was read.
    mtime: str = ""


@dataclasses.dataclass(frozen=True)
class Pool:
    name: str
    path: str
    available_bytes: int
    active: bool = True
    kind: str = "dir"


@dataclasses.dataclass(frozen=True)
class Chain:
    """One disk of the domain and its backing layers on the source, top first.

    ``unmanaged`` names the first layer no source pool holds (libvirt cannot read it
    as a volume); ``visible`` flags, per layer, whether the target sees that path already.
    """

    layers: tuple[Volume, ...]
    visible: tuple[bool, ...]
    unmanaged: str | None = None
    # Whether the target sees the unmanaged layer's path (it cannot be compared, only found).
    unmanaged_visible: bool = False


@dataclasses.dataclass(frozen=True)
class Slot:
    """What the target holds at a path a copy would be written to."""

    exists: bool = False
    # A leftover of an earlier copy of ours: its marker is beside it and no domain uses it.
    ours: bool = False
    allocation_bytes: int = 0
    # Our marker is there (with or without the volume): removed before the copy starts.
    marked: bool = False


@dataclasses.dataclass(frozen=True)
class VolumeCopy:
    source: Volume
    target_pool: str
    target_path: str
    layer: int  # 0: the disk the domain names; 1, 2, …: its backing layers

    @property
    def target_name(self) -> str:
        return os.path.basename(self.target_path)


@dataclasses.dataclass(frozen=True)
class CarryPlan:
    copies: tuple[VolumeCopy, ...]
    # Disk paths to rewrite in the definition the target gets (a copy in another directory).
    rewrites: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # What the target held at each copy's path when planned: our leftovers are removed first.
    slots: Mapping[str, Slot] = dataclasses.field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(c.source.allocation_bytes for c in self.copies)

    @property
    def top(self) -> tuple[VolumeCopy, ...]:
        """The copies of the domain's own disks: the only source volumes ever deleted
        (a backing layer may be shared by other domains)."""
        return tuple(c for c in self.copies if c.layer == 0)

    def as_fields(self) -> list[dict[str, object]]:
        """``status.plan.volumes``: what will be copied where, shown before anything moves."""
        return [{"source": c.source.path, "target": c.target_path, "pool": c.target_pool,
                 "format": c.source.format, "bytes": c.source.allocation_bytes,
                 "capacityBytes": c.source.capacity_bytes, "layer": c.layer} for c in self.copies]


class CarryRefused(ValueError):
    def __init__(self, findings: Sequence[Finding]) -> None:
        super().__init__("; ".join(f"{f.reason}: {f.message}" for f in findings))
        self.findings = list(findings)


def plan(*, storage: Storage, chains: Sequence[Chain], pools: Mapping[str, Pool],
         slot: Callable[[VolumeCopy], Slot], target_pool: str | None, target: str) -> CarryPlan:
    """Which volumes go where; raises CarryRefused (with every reason at once) or returns the plan.

    ``pools``: the target's pools by name; ``slot``: what the target holds where a copy
    would be written.
    """
    if storage is Storage.SHARED:
        raise ValueError("storage Shared copies nothing")
    findings: list[Finding] = []
    copies: list[VolumeCopy] = []
    rewrites: dict[str, str] = {}
    for chain in chains:
        if chain.visible[0]:
            continue  # shared: nothing to carry
        found, carried = _chain_copies(chain, storage=storage, pools=pools, target_pool=target_pool,
                                       target=target)
        findings += found
        copies += carried
        rewrites.update({c.source.path: c.target_path for c in carried
                         if c.layer == 0 and c.target_path != c.source.path})
    slots = {c.target_path: slot(c) for c in copies}
    findings += _clashes(copies, slots=slots, target=target)
    findings += _room(copies, pools=pools, slots=slots, target=target)
    if findings:
        raise CarryRefused(findings)
    return CarryPlan(copies=tuple(copies), rewrites=rewrites, slots=slots)


def _chain_copies(chain: Chain, *, storage: Storage, pools: Mapping[str, Pool], target_pool: str | None,
                  target: str) -> tuple[list[Finding], list[VolumeCopy]]:
    """The copies one disk needs, top first, down to the first layer the target sees."""
    findings: list[Finding] = []
    copies: list[VolumeCopy] = []
    top = chain.layers[0]
    depth = 1 if storage is Storage.COPY_INCREMENTAL else len(chain.layers)
    for layer, volume in enumerate(chain.layers[:depth]):
        if layer > 0 and chain.visible[layer]:
            return findings, copies  # the target has the rest of the chain
        if volume.kind != "file":
            findings.append(Finding("VolumeNotAFile", f"{volume.path} is a {volume.kind} volume; "
                                    "only file volumes are carried (move it with shared storage)"))
            continue
        pool_name = (target_pool or volume.pool) if layer == 0 else volume.pool
        pool = pools.get(pool_name)
        if pool is None or not pool.active:
            findings.append(Finding(
                "NoTargetPool", f"{target} has no active storage pool {pool_name} for {volume.path}; "
                "define it there, or name another with spec.volumes.targetPool"))
            continue
        if pool.kind not in ("dir", "fs", "netfs"):
            findings.append(Finding("TargetPoolType", f"pool {pool_name} on {target} is of type "
                                    f"{pool.kind}; volumes are carried only into file pools"))
            continue
        path = os.path.join(pool.path, volume.name)
        if layer > 0 and path != volume.path:
            findings.append(Finding(
                "BackingChainPath",
                f"{chain.layers[layer - 1].path} names its backing file {volume.path} inside the "
                f"image, but pool {pool_name} on {target} keeps files in {pool.path}; give the pool "
                "the same directory on both hosts, or flatten the image first"))
            continue
        copies.append(VolumeCopy(source=volume, target_pool=pool_name, target_path=path, layer=layer))
    if storage is Storage.COPY_INCREMENTAL:
        below = chain.layers[1].path if len(chain.layers) > 1 else chain.unmanaged
        seen = chain.visible[1] if len(chain.layers) > 1 else chain.unmanaged_visible
        if below is not None and not seen:
            findings.append(Finding(
                "BackingNotVisible", f"CopyIncremental carries only the top image {top.path}, but "
                f"{target} cannot see its backing file {below}; share it, or use CopyAll"))
    elif chain.unmanaged is not None and not chain.unmanaged_visible:
        findings.append(Finding(
            "BackingNotAVolume",
            f"the backing file {chain.unmanaged} of {top.path} is in no storage pool on the "
            "source, so libvirt cannot read it; define a pool for its directory"))
    return findings, copies


def rewritten(domain_xml: str, rewrites: Mapping[str, str]) -> str:
    """The definition the target gets: each carried disk's source names its copy."""
    root = ET.fromstring(domain_xml)
    for disk in root.iter("disk"):
        source = disk.find("source")
        if source is not None and source.get("file") in rewrites:
            source.set("file", rewrites[source.get("file") or ""])
    return ET.tostring(root, encoding="unicode")


def _clashes(copies: Sequence[VolumeCopy], *, slots: Mapping[str, Slot], target: str) -> list[Finding]:
    found = []
    seen: dict[str, str] = {}
    for copy in copies:
        slot = slots.get(copy.target_path, Slot())
        if slot.exists and not slot.ours:
            found.append(Finding(
                "VolumeExists", f"pool {copy.target_pool} on {target} already has a volume "
                f"{copy.target_name}; it is never overwritten: remove or rename it, or name another "
                "pool with spec.volumes.targetPool"))
        if copy.target_path in seen:
            found.append(Finding("VolumeNameClash", f"{seen[copy.target_path]} and {copy.source.path} "
                                 f"would both be copied to {copy.target_path}"))
        seen[copy.target_path] = copy.source.path
    return found


def _room(copies: Sequence[VolumeCopy], *, pools: Mapping[str, Pool], slots: Mapping[str, Slot],
          target: str) -> list[Finding]:
    found = []
    need: dict[str, int] = {}
    freed: dict[str, int] = {}
    for copy in copies:
        need[copy.target_pool] = need.get(copy.target_pool, 0) + copy.source.allocation_bytes
        slot = slots.get(copy.target_path, Slot())
        if slot.ours:  # removed before the copy starts
            freed[copy.target_pool] = freed.get(copy.target_pool, 0) + slot.allocation_bytes
    for name, bytes_needed in need.items():
        available = pools[name].available_bytes + freed.get(name, 0)
        if bytes_needed > available:
            found.append(Finding(
                "TargetPoolFull", f"pool {name} on {target} has {available // MIB} MiB available; "
                f"the copies need {-(-bytes_needed // MIB)} MiB"))
    return found


@dataclasses.dataclass
class DiskProgress:
    source: str
    target: str
    total_bytes: int
    copied_bytes: int = 0
    state: str = "Pending"  # Pending, Copying, Verifying, Verified, Failed

    def as_fields(self) -> dict[str, object]:
        return {"source": self.source, "target": self.target, "totalBytes": self.total_bytes,
                "copiedBytes": self.copied_bytes, "state": self.state}


class Tally:
    """The copy's progress across every volume, with a rate over the last few seconds."""

    WINDOW_SECONDS = 5.0

    def __init__(self, plan: CarryPlan, *, started: float) -> None:
        self.disks = [DiskProgress(source=c.source.path, target=c.target_path,
                                   total_bytes=c.source.allocation_bytes) for c in plan.copies]
        self.started = started
        self.sent_bytes = 0  # data on the wire, holes excluded: the sparse stream's cost
        self.hole_bytes = 0
        self._samples: list[tuple[float, int]] = [(started, 0)]

    def add(self, index: int, *, data: int = 0, hole: int = 0, now: float) -> None:
        disk = self.disks[index]
        disk.copied_bytes = min(disk.total_bytes, disk.copied_bytes + data) if disk.total_bytes else 0
        self.sent_bytes += data
        self.hole_bytes += hole
        self._samples.append((now, self.sent_bytes))
        while len(self._samples) > 2 and now - self._samples[1][0] > self.WINDOW_SECONDS:
            self._samples.pop(0)

    @property
    def total_bytes(self) -> int:
        return sum(d.total_bytes for d in self.disks)

    @property
    def copied_bytes(self) -> int:
        return sum(d.copied_bytes for d in self.disks)

    def rate(self, *, now: float) -> float:
        start, sent = self._samples[0]
        return (self.sent_bytes - sent) / (now - start) if now > start else 0.0

    def percent(self) -> float:
        total = self.total_bytes
        if not total:
            return 100.0 if all(d.state == "Verified" for d in self.disks) else 0.0
        return 100.0 * self.copied_bytes / total

    def eta_seconds(self, *, now: float) -> float | None:
        rate = self.rate(now=now)
        return (self.total_bytes - self.copied_bytes) / rate if rate > 0 else None
