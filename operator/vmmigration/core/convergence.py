"""Pure progress arithmetic and escalation rules for a running migration.

The engine's monitor loop only polls libvirt, calls :func:`observe` and
:func:`decide`, and acts on the answer. Keeping the rules free of I/O lets the
tests cover them as tables, with no hypervisor.
"""

from __future__ import annotations

import dataclasses
import enum

from vmmigration.core import forecast
from vmmigration.core.model import GIB, Escalation, JobProgress, OnTimeout, Policy


class Decision(str, enum.Enum):
    CONTINUE = "Continue"
    SUSPEND_SOURCE = "SuspendSource"
    START_POST_COPY = "StartPostCopy"
    PAUSE_POST_COPY = "PausePostCopy"
    HAND_OVER = "HandOver"  # a post-copy nothing can move on: a person decides
    ABORT = "Abort"


class Trigger(str, enum.Enum):
    NONE = "None"
    STALLED = "Stalled"  # remaining bytes stopped going down
    OVERDUE = "Overdue"  # longer than the per-GiB completion budget
    HARD_TIMEOUT = "HardTimeout"
    REQUESTED = "Requested"  # someone asked for an abort
    LINK_STALLED = "LinkStalled"  # not one byte crossed the link for a while
    FORECAST = "Forecast"  # the measured rates show the pre-copy cannot converge
    PLANNED = "Planned"  # the plan switches to post-copy as soon as the job runs


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What the plan measured and forecast before the move, for the monitor to act on."""

    # The guest's dirty rate and hot set measured before the move (None: not measured).
    dirty_rate_bytes_per_s: float | None = None
    hot_set_bytes: int | None = None
    # Everything the move should send, for a progress figure that never goes back.
    expected_bytes: int | None = None
    post_copy_at_start: bool = False
    # QEMU's switchover limit: the leftover that fits is link rate × this.
    max_downtime_seconds: float = 0.3


@dataclasses.dataclass(frozen=True)
class Watch:
    """What the monitor remembers between polls. Replaced, never mutated."""

    best_remaining: int | None = None
    best_at_seconds: float = 0.0
    escalated: bool = False
    in_post_copy: bool = False
    post_copy_paused: bool = False  # the operator paused a dead post-copy stream to resume it
    # The most bytes the job has sent, and when that figure last grew.
    processed: int = 0
    processed_at_seconds: float | None = None
    # The pass in progress and the most bytes it had left (its size, once it began).
    iteration: int = 0
    pass_bytes: int = 0
    previous_pass_bytes: int = 0
    # The pass in progress was joined midway (a job adopted after a restart):
    # its size is unknown, so it is never compared with the next one.
    joined_midway: bool = False
    percent: float = 0.0  # the progress shown so far, which never goes back
    # What the first pass sent (pages that hold data): the guest's memory in use.
    first_pass_bytes: int | None = None


# A job that sends nothing for this long has lost its link. Even a link
# shaped to 1 Mbit/s moves bytes every poll; a guest that dirties faster than
# the link is slow, not stalled, and remains the escalation rules' business.
LINK_STALL_SECONDS = 10.0
# A post-copy whose link has carried nothing this long is paused on purpose
# (libvirt's post-copy abort keeps both halves) so that a resume can rebuild its
# streams: TCP resends what a cut swallowed within about a second of the link's
# return (the test bed caps its backoff), so a stream silent this long is dead,
# or its target's QEMU no longer reads it.
POST_COPY_PAUSE_SECONDS = 45.0
# Still silent this long, after the pause: libvirt refused it ("post-copy migration
# already stopped": the source QEMU's stream failed) yet its job never ended, because
# the target's side waits on a QEMU that no longer answers. Nothing can move the VM on.
POST_COPY_STUCK_SECONDS = POST_COPY_PAUSE_SECONDS + 15.0


@dataclasses.dataclass(frozen=True)
class Verdict:
    decision: Decision
    trigger: Trigger


def initial_watch(*, live: bool, policy: Policy) -> Watch:
    """The watch a new job starts with.

    A non-live copy has the VM paused already: suspending it or switching to
    post-copy has no meaning, so it starts as if escalated, and only an abort
    (by policy, request or hard timeout) can still act on it.
    """
    return Watch(escalated=not live and policy.on_timeout is not OnTimeout.ABORT)


def observe(watch: Watch, progress: JobProgress) -> Watch:
    """Fold one sample into the watch.

    Progress means a *new low* of remaining bytes. Within one iteration the
    figure falls, and at the start of the next it jumps back up to the pages
    dirtied meanwhile; comparing with the last sample would call every new
    iteration a stall, comparing with the best one does not.
    """
    remaining = progress.data_remaining
    if progress.data_total == 0:
        # libvirt reports zeros while the job is still setting up.
        return watch
    if progress.data_processed > watch.processed or watch.processed_at_seconds is None:
        watch = dataclasses.replace(watch, processed=progress.data_processed,
                                    processed_at_seconds=progress.elapsed_seconds)
    if progress.iteration != watch.iteration:
        if progress.iteration >= 2 and watch.first_pass_bytes is None and watch.iteration == 1:
            watch = dataclasses.replace(watch, first_pass_bytes=progress.data_processed)
        # A job first seen in its second pass or later was not watched from the
        # start of that pass: what it has left is only part of what the pass sends.
        midway = watch.iteration == 0 and progress.iteration >= 2
        watch = dataclasses.replace(
            watch, iteration=progress.iteration, pass_bytes=remaining, joined_midway=midway,
            previous_pass_bytes=0 if watch.joined_midway else watch.pass_bytes)
    elif remaining > watch.pass_bytes:
        watch = dataclasses.replace(watch, pass_bytes=remaining)
    if watch.best_remaining is None or remaining < watch.best_remaining:
        return dataclasses.replace(
            watch, best_remaining=remaining, best_at_seconds=progress.elapsed_seconds
        )
    return watch


def link_stalled(*, watch: Watch, progress: JobProgress,
                 stall_seconds: float = LINK_STALL_SECONDS) -> bool:
    return (stall_seconds > 0 and watch.processed_at_seconds is not None
            and progress.elapsed_seconds - watch.processed_at_seconds > stall_seconds)


def trigger(*, policy: Policy, watch: Watch, progress: JobProgress,
            stall_seconds: float = LINK_STALL_SECONDS) -> Trigger:
    elapsed = progress.elapsed_seconds
    if policy.hard_timeout_seconds and elapsed > policy.hard_timeout_seconds:
        return Trigger.HARD_TIMEOUT
    if link_stalled(watch=watch, progress=progress, stall_seconds=stall_seconds):
        return Trigger.LINK_STALLED
    if (
        policy.progress_timeout_seconds
        and watch.best_remaining is not None
        and elapsed - watch.best_at_seconds > policy.progress_timeout_seconds
    ):
        return Trigger.STALLED
    if policy.completion_timeout_seconds_per_gib and progress.data_total:
        budget = policy.completion_timeout_seconds_per_gib * progress.data_total / GIB
        if elapsed > budget:
            return Trigger.OVERDUE
    return Trigger.NONE


_ESCALATION = {
    OnTimeout.ABORT: Decision.ABORT,
    OnTimeout.SUSPEND: Decision.SUSPEND_SOURCE,
    OnTimeout.POST_COPY: Decision.START_POST_COPY,
}


def cannot_converge(*, watch: Watch, progress: JobProgress, expectation: Expectation,
                    confirmed_only: bool = False) -> bool:
    """Whether the pre-copy will never fit its leftover into the switch-over limit.

    While a pass runs the guest dirties ``min(hot set, dirty rate × pass
    time)``, which the next pass sends again; a pass no smaller than the one
    before means none ever will be. From the third pass on, the passes
    themselves say so (QEMU's own dirty rate cannot: it counts each page once
    per pass, so a hot set rewritten in full reads as hot set ÷ pass time).
    Before that, the plan's measured rate and hot set forecast it.
    ``confirmed_only`` waits for the passes (an abort is never taken on a
    sampled estimate alone).
    """
    link = progress.transfer_rate_bytes_per_s
    if link <= 0 or progress.data_total == 0 or watch.in_post_copy:
        return False
    # Passes are compared by their first sample, up to a poll late; a pass shorter than
    # a few polls is sampled at a random point of it, and near convergence, where the
    # passes shrink slowly towards their floor, that noise reads as a pass that grew.
    judged = link * max(expectation.max_downtime_seconds, JUDGED_PASS_SECONDS)
    if progress.iteration >= 3 and watch.previous_pass_bytes and watch.pass_bytes > judged \
            and watch.pass_bytes >= watch.previous_pass_bytes * SHRINK_NEEDED:
        return True
    if progress.iteration >= 2 and watch.pass_bytes > link * expectation.max_downtime_seconds \
            and progress.dirty_rate_bytes_per_s >= link * SHRINK_NEEDED:
        # Dirtied faster than sent, even as QEMU undercounts it (it counts each page once
        # per pass), and over a whole pass, so short passes read it as well as long ones.
        return True
    if confirmed_only or expectation.dirty_rate_bytes_per_s is None:
        return False
    # The plan's rates, from the pass in progress on: would the live forecast converge?
    pass_bytes = (progress.data_processed + progress.data_remaining if progress.iteration <= 1
                  else watch.pass_bytes)
    hot = expectation.hot_set_bytes if expectation.hot_set_bytes is not None else pass_bytes
    ahead = forecast.live(forecast.Inputs(
        memory_bytes=pass_bytes, in_use_bytes=pass_bytes,
        dirty_rate_bytes_per_s=expectation.dirty_rate_bytes_per_s,
        hot_set_bytes=min(hot, pass_bytes), link_bytes_per_s=link,
        max_downtime_seconds=expectation.max_downtime_seconds, overheads=forecast.NO_OVERHEADS))
    return not ahead.converges


# A pass must leave at most this share of what it sent to count as converging.
SHRINK_NEEDED = 0.95
# Only passes at least this long (at the link's rate) are compared: four polls.
JUDGED_PASS_SECONDS = 2.0


def decide(
    *, policy: Policy, watch: Watch, progress: JobProgress, abort_requested: bool = False,
    stall_seconds: float = LINK_STALL_SECONDS, expectation: Expectation | None = None,
) -> Verdict:
    """The next step for a migration in flight.

    Once in post-copy nothing can be aborted: the target already runs the VM
    and the source holds pages it still needs, so cancelling would lose it.
    A post-copy whose link carries nothing keeps waiting, and says so: TCP
    resends what the cut swallowed once the link is back, and the copy
    completes by itself. A pre-copy whose link carries nothing is aborted and never escalated:
    post-copy over a dead link would split the VM, and suspending it would
    only stop it for nothing.
    """
    stalled = link_stalled(watch=watch, progress=progress, stall_seconds=stall_seconds)
    if watch.in_post_copy:
        if watch.post_copy_paused and link_stalled(watch=watch, progress=progress,
                                                   stall_seconds=POST_COPY_STUCK_SECONDS):
            return Verdict(Decision.HAND_OVER, Trigger.LINK_STALLED)
        if not watch.post_copy_paused and link_stalled(watch=watch, progress=progress,
                                                       stall_seconds=POST_COPY_PAUSE_SECONDS):
            return Verdict(Decision.PAUSE_POST_COPY, Trigger.LINK_STALLED)
        return Verdict(Decision.CONTINUE, Trigger.LINK_STALLED if stalled else Trigger.NONE)
    if abort_requested:
        return Verdict(Decision.ABORT, Trigger.REQUESTED)
    why = trigger(policy=policy, watch=watch, progress=progress, stall_seconds=stall_seconds)
    if (why is Trigger.NONE and expectation is not None and not watch.escalated
            and expectation.post_copy_at_start and progress.data_total > 0
            and policy.on_timeout is OnTimeout.POST_COPY):
        return Verdict(Decision.START_POST_COPY, Trigger.PLANNED)
    if (why is Trigger.NONE and not watch.escalated and policy.escalation is Escalation.FORECAST
            and not policy.auto_converge
            and cannot_converge(watch=watch, progress=progress, expectation=expectation or Expectation(),
                                confirmed_only=policy.on_timeout is OnTimeout.ABORT)):
        why = Trigger.FORECAST
    if why is Trigger.NONE:
        return Verdict(Decision.CONTINUE, why)
    if why in (Trigger.HARD_TIMEOUT, Trigger.LINK_STALLED):
        return Verdict(Decision.ABORT, why)
    if watch.escalated:
        # One escalation per migration; after it only the hard timeout acts.
        return Verdict(Decision.CONTINUE, Trigger.NONE)
    if policy.on_timeout is OnTimeout.SUSPEND and not good_moment_to_suspend(
        watch=watch, progress=progress, policy=policy, why=why
    ):
        return Verdict(Decision.CONTINUE, why)
    return Verdict(_ESCALATION[policy.on_timeout], why)


# Suspend when the current pass has less than this much transfer time left.
SUSPEND_WINDOW_SECONDS = 1.0


def good_moment_to_suspend(*, watch: Watch, progress: JobProgress, policy: Policy, why: Trigger) -> bool:
    """Whether suspending now costs the least downtime.

    Once suspended, QEMU must still send what is left of the current pass
    plus every page dirtied during it. Suspending at the start of a pass
    pays for a whole pass twice; near its end, almost only for the dirty set.
    Passes are short next to the timeouts, so waiting for the end of one
    costs little; if none comes in a further progress timeout, suspend anyway.
    """
    if progress.transfer_rate_bytes_per_s <= 0:
        return True
    if why is Trigger.FORECAST:
        # Suspended mid-pass, the guest pays for the rest of the pass on top of
        # all it dirtied: suspend in the last moment of a pass (polled finely
        # there, see poll_seconds), or, if that moment was missed, as the next
        # pass begins, before the guest dirties much more.
        return (progress.data_remaining <= progress.transfer_rate_bytes_per_s * FINE_POLL_SECONDS * 1.5
                or (progress.iteration >= 2 and progress.data_remaining >= watch.pass_bytes * 0.9))
    if progress.data_remaining <= progress.transfer_rate_bytes_per_s * SUSPEND_WINDOW_SECONDS:
        return True
    if why is Trigger.STALLED:
        waited = progress.elapsed_seconds - watch.best_at_seconds - policy.progress_timeout_seconds
        return waited > policy.progress_timeout_seconds
    return True


# Near the end of a pass the monitor polls this often, to catch the moment.
FINE_POLL_SECONDS = 0.1


def poll_seconds(progress: JobProgress | None, *, default: float, fine: bool = True) -> float:
    """How long to wait for the next sample: finely when a pass is about to end and
    ``fine`` (something waits for that moment); each sample costs the copy a little."""
    if not fine or progress is None or progress.transfer_rate_bytes_per_s <= 0:
        return default
    left = progress.data_remaining / progress.transfer_rate_bytes_per_s
    return min(default, FINE_POLL_SECONDS) if left <= 2 * default else default


def percent_done(progress: JobProgress, *, expected_bytes: int | None = None,
                 floor: float = 0.0) -> float:
    """Share of the work done, 0–100, never below ``floor`` nor past 99.9 before the job ends.

    Within a pass, remaining bytes fall; at the next pass they jump back to
    what was dirtied meanwhile, so "remaining against total" falls at every
    new pass of a busy guest (98 → 69 → 89 %), which reads as a move going
    backwards. With the plan's forecast of every byte the move sends, progress
    is the share of that sent so far (grown when the job shows more left than
    forecast); without one it is the share of the current pass, held at its
    best so far.
    """
    if progress.data_total <= 0:
        return floor
    if expected_bytes:
        total = max(expected_bytes, progress.data_processed + progress.data_remaining)
        done = 100.0 * progress.data_processed / total
    else:
        done = 100.0 * (progress.data_total - progress.data_remaining) / progress.data_total
    return max(floor, min(99.9, max(0.0, done)))


def eta_seconds(progress: JobProgress, *, guest_paused: bool = False) -> float | None:
    """Seconds until remaining bytes reach zero at the net rate, or None if they never will.

    QEMU's dirty rate is measured per iteration and goes stale once the guest
    is paused (non-live, or the hybrid's suspend); a paused guest dirties nothing.
    """
    dirty = 0 if guest_paused else progress.dirty_rate_bytes_per_s
    net = progress.transfer_rate_bytes_per_s - dirty
    if progress.data_remaining == 0:
        return 0.0
    if progress.transfer_rate_bytes_per_s <= 0 or net <= 0:
        return None
    return progress.data_remaining / net
