"""Resumes a post-copy migration whose link failed, with backoff, or hands it to a person.

The rules (may a resume be tried, how long to wait, when to stop) are pure and
live in :mod:`vmmigration.core.recovery`; this loop only reads the hosts, asks
libvirt for the resume and sleeps.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from vmmigration.core import convergence, recovery
from vmmigration.core.errors import VirtError
from vmmigration.core.location import Location
from vmmigration.core.model import (
    EffectiveMode,
    JobProgress,
    MigrationRequest,
    Update,
    display_uri,
)
from vmmigration.core.planner import MigrationFlags
from vmmigration.core.reasons import Reason
from vmmigration.service import aftermath, outcomes
from vmmigration.service.monitor import Detached
from vmmigration.service.outcomes import MigrationError
from vmmigration.service.ports import Connect, LibvirtHost

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Resumer:
    connect: Connect
    timeout_seconds: float
    policy: recovery.ResumePolicy = recovery.ResumePolicy.AUTO
    limits: recovery.ResumeLimits = recovery.ResumeLimits()
    sleep: Callable[[float], None] = time.sleep

    def resume(self, request: MigrationRequest, *, flags: MigrationFlags, error: BaseException,
               source: LibvirtHost, target: LibvirtHost,
               on_update: Callable[[Update], None] | None, detach: threading.Event | None,
               last: JobProgress | None) -> None:
        """The VM is paused on both hosts: return once it runs on the target, or raise.

        Nothing else is safe. Aborting loses the VM; resuming either half alone
        runs stale memory. Cancel requests wait too: there is nothing left to
        abort. Only a host gone past the limit, or a libvirt known to crash on a
        resume, leaves the VM to a person (MigrationError LocationSplitPostCopy,
        with the advice).
        """
        name = request.domain
        split_at = time.monotonic()
        why = f"the link failed: {error}"
        tries = rounds = 0
        log.warning("%s is paused on both hosts after its post-copy link failed (%s); "
                    "resuming it", name, error)
        while True:
            rounds += 1
            try:
                versions = target.versions()
            except VirtError as unreachable:
                versions = None
                why = f"{display_uri(target.uri)} does not answer ({unreachable})"
            if versions is not None:
                blocked = recovery.blocker(policy=self.policy, target=versions)
                if blocked is not None:
                    raise _split(request, why=blocked, last=last)
                tries += 1
                _report(on_update, name, last, f"post-copy paused on both hosts ({why}); "
                                               f"resuming it, try {tries}")
                failed = self._try(request, flags=flags)
                if isinstance(failed, _Stuck):
                    # The call stays blocked in libvirt (nothing can cancel a Prepare
                    # waiting on QEMU); its thread ends when a person ends the target.
                    raise MigrationError(
                        recovery.stuck_advice(domain=name, source=display_uri(request.source_uri),
                                              target=display_uri(request.target_uri),
                                              why=f"a post-copy resume has waited "
                                                  f"{self.limits.try_seconds:.0f} s for it"),
                        location=Location.SPLIT_POST_COPY, last=last,
                        reason=Reason.LOCATION_SPLIT)
                if failed is not None:
                    why = f"the resume failed: {failed}"
                found = aftermath.inspect(domain=name, source=source, target=target)
                if found.location is Location.TARGET:
                    log.info("the post-copy migration of %s resumed and completed (try %d)",
                             name, tries)
                    return
                if found.location is not Location.SPLIT_POST_COPY and not found.unreachable:
                    raise outcomes.failure(error, request, None, source=source, target=target,
                                           last=last, found=found)
            waited = time.monotonic() - split_at
            if recovery.give_up(waited_seconds=waited, limits=self.limits):
                raise _split(request, why=f"it could not be resumed in {waited:.0f} s "
                                          f"(last: {why})", last=last)
            # Backs off whether the resume failed or the target did not answer.
            pause = recovery.delay(attempt=rounds, limits=self.limits)
            _report(on_update, name, last, f"post-copy paused on both hosts ({why}); "
                                           f"next resume in {pause:.0f} s")
            if detach is not None and detach.is_set():
                raise Detached(f"left the split post-copy of {name} for the next operator")
            self.sleep(pause)


    def _try(self, request: MigrationRequest, *, flags: MigrationFlags) -> VirtError | _Stuck | None:
        """One resume call: None when it returned, the VirtError it raised, or _STUCK
        when it has not returned within ``limits.try_seconds``."""
        outcome: list[VirtError | None] = []

        def call() -> None:
            try:
                with self.connect(request.source_uri, timeout_seconds=self.timeout_seconds) as mover:
                    mover.migrate(request.domain, target_uri=request.target_uri,
                                  flags=dataclasses.replace(flags, live=True, post_copy=True,
                                                            post_copy_resume=True),
                                  bandwidth_mib_per_s=request.policy.bandwidth_mib_per_s,
                                  parallel_connections=request.policy.parallel_connections,
                                  migration_address=request.migration_address)
                outcome.append(None)
            except VirtError as failed:
                outcome.append(failed)

        # libvirt's keepalive does not end this call: the target's daemon answers
        # keepalives while its Prepare waits on a QEMU that never replies.
        worker = threading.Thread(target=call, name=f"resume-{request.domain}", daemon=True)
        worker.start()
        worker.join(self.limits.try_seconds)
        return outcome[0] if outcome else _STUCK


class _Stuck:
    """A resume call that has not returned in time."""


_STUCK = _Stuck()


def _report(on_update: Callable[[Update], None] | None, name: str, last: JobProgress | None,
            text: str) -> None:
    if on_update is not None:
        on_update(Update(domain=name, mode=EffectiveMode.POST_COPY, progress=last,
                         percent=convergence.percent_done(last) if last else 0.0,
                         eta_seconds=None, waiting_for_link=text))


def _split(request: MigrationRequest, *, why: str, last: JobProgress | None) -> MigrationError:
    return MigrationError(
        recovery.advice(domain=request.domain, source=display_uri(request.source_uri),
                        target=display_uri(request.target_uri), why=why),
        location=Location.SPLIT_POST_COPY, last=last, reason=Reason.LOCATION_SPLIT)
