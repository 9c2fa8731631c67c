"""The monitor loop of a migration job: poll → decide → act, and nothing else.

The decisions live in :mod:`vmmigration.core.convergence` as pure functions; this
module only reads the job, asks them, and carries out the answer. It watches
a job the engine started, and equally one it adopts after a restart.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from vmmigration.core import convergence, recovery
from vmmigration.core.convergence import Decision, Expectation, Trigger, Watch
from vmmigration.core.errors import VirtError
from vmmigration.core.location import Location
from vmmigration.core.model import EffectiveMode, JobProgress, Policy, Update, display_uri
from vmmigration.core.reasons import Reason
from vmmigration.service.outcomes import MigrationError
from vmmigration.service.ports import LibvirtHost

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the monitor did while the job ran."""

    mode: EffectiveMode
    last: JobProgress | None
    suspended_by_us: bool
    abort_trigger: Trigger | None
    first_pass_bytes: int | None = None
    # time.monotonic() when the VM began to run on the target in post-copy.
    post_copy_since: float | None = None


class Detached(Exception):
    """The watcher let go of a job that keeps running (its process is handing over)."""


def quietly(action: Callable[[], None]) -> bool:
    """Run an action on the job; one that just ended makes it moot, not an error."""
    try:
        action()
        return True
    except VirtError as error:
        log.info("not applied: %s", error)
        return False


def _retune(source: LibvirtHost, name: str, *, running: Policy, wanted: Policy) -> str:
    """Apply to the job what libvirt can change while it runs; say what changed."""
    said = []
    if wanted.bandwidth_mib_per_s != running.bandwidth_mib_per_s and quietly(
            lambda: source.set_bandwidth(name, mib_per_s=wanted.bandwidth_mib_per_s)):
        said.append(f"bandwidth {wanted.bandwidth_mib_per_s or 'unlimited'}"
                    + (" MiB/s" if wanted.bandwidth_mib_per_s else ""))
    if wanted.max_downtime_ms != running.max_downtime_ms and wanted.max_downtime_ms and quietly(
            lambda: source.set_max_downtime(name, milliseconds=wanted.max_downtime_ms)):
        said.append(f"max downtime {wanted.max_downtime_ms} ms")
    return "the changed policy applies to the running job" + (f": {', '.join(said)}" if said else "")


