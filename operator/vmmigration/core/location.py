"""Pure: where does a domain run, given what the source and target report?

Used after the fact (a restarted process, a failed migration) to decide what
happened without starting anything. A domain being filled by an incoming
migration is paused on the target; that copy is not the VM yet. The source is
paused with the same reason during the switch-over (and for the whole rest of
a hybrid's suspended copy), and it still *is* the VM: only libvirt's job says
which end a paused domain is (:class:`JobDirection`).
"""

from __future__ import annotations

import dataclasses
import enum

from vmmigration.core.model import DomainSummary, JobDirection, JobProgress, PauseReason, PowerState


class Location(str, enum.Enum):
    SOURCE = "Source"
    TARGET = "Target"
    # Post-copy: the target runs the VM while the source still serves pages.
    SPLIT_POST_COPY = "SplitPostCopy"
    BOTH = "Both"  # active on both: must never happen; reported loudly
    NOWHERE = "Nowhere"


def paused_for_migration(summary: DomainSummary | None) -> bool:
    """Paused by a migration, at either end: the copy arriving, or the source switching over."""
    return (
        summary is not None
        and summary.state is PowerState.PAUSED
        and summary.pause_reason in (PauseReason.MIGRATION, PauseReason.STARTING_UP)
    )


def is_incoming(summary: DomainSummary | None) -> bool:
    """The receiving end of a migration job: a copy being filled, not the VM yet."""
    return paused_for_migration(summary) and summary is not None and summary.job is JobDirection.INCOMING


def is_leaving(summary: DomainSummary | None) -> bool:
    """Paused for a migration and not receiving one: the VM itself, on the sending end
    (switching over, suspended by a hybrid, or not yet reaped after the move)."""
    return paused_for_migration(summary) and not is_incoming(summary)


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
        # The roles are known here, so the pause alone says enough: while a
        # job runs the target holds a paused copy and the VM is still on the source.
        if paused_for_migration(target):
            return Location.SOURCE
        if paused_for_migration(source):
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
