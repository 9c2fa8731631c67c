"""Carries a shut-off domain's volumes to the target through libvirt, before its definition moves.

An Offline move with a storage mode that copies runs in three steps here and one in
the engine: :func:`survey` reads both hosts and makes the plan (or refuses it, changing
nothing); :meth:`Carrier.carry` marks, creates, streams and verifies every copy; the
engine then has libvirt move the definition; :meth:`Carrier.finish` removes the markers
and, when asked, the source volumes. Whatever fails before the definition is on the
target, :meth:`Carrier.discard` removes what was made there, and the source was only read.

A marker volume stands beside every copy until the move is over, so a copy cut short
by a crash is found and removed by the next attempt (see :func:`vmmigration.core.carry.plan`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from vmmigration.core import carry, streams
from vmmigration.core.carry import CarryPlan, Chain, Slot, Tally, VolumeCopy
from vmmigration.core.errors import VirtError
from vmmigration.core.location import Location
from vmmigration.core.model import (
    DiskCopy,
    EffectiveMode,
    JobProgress,
    MigrationRequest,
    PowerState,
    Storage,
    Update,
    display_uri,
)
from vmmigration.core.prechecks import Finding
from vmmigration.core.reasons import Reason
from vmmigration.service.monitor import Detached, quietly
from vmmigration.service.outcomes import MigrationCancelled, MigrationError
from vmmigration.service.ports import LibvirtHost, Volumes

log = logging.getLogger(__name__)

# How often the copy reports its progress (the status is written at its own pace).
UPDATE_SECONDS = 0.5
# A backing chain deeper than this is refused rather than followed (a loop, or worse).
MAX_CHAIN = 16


def wanted(request: MigrationRequest, *, offline: bool) -> bool:
    """Whether the operator carries the disks itself (libvirt copies them only for a running VM)."""
    return offline and request.storage is not Storage.SHARED


def survey(request: MigrationRequest, *, source: LibvirtHost, target: LibvirtHost) -> CarryPlan:
    """Read both hosts' volumes and plan the copies; carry.CarryRefused says every reason why not."""
    source.volumes.refresh()
    target.volumes.refresh()
    findings: list[Finding] = []
    chains = []
    for disk in source.disks(request.domain):
        chain = _chain(disk.path, source=source.volumes, target=target.volumes)
        if chain is None:
            findings.append(Finding(
                "DiskNotAVolume", f"the disk {disk.path} of {request.domain} is in no storage pool "
                f"on {display_uri(source.uri)}, so libvirt cannot read it; define a pool for its "
                "directory"))
        else:
            chains.append(chain)
    if findings:
        raise carry.CarryRefused(findings)
    in_use: set[str] | None = None
    names: dict[str, set[str]] = {}

    def slot(copy: VolumeCopy) -> Slot:
        nonlocal in_use
        there = target.volumes.volume(copy.target_path)
        if copy.target_pool not in names:
            names[copy.target_pool] = target.volumes.names(copy.target_pool)
        marked = carry.marker_name(copy.target_name) in names[copy.target_pool]
        if there is None:
            return Slot(marked=marked)
        if in_use is None:
            in_use = target.volumes.in_use()
        return Slot(exists=True, ours=marked and there.path not in in_use,
                    allocation_bytes=there.allocation_bytes, marked=marked)

    return carry.plan(storage=request.storage, chains=chains, pools=target.volumes.pools(),
                      slot=slot, target_pool=request.volumes.target_pool,
                      target=display_uri(target.uri))


def _chain(path: str, *, source: Volumes, target: Volumes) -> Chain | None:
    top = source.volume(path)
    if top is None:
        return None
    layers = [top]
    unmanaged = None
    while layers[-1].backing and len(layers) < MAX_CHAIN:
        below = source.volume(layers[-1].backing or "")
        if below is None:
            unmanaged = layers[-1].backing
            break
        layers.append(below)
    return Chain(layers=tuple(layers), visible=tuple(_same_file(v, target.volume(v.path)) for v in layers),
                 unmanaged=unmanaged,
                 unmanaged_visible=unmanaged is not None and target.volume(unmanaged) is not None)


def _same_file(mine: carry.Volume, theirs: carry.Volume | None) -> bool:
    """Whether the target's volume at the same path is this very file (shared storage), not
    another that happens to have its name: the modification time to the nanosecond and the
    sizes match only for one file (a different one at that path is refused as a clash)."""
    return theirs is not None and (theirs.mtime, theirs.physical_bytes, theirs.capacity_bytes) == (
        mine.mtime, mine.physical_bytes, mine.capacity_bytes) and bool(mine.mtime)


@dataclasses.dataclass
class Carried:
    """What one carry made on the target (removed again unless the move completes)."""

    plan: CarryPlan
    made: list[VolumeCopy] = dataclasses.field(default_factory=list)
    marked: list[VolumeCopy] = dataclasses.field(default_factory=list)
    sent_bytes: int = 0
    hole_bytes: int = 0
    seconds: float = 0.0


