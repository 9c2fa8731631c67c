"""Auto's choice from the forecasts, the plan it writes, and how the dirty-rate readings are read."""

from __future__ import annotations

import dataclasses

import pytest

from vmmigration.core import dirtyrate, plans, strategy
from vmmigration.core.dirtyrate import Reading
from vmmigration.core.forecast import Strategy
from vmmigration.core.model import MIB, Mode, OnTimeout, OverBudget, Policy
from vmmigration.core.plans import IN_USE_MEMORY, LINK_POLICY, LINK_UNKNOWN, InUse, LinkRate, Measured


def measured(*, dirty: float, hot: int, link: float | None = 8, in_use: int = 96,
             known: bool = True) -> Measured:
    rate = dirtyrate.DirtyRate(bytes_per_s=dirty * MIB, high_bytes_per_s=dirty * MIB + 2 * MIB,
                               hot_set_bytes=hot * MIB, hot_set_known=known,
                               readings=(Reading(1.0, dirty * MIB),), measured_at=1000.0)
    return Measured(memory_bytes=128 * MIB, in_use=InUse(bytes=in_use * MIB, source=IN_USE_MEMORY),
                    link=LinkRate(bytes_per_s=link * MIB if link else None,
                                  source=LINK_POLICY if link else LINK_UNKNOWN),
                    dirty=rate)


IDLE = measured(dirty=0, hot=0)
BUSY = measured(dirty=48, hot=48)  # 48 MiB rewritten at 48 MiB/s over an 8 MiB/s link


@pytest.mark.parametrize(("policy", "guest", "expected"), [
    pytest.param(Policy(), IDLE, Strategy.LIVE, id="idle-guest-live"),
    pytest.param(Policy(on_timeout=OnTimeout.POST_COPY), IDLE, Strategy.LIVE,
                 id="idle-guest-live-even-when-post-copy-is-allowed"),
    pytest.param(Policy(on_timeout=OnTimeout.POST_COPY), BUSY, Strategy.POST_COPY,
                 id="busy-guest-post-copy-fits-the-budget"),
    # A budget that holds the hot set lets QEMU itself switch over with it: that is live.
    pytest.param(Policy(on_timeout=OnTimeout.SUSPEND, max_downtime_ms=10_000), BUSY, Strategy.LIVE,
                 id="busy-guest-live-within-a-budget-that-holds-its-hot-set"),
    pytest.param(Policy(on_timeout=OnTimeout.SUSPEND, over_downtime_budget=OverBudget.LEAST_DOWNTIME),
                 BUSY, Strategy.HYBRID, id="busy-guest-hybrid-as-least-downtime"),
    pytest.param(Policy(over_downtime_budget=OverBudget.LEAST_DOWNTIME), BUSY, Strategy.NON_LIVE,
                 id="busy-guest-non-live-when-it-is-the-only-fallback"),
])
def test_auto_chooses_live_when_it_fits_else_the_quickest_allowed_fallback_that_fits(
        policy: Policy, guest: Measured, expected: Strategy) -> None:
    plan = plans.make(requested=Mode.AUTO, policy=policy, measured=guest)
    assert plan.strategy is expected, plan.why


def test_auto_never_chooses_post_copy_into_a_target_that_could_not_resume_it_and_says_why() -> None:
    policy = Policy(on_timeout=OnTimeout.POST_COPY, over_downtime_budget=OverBudget.LEAST_DOWNTIME)
    crashes = "libvirt 11.3.0 on the target crashes on a post-copy resume"
    plan = plans.make(requested=Mode.AUTO, policy=policy,
                      measured=dataclasses.replace(BUSY, post_copy_blocker=crashes))
    assert plan.strategy is Strategy.NON_LIVE, plan.why
    assert f"post-copy is not an option: {crashes}" in plan.why
    # The same guest into a target that can resume it: post-copy, its degraded time forecast.
    able = plans.make(requested=Mode.AUTO, policy=policy, measured=BUSY)
    assert able.strategy is Strategy.POST_COPY and "not an option" not in able.why
    assert able.chosen is not None and able.chosen.degraded_seconds > 0


def test_a_guest_no_allowed_strategy_can_move_within_the_budget_is_blocked_with_the_numbers() -> None:
    plan = plans.make(requested=Mode.AUTO, policy=Policy(), measured=BUSY)
    assert plan.strategy is None and not plan.within_budget
    assert "NonLive pauses 12.0 s" in plan.why and "300 ms" in plan.why, plan.why
    assert "onTimeout: Suspend" in plan.why and "overDowntimeBudget" in plan.why


def test_asking_for_the_hybrid_accepts_its_pause_over_the_budget() -> None:
    plan = plans.make(requested=Mode.AUTO, policy=Policy(on_timeout=OnTimeout.SUSPEND), measured=BUSY)
    assert plan.strategy is Strategy.HYBRID and not plan.within_budget
    assert "least downtime" in plan.why


def test_an_explicit_mode_is_kept_as_asked_and_still_forecast() -> None:
    plan = plans.make(requested=Mode.NON_LIVE, policy=Policy(), measured=IDLE)
    assert plan.strategy is Strategy.NON_LIVE and len(plan.forecasts) == 5
    assert plan.execution(Policy()).mode is Mode.NON_LIVE


def test_an_explicit_live_move_that_cannot_converge_is_planned_as_its_escalation() -> None:
    policy = Policy(on_timeout=OnTimeout.SUSPEND)
    plan = plans.make(requested=Mode.LIVE, policy=policy, measured=BUSY)
    assert plan.strategy is Strategy.HYBRID and "escalates" in plan.why
    # It still runs as the user's own Live: the escalation is the monitor's, at the forecast moment.
    assert plan.execution(policy) == strategy.Execution(Mode.LIVE, policy)


