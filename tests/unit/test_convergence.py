"""Escalation rules and progress arithmetic, as tables: no hypervisor needed."""

import dataclasses

import pytest

from vmmigration.core.convergence import (
    Decision,
    Expectation,
    Trigger,
    Verdict,
    Watch,
    decide,
    eta_seconds,
    initial_watch,
    link_stalled,
    observe,
    percent_done,
)
from vmmigration.core.model import GIB, MIB, Escalation, JobProgress, OnTimeout, Policy


def sample(elapsed: float, remaining: int, total: int = 128 * MIB, **extra: int) -> JobProgress:
    # A link that works sends bytes all the time: 1 MiB a second unless told.
    extra.setdefault("data_processed", int(elapsed * MIB))
    return JobProgress(elapsed_seconds=elapsed, data_total=total, data_remaining=remaining, **extra)


def test_a_new_low_of_remaining_bytes_counts_as_progress() -> None:
    watch = observe(Watch(), sample(1.0, 100 * MIB))
    watch = observe(watch, sample(2.0, 40 * MIB))
    assert (watch.best_remaining, watch.best_at_seconds) == (40 * MIB, 2.0)


def test_a_new_iteration_jumping_back_up_is_not_progress_nor_a_reset() -> None:
    watch = observe(Watch(), sample(1.0, 10 * MIB))
    watch = observe(watch, sample(2.0, 90 * MIB))
    assert (watch.best_remaining, watch.best_at_seconds) == (10 * MIB, 1.0)


def test_samples_from_a_job_still_setting_up_are_ignored() -> None:
    assert observe(Watch(), JobProgress(elapsed_seconds=3.0)) == Watch()


STALL = Policy(progress_timeout_seconds=5, completion_timeout_seconds_per_gib=0, hard_timeout_seconds=0)


