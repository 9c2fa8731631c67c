"""What happened to a migration, worked out after the fact.

A process that restarts mid-migration (a crash, a kill -9) calls
:func:`inspect` before anything else, so it never starts a second migration
of a VM that is still moving.
"""

from __future__ import annotations

from vmmigration.core.errors import VirtError
from vmmigration.core.location import Aftermath, Location, locate
from vmmigration.core.model import display_uri
from vmmigration.service.ports import LibvirtHost

__all__ = ["Aftermath", "inspect", "unread"]


def unread(domain: str, uri: str) -> Aftermath:
    """What is known of a domain whose host cannot be read at all: nothing yet."""
    return Aftermath(domain=domain, location=Location.NOWHERE, source=None, target=None,
                     job_active=False, job=None, final=None, unreachable=(display_uri(uri),))


def inspect(*, domain: str, source: LibvirtHost | None, target: LibvirtHost | None) -> Aftermath:
    """Read both hosts (either may be None or down) and say where ``domain`` is."""
    unreachable = []
    source_view = target_view = None
    job = final = None
    if source is not None:
        try:
            source_view = source.find(domain)
            job = source.job(domain) if source_view else None
        except VirtError:
            unreachable.append(display_uri(source.uri))
    if target is not None:
        try:
            target_view = target.find(domain)
            final = target.completed_job(domain) if target_view else None
        except VirtError:
            unreachable.append(display_uri(target.uri))
    if final is None and source is not None and source_view is not None and job is None:
        try:
            final = source.completed_job(domain)
        except VirtError:
            pass
    return Aftermath(
        domain=domain,
        location=locate(source=source_view, target=target_view),
        source=source_view,
        target=target_view,
        job_active=job is not None,
        job=job,
        final=final,
        unreachable=tuple(unreachable),
    )