def test_the_chosen_strategy_runs_with_the_mode_and_policy_it_needs() -> None:
    base = Policy()
    assert strategy.execution(Strategy.HYBRID, policy=base).policy.on_timeout is OnTimeout.SUSPEND
    post = strategy.execution(Strategy.POST_COPY, policy=base)
    assert (post.mode, post.policy.on_timeout, post.post_copy_at_start) == (Mode.LIVE, OnTimeout.POST_COPY, True)
    assert strategy.execution(Strategy.AUTO_CONVERGE, policy=base).policy.auto_converge
    assert strategy.execution(Strategy.NON_LIVE, policy=base).mode is Mode.NON_LIVE


def test_without_a_link_rate_a_live_move_is_planned_and_the_job_measures_the_link() -> None:
    plan = plans.make(requested=Mode.AUTO, policy=Policy(), measured=measured(dirty=48, hot=48, link=None))
    assert plan.strategy is Strategy.LIVE and "link rate not known" in plan.why
    assert plan.forecasts == ()
    # The monitor still knows the guest's rate, so it can escalate once the job shows the link's.
    assert plan.expectation(Policy()).dirty_rate_bytes_per_s == 48 * MIB


def test_a_shut_off_domain_is_planned_offline() -> None:
    plan = plans.make(requested=Mode.AUTO, policy=Policy(),
                      measured=dataclasses.replace(IDLE, running=False, dirty=None))
    assert plan.strategy is Strategy.OFFLINE
    assert plan.execution(Policy()).mode is Mode.OFFLINE


def test_the_plan_in_status_has_the_inputs_their_sources_and_every_candidate() -> None:
    plan = plans.make(requested=Mode.AUTO, policy=Policy(on_timeout=OnTimeout.POST_COPY), measured=BUSY)
    fields = plan.as_fields(generation=3)
    assert fields["strategy"] == "PostCopy" and fields["observedGeneration"] == 3
    assert fields["inputs"]["linkSource"] == "PolicyCap" and fields["inputs"]["inUseSource"] == "MemorySize"
    assert fields["inputs"]["dirtyRateBytesPerSecond"] == 48 * MIB
    assert [c["strategy"] for c in fields["candidates"]] == [
        "Live", "LiveAutoConverge", "PostCopy", "Hybrid", "NonLive"]
    assert fields["candidates"][0]["converges"] is False
    assert fields["downtimeMs"] < 100


def test_the_expected_bytes_of_the_hybrid_are_its_first_pass_and_its_hot_set() -> None:
    plan = plans.make(requested=Mode.AUTO, policy=Policy(
        on_timeout=OnTimeout.SUSPEND, over_downtime_budget=OverBudget.LEAST_DOWNTIME), measured=BUSY)
    expected = plan.expectation(plan.execution(Policy()).policy).expected_bytes
    assert expected == pytest.approx((96 + 48) * MIB, rel=0.05)


# ---- the dirty-rate readings --------------------------------------------------------------

def test_two_periods_reveal_a_hot_set_rewritten_faster_than_the_long_period() -> None:
    # 48 MiB at 48 MiB/s reads 49 over 1 s but only 16 over 3 s: 48 MiB seen whole.
    rate = dirtyrate.interpret((Reading(1, 49 * MIB), Reading(3, 16 * MIB)), memory_bytes=128 * MIB)
    assert rate.hot_set_known and rate.hot_set_bytes == 48 * MIB and rate.bytes_per_s == 49 * MIB


def test_consistent_periods_give_the_rate_and_only_a_least_hot_set() -> None:
    rate = dirtyrate.interpret((Reading(1, 14 * MIB), Reading(3, 15 * MIB)), memory_bytes=128 * MIB)
    assert not rate.hot_set_known and rate.bytes_per_s == 15 * MIB and rate.hot_set_bytes == 45 * MIB


def test_a_long_third_period_shows_a_hot_set_that_two_short_ones_read_alike() -> None:
    # Recorded: 96 MiB rewritten at 12 MiB/s in a 256 MiB guest read 8, 12, then 6.4 MiB/s.
    # The 3 s reading refines the 1 s one; against it the 15 s one has seen all 96 MiB.
    rate = dirtyrate.interpret((Reading(1, 8 * MIB), Reading(3, 12 * MIB), Reading(15, 6.4 * MIB)),
                               memory_bytes=256 * MIB)
    assert rate.hot_set_known and rate.bytes_per_s == 12 * MIB
    assert rate.hot_set_bytes == pytest.approx(96 * MIB, rel=0.01)


def test_a_quiet_reading_of_a_small_guest_is_not_taken_for_silence() -> None:
    rate = dirtyrate.interpret((Reading(1, 0),), memory_bytes=128 * MIB)
    # 64 sampled pages of 2 MiB each: three unseen pages are 6 MiB/s that 1 s cannot rule out.
    assert rate.bytes_per_s == 0 and rate.high_bytes_per_s == pytest.approx(6 * MIB)
    # Against an 8 MiB/s link that matters: measure longer. Against 1 GiB/s it does not.
    assert dirtyrate.needs_longer_period(rate, link_bytes_per_s=8 * MIB)
    assert not dirtyrate.needs_longer_period(rate, link_bytes_per_s=1024 * MIB)


def test_more_memory_means_more_samples_and_a_finer_reading() -> None:
    assert dirtyrate.sampled_pages(128 * MIB) == 64 and dirtyrate.sampled_pages(4096 * MIB) == 2048
    assert dirtyrate.resolution(128 * MIB, 3.0) == pytest.approx(2 * MIB / 3)
