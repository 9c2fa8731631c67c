"""Pure: every reason the operator reports, as one enum, and the classifier of failures.

A reason is what a user sees in a condition, an Event and ``status.lastFailure``;
the code branches on the enum's members and properties, never on the text.
Pre-check findings keep the reasons of :mod:`vmmigration.core.prechecks`
(``InsufficientMemory``, ``CpuIncompatible`` …): those are the checks' own
vocabulary and only ever shown, never branched on.
"""

from __future__ import annotations

import enum

from vmmigration.core.convergence import Trigger
from vmmigration.core.errors import (
    CredentialsError,
    LinkBroken,
    MigrationAborted,
    MigrationUnsafe,
    PeerUnreachable,
)
from vmmigration.core.location import Location


class Reason(str, enum.Enum):
    # Why a VMMigration cannot proceed (decide's blocks and waits).
    CONFLICT = "Conflict"
    RUNNING_TWICE = "RunningTwice"
    DEFINED_TWICE = "DefinedTwice"
    DOMAIN_NOT_FOUND = "DomainNotFound"
    UNKNOWN_HYPERVISOR = "UnknownHypervisor"
    HOST_IN_MAINTENANCE = "HostInMaintenance"
    TARGET_UNREACHABLE = "TargetUnreachable"
    NO_ELIGIBLE_TARGET = "NoEligibleTarget"
    NOT_ON_SOURCE = "NotOnSource"
    MIGRATION_IN_PROGRESS = "MigrationInProgress"
    # A migration vmmigration did not start (an admin's virsh migrate) holds the domain.
    MIGRATING_OUTSIDE = "MigratingOutside"
    INVENTORY_INCOMPLETE = "InventoryIncomplete"
    BACKOFF = "Backoff"
    INVALID_SPEC = "InvalidSpec"
    DOWNTIME_BUDGET = "DowntimeBudget"  # no allowed strategy fits policy.maxDowntimeMs
    DRY_RUN = "DryRun"  # spec.dryRun: planned, and nothing moves
    DISPLACED = "Displaced"  # pinned to a host in maintenance: runs elsewhere in its pool for now
    # Where a VMMigration is on its way.
    AS_EXPECTED = "AsExpected"
    QUEUED = "Queued"
    CONCURRENCY_LIMIT = "ConcurrencyLimit"
    VALIDATING = "Validating"
    MIGRATING = "Migrating"
    RECOVERING = "Recovering"
    REPLANNED = "Replanned"  # the move in flight was cancelled: it is no longer wanted
    PLACED = "Placed"
    DRIFTED = "Drifted"
    NOT_ON_TARGET = "NotOnTarget"
    INTERRUPTED = "Interrupted"
    # How an attempt ended, when it did not succeed.
    ABORTED = "Aborted"  # on request: spec.abort, deletion, Ctrl-C
    ABORTED_OUTSIDE = "AbortedOutside"  # someone else aborted libvirt's job
    TIMED_OUT = "TimedOut"  # did not converge; aborted by policy
    LINK_BROKEN = "LinkBroken"  # the migration stream stopped crossing the network
    PEER_UNREACHABLE = "PeerUnreachable"  # the source host could not reach the target
    MIGRATION_FAILED = "MigrationFailed"
    LIBVIRT_ERROR = "LibvirtError"
    # An Offline move that carries its disks: a volume stream failed, a copy read back
    # differed from what was sent, or the source was written while it was read.
    COPY_FAILED = "CopyFailed"
    COPY_MISMATCH = "CopyMismatch"
    SOURCE_CHANGED = "SourceChanged"
    CREDENTIALS = "Credentials"
    VALIDATION_ERROR = "ValidationError"
    LOCATION_SPLIT = "LocationSplitPostCopy"
    LOCATION_UNKNOWN = "LocationUnknown"
    LOCATION_BOTH = "LocationBoth"
    LOCATION_NOWHERE = "LocationNowhere"

    @property
    def skew_prone(self) -> bool:
        """A block that hosts probed at different moments can fake: look again before believing it.

        A VM that just moved can seem to run on both hosts, or on neither.
        """
        return self in (Reason.RUNNING_TWICE, Reason.DEFINED_TWICE, Reason.DOMAIN_NOT_FOUND)

    @property
    def aborted(self) -> bool:
        """The attempt was stopped on purpose (ours or someone else's), not by a fault."""
        return self in (Reason.ABORTED, Reason.ABORTED_OUTSIDE)

    @property
    def libvirt_fault(self) -> bool:
        """libvirt itself failed the call (counted in vmmigration_libvirt_errors_total)."""
        return self in (Reason.MIGRATION_FAILED, Reason.LIBVIRT_ERROR)


def for_location(location: Location) -> Reason:
    """The reason for a VM that a restart found in this unusual place."""
    return {
        Location.SPLIT_POST_COPY: Reason.LOCATION_SPLIT,
        Location.BOTH: Reason.LOCATION_BOTH,
        Location.NOWHERE: Reason.LOCATION_NOWHERE,
    }.get(location, Reason.LOCATION_UNKNOWN)


def classify(error: BaseException, trigger: Trigger | None) -> Reason:
    """Why a started migration did not complete, from libvirt's error and what our monitor did.

    ``trigger`` is what made the monitor abort the job, None if it did not.
    An aborted job with no trigger of ours was aborted by someone else (an
    admin's ``virsh domjobabort``): that is neither a timeout nor a fault.
    """
    if trigger is Trigger.REQUESTED:
        return Reason.ABORTED
    if trigger is Trigger.LINK_STALLED:
        return Reason.LINK_BROKEN
    if trigger is not None and trigger is not Trigger.NONE:
        return Reason.TIMED_OUT
    if isinstance(error, MigrationAborted):
        return Reason.ABORTED_OUTSIDE
    if isinstance(error, LinkBroken):
        return Reason.LINK_BROKEN
    if isinstance(error, PeerUnreachable):
        return Reason.PEER_UNREACHABLE
    return Reason.MIGRATION_FAILED


def classify_check(error: BaseException) -> Reason:
    """Why the pre-checks could not run at all (a refusal is a finding, not this)."""
    return Reason.CREDENTIALS if isinstance(error, CredentialsError) else Reason.VALIDATION_ERROR


def hint(error: BaseException, location: Location) -> str:
    """What the user can do about a failed migration, or ''."""
    if location is Location.SPLIT_POST_COPY:
        return (" The VM is split between the hosts in post-copy; recover it with a "
                "post-copy resume (virsh migrate --postcopy-resume).")
    if isinstance(error, MigrationUnsafe):
        return (" If the disks really are on storage both hosts share, say so with "
                "allow_unsafe (--allow-unsafe); otherwise copy them with storage CopyAll.")
    return ""