def watch_job(
    *,
    source: LibvirtHost,
    name: str,
    policy: Policy,
    mode: EffectiveMode,
    watch: Watch,
    wait_for_end: Callable[[float], bool],
    poll_interval_seconds: float,
    cancel: threading.Event,
    on_update: Callable[[Update], None] | None,
    detach: threading.Event | None = None,
    expectation: Expectation | None = None,
    retune: Callable[[], Policy | None] | None = None,
) -> Outcome:
    """Poll the source's job until ``wait_for_end`` says it is over, escalating by policy.

    ``wait_for_end(seconds)`` waits up to that long and returns True once the
    job has ended (the migrate call returned, or the job is gone). Setting
    ``detach`` stops the watch without touching the job: it raises Detached,
    and whoever runs next adopts the job.
    """
    started = time.monotonic()
    suspended_by_us = False
    downtime_set = False
    abort_trigger: Trigger | None = None
    last: JobProgress | None = None
    waiting_for_link: str | None = None
    post_copy_since = started if mode is EffectiveMode.POST_COPY else None
    interval = poll_interval_seconds
    while not wait_for_end(interval):
        if detach is not None and detach.is_set():
            log.info("migration of %s: no longer watched here; the job keeps running", name)
            raise Detached(name)
        # poll (a lost connection shows up in the migrate call too; keep watching until it does)
        try:
            progress = source.job(name)
        except VirtError as error:
            log.warning("cannot read the job of %s: %s", name, error)
            progress = None
        # libvirt's clock counts from the job's start, which matters for an
        # adopted job; before the first sample, our own clock stands in.
        sample = progress or JobProgress(elapsed_seconds=time.monotonic() - started)
        if progress is not None:
            last = sample
            if policy.max_downtime_ms and not downtime_set:
                downtime_set = quietly(
                    lambda: source.set_max_downtime(name, milliseconds=policy.max_downtime_ms)
                )
        retuned = None
        wanted = retune() if retune is not None else None
        if wanted is not None:
            retuned = _retune(source, name, running=policy, wanted=wanted)
            policy = wanted
        # decide
        watch = convergence.observe(watch, sample)
        verdict = convergence.decide(
            policy=policy, watch=watch, progress=sample, abort_requested=cancel.is_set(),
            expectation=expectation,
        )
        # Each sample is a query to QEMU's monitor, which slows a TCG guest's copy:
        # poll finely only while a suspend waits for a pass to end.
        waiting = verdict.decision is Decision.CONTINUE and verdict.trigger is Trigger.FORECAST
        interval = convergence.poll_seconds(progress, default=poll_interval_seconds, fine=waiting)
        # act
        note = None
        if verdict.decision is Decision.SUSPEND_SOURCE:
            if quietly(lambda: source.suspend(name)):
                suspended_by_us = True
                mode = EffectiveMode.LIVE_SUSPENDED
                note = f"{verdict.trigger.value}: suspended the source to finish the copy"
            watch = dataclasses.replace(watch, escalated=True)
        elif verdict.decision is Decision.START_POST_COPY:
            if quietly(lambda: source.start_post_copy(name)):
                mode = EffectiveMode.POST_COPY
                post_copy_since = time.monotonic()
                note = f"{verdict.trigger.value}: switched to post-copy"
                watch = dataclasses.replace(watch, escalated=True, in_post_copy=True)
            else:
                watch = dataclasses.replace(watch, escalated=True)
        elif verdict.decision is Decision.PAUSE_POST_COPY:
            # The job then fails as a split post-copy, and the engine resumes it.
            if quietly(lambda: source.pause_post_copy(name)):
                note = (f"{verdict.trigger.value}: the link carried nothing for "
                        f"{convergence.POST_COPY_PAUSE_SECONDS:.0f} s; paused the post-copy "
                        "to resume it on fresh streams")
            watch = dataclasses.replace(watch, post_copy_paused=True)
        elif verdict.decision is Decision.HAND_OVER:
            # The migrate call stays blocked in libvirt; its thread ends when a person
            # ends the target's QEMU.
            raise MigrationError(recovery.stuck_advice(
                domain=name, source=display_uri(source.uri), target="the target",
                why=f"its post-copy stream has carried nothing for "
                    f"{convergence.POST_COPY_STUCK_SECONDS:.0f} s and libvirt could not pause "
                    "it for a resume"), location=Location.SPLIT_POST_COPY, last=last,
                reason=Reason.LOCATION_SPLIT)
        elif verdict.decision is Decision.ABORT and abort_trigger is None:
            # Before the job exists there is nothing to abort yet: try again
            # at the next poll rather than forget the request.
            if quietly(lambda: source.abort_job(name)):
                abort_trigger = verdict.trigger
                note = f"{verdict.trigger.value}: aborting"
        elif verdict.decision is Decision.CONTINUE and watch.in_post_copy:
            # Said once per outage: the status shows that the copy waits, and why.
            stalled = verdict.trigger is Trigger.LINK_STALLED
            if stalled and not waiting_for_link:
                waiting_for_link = note = (
                    f"{Trigger.LINK_STALLED.value}: the link carries nothing; post-copy waits "
                    "for it (the VM runs on the target, its missing pages on hold)")
            elif waiting_for_link and not stalled:
                note, waiting_for_link = "the link carries data again; post-copy goes on", None
        note = note or retuned
        if note:
            log.info("migration of %s: %s", name, note)
        percent = convergence.percent_done(
            sample, expected_bytes=expectation.expected_bytes if expectation else None,
            floor=watch.percent)
        watch = dataclasses.replace(watch, percent=percent)
        if on_update is not None:
            paused = mode in (EffectiveMode.NON_LIVE, EffectiveMode.LIVE_SUSPENDED)
            on_update(Update(
                domain=name,
                mode=mode,
                progress=progress and sample,
                percent=percent,
                eta_seconds=convergence.eta_seconds(sample, guest_paused=paused),
                note=note,
                waiting_for_link=waiting_for_link,
            ))
    return Outcome(mode=mode, last=last, suspended_by_us=suspended_by_us, abort_trigger=abort_trigger,
                   first_pass_bytes=watch.first_pass_bytes, post_copy_since=post_copy_since)