@pytest.mark.parametrize(
    ("policy", "watch", "progress", "abort", "expected"),
    [
        pytest.param(STALL, Watch(best_remaining=MIB, best_at_seconds=10), sample(14, 2 * MIB), False,
                     (Decision.CONTINUE, Trigger.NONE), id="within-progress-timeout"),
        pytest.param(STALL, Watch(best_remaining=MIB, best_at_seconds=10), sample(16, 2 * MIB), False,
                     (Decision.ABORT, Trigger.STALLED), id="stalled-default-aborts"),
        pytest.param(dataclasses.replace(STALL, on_timeout=OnTimeout.SUSPEND),
                     Watch(best_remaining=MIB, best_at_seconds=10), sample(16, 2 * MIB), False,
                     (Decision.SUSPEND_SOURCE, Trigger.STALLED), id="stalled-hybrid-suspends"),
        pytest.param(dataclasses.replace(STALL, on_timeout=OnTimeout.SUSPEND),
                     Watch(best_remaining=MIB, best_at_seconds=10),
                     sample(16, 40 * MIB, transfer_rate_bytes_per_s=8 * MIB), False,
                     (Decision.CONTINUE, Trigger.STALLED), id="hybrid-waits-for-the-end-of-a-pass"),
        pytest.param(dataclasses.replace(STALL, on_timeout=OnTimeout.SUSPEND),
                     Watch(best_remaining=MIB, best_at_seconds=10),
                     sample(16, 6 * MIB, transfer_rate_bytes_per_s=8 * MIB), False,
                     (Decision.SUSPEND_SOURCE, Trigger.STALLED), id="hybrid-suspends-near-the-end-of-a-pass"),
        pytest.param(dataclasses.replace(STALL, on_timeout=OnTimeout.SUSPEND),
                     Watch(best_remaining=MIB, best_at_seconds=10),
                     sample(21, 40 * MIB, transfer_rate_bytes_per_s=8 * MIB), False,
                     (Decision.SUSPEND_SOURCE, Trigger.STALLED), id="hybrid-stops-waiting-after-another-timeout"),
        pytest.param(dataclasses.replace(STALL, on_timeout=OnTimeout.POST_COPY),
                     Watch(best_remaining=MIB, best_at_seconds=10),
                     sample(16, 40 * MIB, transfer_rate_bytes_per_s=8 * MIB), False,
                     (Decision.START_POST_COPY, Trigger.STALLED), id="post-copy-does-not-wait"),
        pytest.param(dataclasses.replace(STALL, on_timeout=OnTimeout.POST_COPY),
                     Watch(best_remaining=MIB, best_at_seconds=10), sample(16, 2 * MIB), False,
                     (Decision.START_POST_COPY, Trigger.STALLED), id="stalled-post-copy"),
        pytest.param(dataclasses.replace(STALL, on_timeout=OnTimeout.SUSPEND),
                     Watch(best_remaining=MIB, best_at_seconds=10, escalated=True), sample(16, 2 * MIB),
                     False, (Decision.CONTINUE, Trigger.NONE), id="escalates-only-once"),
        pytest.param(Policy(progress_timeout_seconds=0, completion_timeout_seconds_per_gib=10,
                            hard_timeout_seconds=0, on_timeout=OnTimeout.SUSPEND),
                     Watch(), sample(6, MIB, total=GIB // 2), False,
                     (Decision.SUSPEND_SOURCE, Trigger.OVERDUE), id="overdue-per-gib"),
        pytest.param(Policy(progress_timeout_seconds=0, completion_timeout_seconds_per_gib=10,
                            hard_timeout_seconds=0),
                     Watch(), sample(4, MIB, total=GIB // 2), False,
                     (Decision.CONTINUE, Trigger.NONE), id="inside-per-gib-budget"),
        pytest.param(Policy(hard_timeout_seconds=60, on_timeout=OnTimeout.SUSPEND),
                     Watch(escalated=True), sample(61, MIB), False,
                     (Decision.ABORT, Trigger.HARD_TIMEOUT), id="hard-timeout-aborts-even-escalated"),
        pytest.param(STALL, Watch(), sample(1, MIB), True,
                     (Decision.ABORT, Trigger.REQUESTED), id="abort-on-request"),
        pytest.param(STALL, Watch(escalated=True, in_post_copy=True), sample(99, MIB), True,
                     (Decision.CONTINUE, Trigger.NONE), id="post-copy-cannot-be-aborted"),
        pytest.param(Policy(hard_timeout_seconds=10), Watch(escalated=True, in_post_copy=True),
                     sample(99, MIB), False,
                     (Decision.CONTINUE, Trigger.NONE), id="post-copy-ignores-hard-timeout"),
    ],
)
def test_decide_escalates_by_policy(
    policy: Policy, watch: Watch, progress: JobProgress, abort: bool, expected: tuple[Decision, Trigger]
) -> None:
    verdict = decide(policy=policy, watch=watch, progress=progress, abort_requested=abort)
    assert (verdict.decision, verdict.trigger) == expected


@pytest.mark.parametrize(
    ("on_timeout", "live", "escalated"),
    [
        pytest.param(OnTimeout.SUSPEND, True, False, id="live-may-escalate"),
        pytest.param(OnTimeout.SUSPEND, False, True, id="non-live-is-already-suspended"),
        pytest.param(OnTimeout.POST_COPY, False, True, id="non-live-has-no-post-copy"),
        pytest.param(OnTimeout.ABORT, False, False, id="non-live-may-still-abort-by-policy"),
    ],
)
def test_initial_watch_depends_on_liveness(on_timeout: OnTimeout, live: bool, escalated: bool) -> None:
    assert initial_watch(live=live, policy=Policy(on_timeout=on_timeout)).escalated is escalated


@pytest.mark.parametrize(
    ("progress", "percent"),
    [
        pytest.param(JobProgress(elapsed_seconds=0), 0.0, id="no-data-yet"),
        pytest.param(sample(1, 96 * MIB), 25.0, id="quarter"),
        pytest.param(sample(1, 0), 99.9, id="never-100-before-the-end"),
    ],
)
def test_percent_done_counts_remaining_against_total(progress: JobProgress, percent: float) -> None:
    assert percent_done(progress) == pytest.approx(percent)


@pytest.mark.parametrize(
    ("remaining", "rate", "dirty", "paused", "eta"),
    [
        pytest.param(100 * MIB, 20 * MIB, 10 * MIB, False, 10.0, id="net-rate"),
        pytest.param(100 * MIB, 10 * MIB, 20 * MIB, False, None, id="dirtier-than-link-never-ends"),
        pytest.param(100 * MIB, 10 * MIB, 20 * MIB, True, 10.0, id="paused-guest-dirties-nothing"),
        pytest.param(0, 0, 0, False, 0.0, id="done"),
        pytest.param(MIB, 0, 0, False, None, id="no-rate-yet"),
    ],
)
def test_eta_uses_the_net_transfer_rate(
    remaining: int, rate: int, dirty: int, paused: bool, eta: float | None
) -> None:
    progress = sample(1, remaining, transfer_rate_bytes_per_s=rate, dirty_rate_bytes_per_s=dirty)
    assert eta_seconds(progress, guest_paused=paused) == (pytest.approx(eta) if eta is not None else None)


def _fold(*samples: JobProgress, watch: Watch | None = None) -> Watch:
    watch = watch or Watch()
    for one in samples:
        watch = observe(watch, one)
    return watch


def test_a_link_that_sends_nothing_for_ten_seconds_aborts_a_pre_copy_and_never_escalates() -> None:
    policy = Policy(on_timeout=OnTimeout.POST_COPY)
    watch = _fold(sample(1.0, 64 * MIB, data_processed=40 * MIB),
                  sample(11.5, 64 * MIB, data_processed=40 * MIB))
    assert decide(policy=policy, watch=watch, progress=sample(11.5, 64 * MIB,
                  data_processed=40 * MIB)) == Verdict(Decision.ABORT, Trigger.LINK_STALLED)


def test_a_slow_link_that_still_moves_bytes_is_not_stalled() -> None:
    policy = Policy(on_timeout=OnTimeout.ABORT, progress_timeout_seconds=0)
    watch = _fold(*(sample(float(t), 64 * MIB, data_processed=40 * MIB + t * 1000) for t in range(1, 30)))
    assert decide(policy=policy, watch=watch, progress=sample(29.0, 64 * MIB,
                  data_processed=40 * MIB + 29000)).decision is Decision.CONTINUE


def test_a_post_copy_whose_link_stalls_waits_for_it_and_is_never_aborted() -> None:
    watch = dataclasses.replace(_fold(sample(1.0, 32 * MIB, data_processed=90 * MIB)), in_post_copy=True)
    stuck = sample(12.0, 32 * MIB, data_processed=90 * MIB)
    assert decide(policy=Policy(), watch=observe(watch, stuck), progress=stuck,
                  abort_requested=True) == Verdict(Decision.CONTINUE, Trigger.LINK_STALLED)
    moving = sample(12.0, 30 * MIB, data_processed=92 * MIB)
    assert decide(policy=Policy(), watch=observe(watch, moving), progress=moving).decision is Decision.CONTINUE


def test_a_post_copy_silent_for_45_s_is_paused_once_to_be_resumed_and_never_aborted() -> None:
    watch = dataclasses.replace(_fold(sample(1.0, 32 * MIB, data_processed=90 * MIB)), in_post_copy=True)
    dead = sample(47.0, 32 * MIB, data_processed=90 * MIB)
    assert decide(policy=Policy(), watch=observe(watch, dead), progress=dead,
                  abort_requested=True) == Verdict(Decision.PAUSE_POST_COPY, Trigger.LINK_STALLED)
    paused = dataclasses.replace(observe(watch, dead), post_copy_paused=True)
    assert decide(policy=Policy(), watch=paused, progress=dead) == Verdict(
        Decision.CONTINUE, Trigger.LINK_STALLED)


def test_a_post_copy_still_silent_15_s_after_its_pause_is_handed_to_a_person() -> None:
    watch = dataclasses.replace(_fold(sample(1.0, 32 * MIB, data_processed=90 * MIB)),
                                in_post_copy=True, post_copy_paused=True)
    waiting = sample(60.0, 32 * MIB, data_processed=90 * MIB)
    assert decide(policy=Policy(), watch=observe(watch, waiting), progress=waiting).decision \
        is Decision.CONTINUE
    dead = sample(62.0, 32 * MIB, data_processed=90 * MIB)
    assert decide(policy=Policy(), watch=observe(watch, dead), progress=dead) == Verdict(
        Decision.HAND_OVER, Trigger.LINK_STALLED)


def test_a_job_still_setting_up_is_never_called_stalled() -> None:
    assert not link_stalled(watch=Watch(), progress=JobProgress(elapsed_seconds=60.0))


# ---- escalation at the forecast moment ---------------------------------------------------

BUSY_HYBRID = Policy(on_timeout=OnTimeout.SUSPEND)  # timeouts far away: only the forecast acts
MEASURED_BUSY = Expectation(dirty_rate_bytes_per_s=48 * MIB, hot_set_bytes=48 * MIB)


def busy(elapsed: float, remaining: int, *, iteration: int = 1, dirty: int = 0,
         processed: int = 80 * MIB) -> JobProgress:
    return JobProgress(elapsed_seconds=elapsed, data_total=128 * MIB, data_remaining=remaining,
                       data_processed=processed, transfer_rate_bytes_per_s=8 * MIB,
                       dirty_rate_bytes_per_s=dirty, iteration=iteration)


@pytest.mark.parametrize(("policy", "expectation", "progress", "expected"), [
    pytest.param(BUSY_HYBRID, MEASURED_BUSY, busy(5, 40 * MIB), (Decision.CONTINUE, Trigger.FORECAST),
                 id="measured-busy-guest-waits-for-the-end-of-its-first-pass"),
    pytest.param(BUSY_HYBRID, MEASURED_BUSY, busy(12.5, 4 * MIB), (Decision.CONTINUE, Trigger.FORECAST),
                 id="measured-busy-guest-not-suspended-mid-pass-which-would-pay-the-rest-of-it-twice"),
    pytest.param(BUSY_HYBRID, MEASURED_BUSY, busy(13.5, 46 * MIB, iteration=2),
                 (Decision.SUSPEND_SOURCE, Trigger.FORECAST),
                 id="measured-busy-guest-suspended-as-its-second-pass-begins"),
    pytest.param(BUSY_HYBRID, None, busy(9.5, 4 * MIB), (Decision.CONTINUE, Trigger.NONE),
                 id="unmeasured-guest-first-pass-tells-nothing"),
    pytest.param(BUSY_HYBRID, None, busy(16, 4 * MIB, iteration=2, dirty=48 * MIB),
                 (Decision.SUSPEND_SOURCE, Trigger.FORECAST), id="unmeasured-guest-judged-by-qemus-own-rate"),
    pytest.param(BUSY_HYBRID, Expectation(dirty_rate_bytes_per_s=2 * MIB), busy(9.5, 4 * MIB),
                 (Decision.CONTINUE, Trigger.NONE), id="slow-writer-converges"),
    pytest.param(BUSY_HYBRID, Expectation(dirty_rate_bytes_per_s=48 * MIB, hot_set_bytes=2 * MIB),
                 busy(9.5, 4 * MIB), (Decision.CONTINUE, Trigger.NONE), id="small-hot-set-fits-the-switch"),
    pytest.param(Policy(on_timeout=OnTimeout.POST_COPY), MEASURED_BUSY, busy(5, 40 * MIB),
                 (Decision.START_POST_COPY, Trigger.FORECAST), id="post-copy-does-not-wait-for-the-pass"),
    pytest.param(Policy(), MEASURED_BUSY, busy(5, 40 * MIB), (Decision.CONTINUE, Trigger.NONE),
                 id="never-aborted-on-a-sampled-estimate"),
    pytest.param(Policy(), None, busy(16, 40 * MIB, iteration=2, dirty=48 * MIB),
                 (Decision.ABORT, Trigger.FORECAST), id="aborted-once-qemu-confirms"),
    pytest.param(dataclasses.replace(BUSY_HYBRID, escalation=Escalation.TIMEOUT), MEASURED_BUSY,
                 busy(9.5, 4 * MIB), (Decision.CONTINUE, Trigger.NONE), id="timeouts-only-when-asked"),
    pytest.param(Policy(on_timeout=OnTimeout.POST_COPY), Expectation(post_copy_at_start=True),
                 busy(0.5, 120 * MIB, processed=MIB), (Decision.START_POST_COPY, Trigger.PLANNED),
                 id="planned-post-copy-switches-as-the-job-runs"),
])
def test_a_live_move_that_cannot_converge_is_escalated_at_the_forecast_moment(
        policy: Policy, expectation: Expectation | None, progress: JobProgress,
        expected: tuple[Decision, Trigger]) -> None:
    watch = observe(Watch(), progress)
    verdict = decide(policy=policy, watch=watch, progress=progress, expectation=expectation)
    assert (verdict.decision, verdict.trigger) == expected


def test_passes_that_stop_shrinking_confirm_it_without_any_measurement() -> None:
    # The demo's busy guest, unmeasured: passes of 110, 46, then 44 MiB. QEMU's own rate
    # reads 3.8 then 7 MiB/s (it counts each page once per pass), below the link.
    watch = Watch()
    for progress in (busy(12, 4 * MIB), busy(13.1, 46 * MIB, iteration=2, dirty=int(3.8 * MIB)),
                     busy(18.6, 44 * MIB, iteration=3, dirty=int(7.0 * MIB))):
        watch = observe(watch, progress)
        verdict = decide(policy=BUSY_HYBRID, watch=watch, progress=progress)
    assert (verdict.decision, verdict.trigger) == (Decision.SUSPEND_SOURCE, Trigger.FORECAST)
    assert (watch.previous_pass_bytes, watch.pass_bytes) == (46 * MIB, 44 * MIB)


def test_a_job_adopted_midway_through_a_pass_never_compares_that_partial_pass() -> None:
    # Adopted after a restart with 6 MiB of pass 3 left: pass 4 sending 20 MiB is not
    # a pass that grew, since pass 3's size was never seen. Pass 5 of 20 MiB again is.
    adopted = Watch()
    for progress in (busy(40, 6 * MIB, iteration=3), busy(43, 20 * MIB, iteration=4)):
        adopted = observe(adopted, progress)
        verdict = decide(policy=Policy(), watch=adopted, progress=progress)
        assert verdict.decision is Decision.CONTINUE, progress
    stuck = busy(46, 20 * MIB, iteration=5)
    adopted = observe(adopted, stuck)
    assert decide(policy=Policy(), watch=adopted, progress=stuck).decision is Decision.ABORT


def test_short_passes_near_convergence_are_not_judged_on_their_noisy_samples() -> None:
    # Recorded: 24 MiB rewritten at 1 MiB/s over a 2.5 MiB/s cap. The last passes last
    # under a second, so a poll every 0.5 s samples each at a random point: 1.2 MiB
    # first seen in pass 5, 1.0 in pass 6 (which reads as no shrink). It converges.
    def tail(elapsed: float, remaining: float, iteration: int) -> JobProgress:
        return JobProgress(elapsed_seconds=elapsed, data_total=128 * MIB,
                           data_remaining=int(remaining * MIB), data_processed=150 * MIB,
                           transfer_rate_bytes_per_s=int(2.5 * MIB),
                           dirty_rate_bytes_per_s=int(1.1 * MIB), iteration=iteration)
    watch = Watch()
    for progress in (tail(44, 10.0, 3), tail(48, 4.3, 4), tail(50, 1.2, 5), tail(50.5, 1.0, 6)):
        watch = observe(watch, progress)
        assert decide(policy=Policy(), watch=watch, progress=progress).decision is Decision.CONTINUE


def test_the_first_pass_is_remembered_as_the_memory_in_use() -> None:
    watch = observe(Watch(), busy(9, 2 * MIB, processed=100 * MIB))
    watch = observe(watch, busy(10, 48 * MIB, iteration=2, processed=101 * MIB))
    assert watch.first_pass_bytes == 101 * MIB and watch.pass_bytes == 48 * MIB


def test_progress_never_goes_back_at_a_new_pass() -> None:
    # The demo's busy guest, as watched: 98 → 69 → 89 → 96 → 67 % by remaining/total.
    shown = []
    watch = Watch()
    for remaining, processed in ((3, 90), (40, 95), (14, 120), (5, 130), (42, 135), (1, 170)):
        progress = busy(1, remaining * MIB, processed=processed * MIB)
        for expected in (None, 144 * MIB):
            percent = percent_done(progress, expected_bytes=expected, floor=watch.percent)
            if expected:
                shown.append(percent)
        watch = dataclasses.replace(watch, percent=percent)
    assert shown == sorted(shown) and shown[-1] > 99
    # With the plan's bytes the figure is the share of the whole move, not of a pass.
    assert percent_done(busy(1, 40 * MIB, processed=72 * MIB), expected_bytes=144 * MIB) == pytest.approx(50.0)
