"""A move's plan from what the hosts and the measurer know: the measured inputs, then the pure
forecast and choice of :mod:`vmmigration.core.plans`."""

from __future__ import annotations

from vmmigration.core import plans
from vmmigration.core.dirtyrate import DirtyRate
from vmmigration.core.model import DomainSummary, MigrationRequest, Mode, PowerState
from vmmigration.core.plans import Measured, MovePlan
from vmmigration.service.measure import Measurer
from vmmigration.service.ports import LibvirtHost


def plan_move(request: MigrationRequest, *, source: LibvirtHost, domain: DomainSummary,
              measurer: Measurer, measure: bool = False,
              post_copy_blocker: str | None = None) -> MovePlan:
    """Auto (or ``measure``) measures what it lacks (a second or four); an explicit mode uses
    only what is known, so a move whose user chose its mode never waits for a measurement."""
    running = domain.state in (PowerState.RUNNING, PowerState.PAUSED)
    link = measurer.link_rate(source_uri=request.source_uri, target_uri=request.target_uri,
                              policy=request.policy)
    dirty: DirtyRate | None = None
    if domain.state is PowerState.PAUSED:
        # A paused guest dirties nothing until the move resumes it.
        dirty = DirtyRate(bytes_per_s=0.0, high_bytes_per_s=0.0, hot_set_bytes=0, hot_set_known=True,
                          readings=(), measured_at=measurer.clock())
    elif running and (measure or request.mode is Mode.AUTO):
        dirty = measurer.dirty_rate(source, domain, link_bytes_per_s=link.bytes_per_s)
    elif running:
        dirty = measurer.recent_dirty_rate(domain)
    measured = Measured(memory_bytes=domain.memory_bytes, in_use=measurer.in_use(domain), link=link,
                        dirty=dirty, running=running, post_copy_blocker=post_copy_blocker)
    return plans.make(requested=request.mode, policy=request.policy, measured=measured)