class Carrier:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.clock = clock
        self.sleep = sleep

    def carry(self, request: MigrationRequest, plan: CarryPlan, *, source: LibvirtHost,
              target: LibvirtHost, cancel: threading.Event, detach: threading.Event | None,
              on_update: Callable[[Update], None] | None) -> Carried:
        """Every copy made and verified on the target, or nothing left there and an error."""
        carried = Carried(plan=plan)
        started = self.clock()
        tally = Tally(plan, started=started)
        try:
            self._clear_leftovers(plan, target=target.volumes)
            for copy in plan.copies:
                target.volumes.mark(pool=copy.target_pool, name=copy.target_name, note={
                    "domain": request.domain, "source": display_uri(request.source_uri),
                    "from": copy.source.path})
                carried.marked.append(copy)
            for index, copy in enumerate(plan.copies):
                target.volumes.create(pool=copy.target_pool, name=copy.target_name,
                                      length=copy.source.physical_bytes)
                carried.made.append(copy)
                self._copy(request, index, copy, tally=tally, source=source.volumes,
                           target=target.volumes, cancel=cancel, detach=detach, on_update=on_update)
            self._check_source_unchanged(request, plan, source=source)
        except BaseException as error:
            self.discard(request, carried, target=target)
            if isinstance(error, (MigrationError, Detached)):
                raise
            if isinstance(error, VirtError):
                raise MigrationError(
                    f"copying the disks of {request.domain} to {display_uri(target.uri)} failed: "
                    f"{error}; nothing was left on the target and the VM is still defined on the "
                    "source", location=Location.SOURCE, last=self._progress(tally),
                    reason=Reason.COPY_FAILED) from error
            raise
        carried.sent_bytes, carried.hole_bytes = tally.sent_bytes, tally.hole_bytes
        carried.seconds = self.clock() - started
        log.info("carried %d volume(s) of %s: %d bytes of data (%d of holes) in %.1f s",
                 len(plan.copies), request.domain, tally.sent_bytes, tally.hole_bytes, carried.seconds)
        return carried

    def _clear_leftovers(self, plan: CarryPlan, *, target: Volumes) -> None:
        """Our own unfinished copies from an earlier attempt (the plan proved them ours)."""
        for copy in plan.copies:
            slot = plan.slots.get(copy.target_path, Slot())
            if slot.ours:
                log.info("removing the unfinished copy %s left by an earlier attempt", copy.target_path)
                target.delete(copy.target_path)
            if slot.marked and (slot.ours or not slot.exists):
                target.unmark(pool=copy.target_pool, name=copy.target_name)

    def _copy(self, request: MigrationRequest, index: int, copy: VolumeCopy, *, tally: Tally,
              source: Volumes, target: Volumes, cancel: threading.Event,
              detach: threading.Event | None, on_update: Callable[[Update], None] | None) -> None:
        sent = streams.ContentDigest()
        pacer = streams.Pacer(mib_per_s=request.policy.bandwidth_mib_per_s, started=self.clock())
        disk = tally.disks[index]
        disk.state = "Copying"
        reader = source.download(copy.source.path)
        writer = target.upload(copy.target_path)
        reported = 0.0
        try:
            while True:
                self._stop_if_asked(request, cancel=cancel, detach=detach, tally=tally)
                got = reader.read()
                now = self.clock()
                if got == b"":
                    break
                if isinstance(got, int):
                    writer.hole(got)
                    tally.add(index, hole=got, now=now)
                else:
                    wait = pacer.wait_seconds(now=now)
                    if wait > 0:
                        self.sleep(wait)
                    writer.write(got)
                    pacer.sent_data(len(got))
                    tally.add(index, data=len(got), now=self.clock())
                sent.feed(got)
                if on_update is not None and now - reported >= UPDATE_SECONDS:
                    reported = now
                    on_update(self._update(request, tally))
            reader.finish()
            writer.finish()
        except BaseException:
            reader.abort()
            writer.abort()
            raise
        disk.state = "Verifying"
        if on_update is not None:
            on_update(self._update(request, tally))
        back = self._digest(target, copy.target_path, request=request, cancel=cancel, detach=detach,
                            tally=tally)
        expected = (copy.source.physical_bytes, sent.hexdigest())
        if sent.length != copy.source.physical_bytes or back != expected:
            disk.state = "Failed"
            raise MigrationError(
                f"the copy of {copy.source.path} on the target does not match what was sent "
                f"({back[0]} bytes read back, {sent.length} sent, {copy.source.physical_bytes} "
                "expected); it was removed and the VM is still defined on the source",
                location=Location.SOURCE, last=self._progress(tally), reason=Reason.COPY_MISMATCH)
        disk.state = "Verified"
        disk.copied_bytes = disk.total_bytes
        if on_update is not None:
            on_update(self._update(request, tally))

    def _digest(self, volumes: Volumes, path: str, *, request: MigrationRequest,
                cancel: threading.Event, detach: threading.Event | None, tally: Tally) -> tuple[int, str]:
        """The target's copy read back, as (length, digest)."""
        digest = streams.ContentDigest()
        reader = volumes.download(path)
        try:
            while True:
                self._stop_if_asked(request, cancel=cancel, detach=detach, tally=tally)
                got = reader.read()
                if got == b"":
                    break
                digest.feed(got)
            reader.finish()
        except BaseException:
            reader.abort()
            raise
        return digest.length, digest.hexdigest()

    def _stop_if_asked(self, request: MigrationRequest, *, cancel: threading.Event,
                       detach: threading.Event | None, tally: Tally) -> None:
        if cancel.is_set():
            raise MigrationCancelled(
                f"the disk copy of {request.domain} was aborted on request; the copies were "
                "removed from the target and the VM is still defined on the source",
                location=Location.SOURCE, last=self._progress(tally), reason=Reason.ABORTED)
        if detach is not None and detach.is_set():
            # The copy runs in this process, so it cannot be left running for the next
            # operator: it is removed here, and the next one starts it again.
            raise Detached(f"stopped the disk copy of {request.domain} for the next operator")

    def _check_source_unchanged(self, request: MigrationRequest, plan: CarryPlan, *,
                                source: LibvirtHost) -> None:
        """The source was not written while it was read: same sizes, same modification time,
        and the domain still shut off. Otherwise the copies may hold a torn image."""
        source.volumes.refresh()
        changed = []
        for copy in plan.copies:
            now = source.volumes.volume(copy.source.path)
            if now is None or (now.mtime, now.physical_bytes) != (copy.source.mtime,
                                                                  copy.source.physical_bytes):
                changed.append(copy.source.path)
        domain = source.find(request.domain)
        if domain is None or domain.state is not PowerState.SHUT_OFF:
            changed.append(f"the domain {request.domain} itself (it is no longer shut off)")
        if changed:
            raise MigrationError(
                f"{', '.join(changed)} changed on the source while it was copied; the copies were "
                "removed and nothing moved (the next attempt copies again)",
                location=Location.SOURCE, last=None, reason=Reason.SOURCE_CHANGED)

    def discard(self, request: MigrationRequest, carried: Carried, *, target: LibvirtHost) -> None:
        """Remove what this carry made on the target, unless the domain is defined there
        (then the copies are its disks, never removed)."""
        try:
            if target.find(request.domain) is not None:
                log.warning("%s is defined on the target: its carried disks are kept", request.domain)
                return
        except VirtError as error:
            log.warning("cannot tell whether %s reached the target (%s); its copies are left "
                        "marked for the next attempt to remove", request.domain, error)
            return
        for copy in carried.made:
            quietly(lambda copy=copy: target.volumes.delete(copy.target_path))  # type: ignore[misc]
        for copy in carried.marked:
            quietly(lambda copy=copy: target.volumes.unmark(  # type: ignore[misc]
                pool=copy.target_pool, name=copy.target_name))

    def finish(self, request: MigrationRequest, carried: Carried, *, source: LibvirtHost,
               target: LibvirtHost) -> list[str]:
        """The definition is on the target: the copies are its disks now. Returns the source
        volumes deleted (only when asked, and only once the source no longer defines the VM)."""
        for copy in carried.marked:
            quietly(lambda copy=copy: target.volumes.unmark(  # type: ignore[misc]
                pool=copy.target_pool, name=copy.target_name))
        if not request.volumes.delete_from_source:
            return []
        if source.find(request.domain) is not None:
            log.warning("%s is still defined on the source: its volumes are kept", request.domain)
            return []
        deleted = []
        for copy in carried.plan.top:
            # Only the domain's own top images: a backing layer may serve other domains.
            if copy.source.path in source.volumes.in_use():
                log.warning("%s is used by another domain on the source: kept", copy.source.path)
                continue
            if quietly(lambda copy=copy: source.volumes.delete(copy.source.path)):  # type: ignore[misc]
                deleted.append(copy.source.path)
        log.info("deleted the source volumes of %s: %s", request.domain, ", ".join(deleted) or "none")
        return deleted

    def _update(self, request: MigrationRequest, tally: Tally) -> Update:
        now = self.clock()
        return Update(domain=request.domain, mode=EffectiveMode.OFFLINE, progress=self._progress(tally),
                      percent=tally.percent(), eta_seconds=tally.eta_seconds(now=now),
                      disks=tuple(DiskCopy(source=d.source, target=d.target, total_bytes=d.total_bytes,
                                           copied_bytes=d.copied_bytes, state=d.state)
                                  for d in tally.disks))

    def _progress(self, tally: Tally) -> JobProgress:
        now = self.clock()
        return JobProgress(elapsed_seconds=now - tally.started, data_total=tally.total_bytes,
                           data_processed=tally.copied_bytes,
                           data_remaining=max(0, tally.total_bytes - tally.copied_bytes),
                           transfer_rate_bytes_per_s=int(tally.rate(now=now)))
