"""How a started migration ended when it did not succeed, and where it left the VM."""

from __future__ import annotations

from vmmigration.core.convergence import Trigger
from vmmigration.core.location import Location
from vmmigration.core.model import JobProgress, MigrationRequest, display_uri
from vmmigration.core.reasons import Reason, classify, hint
from vmmigration.service import aftermath
from vmmigration.service.ports import LibvirtHost


class MigrationError(Exception):
    """The migration started and did not complete. ``location`` says where the VM runs now."""

    def __init__(self, message: str, *, location: Location, last: JobProgress | None,
                 reason: Reason = Reason.MIGRATION_FAILED) -> None:
        super().__init__(message)
        self.location = location
        self.last = last
        self.reason = reason


class NoJobToAdopt(Exception):
    """adopt() found no migration job running for the domain."""

    def __init__(self, found: aftermath.Aftermath) -> None:
        super().__init__(f"no migration job runs for {found.domain}; it is on the "
                         f"{found.location.value.lower()}")
        self.found = found


class LostContact(Exception):
    """The migrate call failed because this process lost its connection to the source, and
    the source cannot be read: a peer-to-peer job may well run on without us. Whoever
    looks next adopts it (or finds how it ended); nothing may start another meanwhile."""

    def __init__(self, found: aftermath.Aftermath, error: BaseException) -> None:
        super().__init__(f"lost contact with {', '.join(found.unreachable)} while the migration "
                         f"of {found.domain} ran ({error}); it runs on without the operator, "
                         "which adopts it when the host answers again")
        self.found = found


class MigrationCancelled(MigrationError):
    """Aborted on request (spec.abort, deletion, Ctrl-C)."""


class MigrationTimedOut(MigrationError):
    """Did not converge, and the policy aborted it."""


def failure(
    error: BaseException,
    request: MigrationRequest,
    trigger: Trigger | None,
    *,
    source: LibvirtHost,
    target: LibvirtHost,
    last: JobProgress | None,
    found: aftermath.Aftermath | None = None,
) -> MigrationError:
    """``found``: the hosts as already read after the failure, if the caller has them."""
    if found is None:
        found = aftermath.inspect(domain=request.domain, source=source, target=target)
    if display_uri(request.source_uri) in found.unreachable:
        raise LostContact(found, error)
    where = found.location
    runs = f"the VM runs on the {where.value.lower()}"
    reason = classify(error, trigger)
    if reason is Reason.ABORTED:
        return MigrationCancelled(f"migration of {request.domain} aborted on request; {runs}",
                                  location=where, last=last, reason=reason)
    if reason is Reason.TIMED_OUT:
        why = trigger.value if trigger else "Aborted"
        return MigrationTimedOut(
            f"migration of {request.domain} did not converge ({why}) and was aborted by "
            f"policy; {runs}", location=where, last=last, reason=reason)
    if reason is Reason.ABORTED_OUTSIDE:
        return MigrationError(
            f"migration of {request.domain} was aborted outside vmmigration (libvirt's job "
            f"was cancelled, as by virsh domjobabort); {runs}", location=where, last=last,
            reason=reason)
    return MigrationError(
        f"migration of {request.domain} failed: {error}; {runs}.{hint(error, where)}",
        location=where, last=last, reason=reason)
