"""Pure: where does a domain run, given what the source and target report?

Used after the fact (a restarted process, a failed migration) to decide what
happened without starting anything. A domain being filled by an incoming
migration is paused on the target; that copy is not the VM yet.
"""

from __future__ import annotations

import dataclasses
import enum

from vmmigration.core.model import DomainSummary, JobProgress, PauseReason, PowerState


class Location(str, enum.Enum):
    SOURCE = "Source"
    TARGET = "Target"
    # Post-copy: the target runs the VM while the source still serves pages.
    SPLIT_POST_COPY = "SplitPostCopy"
    BOTH = "Both"  # active on both: must never happen; reported loudly
    NOWHERE = "Nowhere"


def is_incoming(summary: DomainSummary | None) -> bool:
    return (
        summary is not None
        and summary.state is PowerState.PAUSED
        and summary.pause_reason in (PauseReason.MIGRATION, PauseReason.STARTING_UP)
    )


def in_post_copy(summary: DomainSummary | None) -> bool:
    """Held by a post-copy migration, running or failed: one half of a split VM."""
    return summary is not None and summary.pause_reason in (
        PauseReason.POST_COPY,
        PauseReason.POST_COPY_FAILED,
    )


def locate(*, source: DomainSummary | None, target: DomainSummary | None) -> Location:
    """Where the VM is, from each host's view of the domain (None: not defined there)."""
    if in_post_copy(source) or in_post_copy(target):
        return Location.SPLIT_POST_COPY
    source_active = source is not None and source.active
    target_active = target is not None and target.active
    if source_active and target_active:
        # While a job runs the target holds an incoming, paused copy; the VM
        # itself is still on the source.
        if is_incoming(target):
            return Location.SOURCE
        if is_incoming(source):
            # Switch-over: the target already runs, the source waits to be reaped.
            return Location.TARGET
        return Location.BOTH
    if source_active:
        return Location.SOURCE
    if target_active:
        return Location.TARGET
    # Shut off everywhere: the VM is where it is defined.
    if source is not None and target is not None:
        return Location.BOTH
    if source is not None:
        return Location.SOURCE
    if target is not None:
        return Location.TARGET
    return Location.NOWHERE


@dataclasses.dataclass(frozen=True)
class Aftermath:
    domain: str
    location: Location
    source: DomainSummary | None
    target: DomainSummary | None
    # A migration job still runs on the source: wait for it, never start another.
    job_active: bool
    job: JobProgress | None
    # Statistics of the last completed job, from the target (where libvirt
    # keeps them after an incoming migration), else from the source.
    final: JobProgress | None
    unreachable: tuple[str, ...] = ()
