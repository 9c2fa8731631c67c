"""The policy after decide(): what each action and each outcome writes, posts and does."""

from __future__ import annotations

import pytest

from vmmigration.core import effects as fx
from vmmigration.core import reconcile
from vmmigration.core.location import Aftermath, Location
from vmmigration.core.memory import Condition, Memory, timestamp
from vmmigration.core.model import EffectiveMode, HostReport, MigrationResult, PowerState
from vmmigration.core.reasons import Reason
from vmmigration.core.scheduling import HypervisorView
from vmmigration.core.spec import Desired, HypervisorSpec, Phase

from .conftest import domain

PINNED = Desired(domain="web-01", target="kvm-b")
VIEWS = {name: HypervisorView(spec=HypervisorSpec(name=name, uri=f"test:///{name}"))
         for name in ("kvm-a", "kvm-b")}
NOW = 1_767_225_600.0
RETRY = fx.Retry(base_seconds=10, cap_seconds=300)
BLOCKED = Condition("Blocked", True, "HostInMaintenance", "target kvm-b is in maintenance")
DRIFTED = Condition("Drifted", True, "NotOnTarget", "runs on kvm-a")


def plan(action: reconcile.Action, memory: Memory = Memory(), *, admission: str | None = None,
         looked_again: bool = True) -> fx.Effects:
    return fx.plan(action, desired=PINNED, memory=memory, hypervisors=VIEWS, admission=admission,
                   looked_again=looked_again)


def kinds(effects: fx.Effects) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.status, c.reason) for c in effects.conditions}


def test_a_migration_admitted_takes_a_slot_validates_and_counts_the_attempt() -> None:
    effects = plan(reconcile.Migrate("kvm-a", "kvm-b"), Memory(phase=Phase.FAILED, attempts=2))
    assert effects.phase is Phase.VALIDATING and effects.queued is False
    assert effects.command == fx.Validate(source="kvm-a", target="kvm-b", attempts=3)
    assert kinds(effects) == {"Progressing": (True, "Validating"), "Ready": (False, "Validating")}
    assert effects.events == ()


@pytest.mark.parametrize("memory", [
    pytest.param(Memory(phase=Phase.PLACED, attempts=5), id="placed"),
    pytest.param(Memory(phase=Phase.FAILED, attempts=5, drifted=DRIFTED), id="drifted"),
])
def test_moving_a_placed_vm_back_counts_attempts_afresh(memory: Memory) -> None:
    effects = plan(reconcile.Migrate("kvm-a", "kvm-b", drift=True), memory)
    assert isinstance(effects.command, fx.Validate) and effects.command.attempts == 1
    assert effects.drifted is True
    assert [e.reason for e in effects.events] == ["DriftDetected"]


def test_a_migration_without_a_free_slot_is_queued_and_starts_nothing() -> None:
    effects = plan(reconcile.Migrate("kvm-a", "kvm-b"), admission="4 migrations are in flight")
    assert effects.phase is Phase.PENDING and effects.queued is True and effects.command is None
    assert kinds(effects) == {"Queued": (True, "ConcurrencyLimit"), "Ready": (False, "Queued")}


@pytest.mark.parametrize(("memory", "events"), [
    pytest.param(Memory(), ["Blocked"], id="newly-blocked-posts-an-event"),
    pytest.param(Memory(blocked=BLOCKED), [], id="still-blocked-for-the-same-reason-posts-none"),
    pytest.param(Memory(blocked=Condition("Blocked", True, "TargetUnreachable", "")), ["Blocked"],
                 id="blocked-for-another-reason-posts-again"),
])
def test_a_block_posts_its_event_once_per_reason(memory: Memory, events: list[str]) -> None:
    effects = plan(reconcile.Block(Reason.HOST_IN_MAINTENANCE, "in maintenance", "kvm-a"), memory)
    assert [e.reason for e in effects.events] == events
    assert kinds(effects)["Blocked"] == (True, "HostInMaintenance")


@pytest.mark.parametrize(("remembered", "phase"), [
    pytest.param(None, Phase.PENDING, id="nothing-remembered-is-pending"),
    pytest.param(Phase.PLACED, Phase.PLACED, id="placed-stays-placed"),
    pytest.param(Phase.FAILED, Phase.FAILED, id="failed-stays-failed"),
    pytest.param(Phase.ABORTED, Phase.PENDING, id="aborted-becomes-pending"),
])
def test_a_block_or_a_wait_carries_the_remembered_phase_over(remembered: Phase | None,
                                                              phase: Phase) -> None:
    memory = Memory(phase=remembered)
    assert plan(reconcile.Block(Reason.CONFLICT, "older claim"), memory).phase is phase
    assert plan(reconcile.Wait(Reason.BACKOFF, "retrying in 9 s"), memory).phase is phase


def test_waiting_keeps_why_it_was_blocked_and_that_it_drifted() -> None:
    effects = plan(reconcile.Wait(Reason.BACKOFF, "retrying in 9 s"),
                   Memory(phase=Phase.FAILED, blocked=BLOCKED, drifted=DRIFTED))
    assert BLOCKED in effects.conditions and DRIFTED in effects.conditions
    assert kinds(effects)["Ready"] == (False, "Backoff")


@pytest.mark.parametrize("reason", [Reason.RUNNING_TWICE, Reason.DEFINED_TWICE, Reason.DOMAIN_NOT_FOUND])
def test_a_block_that_probe_skew_can_fake_is_looked_at_again_before_it_is_written(reason: Reason) -> None:
    first = plan(reconcile.Block(reason, "seen twice"), looked_again=False)
    assert first.phase is None and isinstance(first.command, fx.LookAgain)
    again = plan(reconcile.Block(reason, "seen twice"), looked_again=True)
    assert again.phase is Phase.PENDING and again.command is None


def test_a_block_that_skew_cannot_fake_is_written_at_once() -> None:
    effects = plan(reconcile.Block(Reason.CONFLICT, "older claim"), looked_again=False)
    assert effects.phase is Phase.PENDING and effects.command is None


def test_an_abort_leaves_the_queue_and_clears_the_failed_flag() -> None:
    effects = plan(reconcile.Abort("kvm-a"), Memory(phase=Phase.FAILED))
    assert effects.phase is Phase.ABORTED and effects.queued is False and effects.failed is False
    assert effects.idle


def test_reported_drift_posts_its_event_only_when_it_starts() -> None:
    drift = reconcile.ReportDrift(current="kvm-a", target="kvm-b")
    assert [e.reason for e in plan(drift).events] == ["DriftDetected"]
    assert plan(drift, Memory(drifted=DRIFTED)).events == ()
    assert plan(drift).drifted is True


def test_recovering_an_attempt_adopts_it_with_the_remembered_count() -> None:
    effects = plan(reconcile.Recover("kvm-a", "kvm-b"), Memory(phase=Phase.MIGRATING, attempts=4))
    assert effects.phase is None
    assert effects.command == fx.Start(source="kvm-a", target="kvm-b", attempts=4, adopt=True)
    unknown = fx.plan(reconcile.Recover("kvm-a", "kvm-gone"), desired=PINNED, memory=Memory(),
                      hypervisors=VIEWS, admission=None, looked_again=True)
    assert unknown.phase is Phase.MIGRATING and unknown.command is None


def test_the_attempt_is_recorded_before_the_migration_starts() -> None:
    effects = fx.checked(domain="web-01", source="kvm-a", target="kvm-b", attempts=2, now=NOW)
    assert effects.fields["attempt"] == {"source": "kvm-a", "target": "kvm-b",
                                         "startTime": timestamp(NOW)}
    assert effects.command == fx.Start(source="kvm-a", target="kvm-b", attempts=2)
    assert [e.reason for e in effects.events] == ["MigrationStarted"]


@pytest.mark.parametrize(("attempts", "delay"), [(1, 10), (2, 20), (4, 80), (9, 300)])
def test_a_failure_backs_off_exponentially_and_re_probes_both_hosts(attempts: int, delay: float) -> None:
    effects = fx.failed(source="kvm-a", target="kvm-b", attempts=attempts, reason=Reason.TIMED_OUT,
                        message="did not converge", current="kvm-a", now=NOW, retry=RETRY)
    assert effects.fields["nextAttemptTime"] == timestamp(NOW + delay)
    assert effects.fields["lastFailure"]["reason"] == "TimedOut"
    assert effects.reprobe == ("kvm-a", "kvm-b") and effects.failed is True
    assert [e.reason for e in effects.events] == ["MigrationFailed"]


@pytest.mark.parametrize(("selector", "avoid"), [(True, ("kvm-b", "CpuIncompatible")), (False, None)])
def test_a_refused_pre_check_blocks_without_counting_an_attempt(selector: bool,
                                                               avoid: tuple[str, str] | None) -> None:
    effects = fx.refused(selector=selector, source="kvm-a", target="kvm-b", attempts=3,
                         reason="CpuIncompatible", message="no", now=NOW, retry=RETRY,
                         hold_seconds=300)
    assert effects.fields["attempts"] == 2 and effects.avoid == avoid
    assert kinds(effects)["Blocked"] == (True, "CpuIncompatible")
    assert [e.reason for e in effects.events] == ["Blocked"]


def test_a_success_places_the_vm_and_clears_both_flags() -> None:
    result = MigrationResult(domain="web-01", mode=EffectiveMode.LIVE, duration_seconds=2.5,
                             downtime_ms=40, bytes_transferred=10, final=None)
    effects = fx.succeeded(domain="web-01", source="kvm-a", target="kvm-b", result=result, now=NOW)
    assert effects.phase is Phase.PLACED and effects.failed is False and effects.drifted is False
    assert effects.fields["attempt"] is None and effects.fields["downtimeMs"] == 40


@pytest.mark.parametrize(("location", "current"), [(Location.SOURCE, "kvm-a"), (Location.TARGET, "kvm-b")])
def test_a_cancelled_migration_says_where_the_vm_stayed(location: Location, current: str) -> None:
    effects = fx.cancelled(source="kvm-a", target="kvm-b", location=location, message="aborted",
                           now=NOW)
    assert effects.phase is Phase.ABORTED and effects.fields["currentHypervisor"] == current


@pytest.mark.parametrize(("location", "reason"), [
    (Location.SPLIT_POST_COPY, "LocationSplitPostCopy"), (Location.BOTH, "LocationBoth"),
    (Location.NOWHERE, "LocationNowhere")])
def test_a_restart_that_finds_the_vm_misplaced_asks_for_a_human(location: Location, reason: str) -> None:
    effects = fx.misplaced(domain="web-01", source="kvm-a", target="kvm-b", attempts=1,
                           location=location, now=NOW, retry=RETRY)
    assert effects.fields["lastFailure"]["reason"] == reason and "by hand" in effects.fields[
        "lastFailure"]["message"]


def test_an_unreadable_host_after_a_restart_is_named_without_its_query() -> None:
    effects = fx.unreadable(("qemu+tls://kvm-a/system?pkipath=/run/creds/kvm-a",))
    assert "pkipath" not in effects.conditions[0].message and "kvm-a" in effects.conditions[0].message


def test_messages_are_cut_to_the_limit_everywhere_they_are_shown() -> None:
    effects = fx.failed(source="kvm-a", target="kvm-b", attempts=1, reason=Reason.MIGRATION_FAILED,
                        message="x" * 5000, current="kvm-a", now=NOW, retry=RETRY)
    assert len(effects.events[0].message) == fx.MESSAGE_LIMIT
    assert len(effects.fields["lastFailure"]["message"]) == fx.MESSAGE_LIMIT
    assert all(len(c.message) <= fx.MESSAGE_LIMIT for c in effects.conditions)


def _found(location: Location, *, unreachable: tuple[str, ...] = ()) -> Aftermath:
    running = domain("web-01")
    return Aftermath(domain="web-01", location=location,
                     source=running if location is Location.SOURCE else None,
                     target=running if location is Location.TARGET else None,
                     job_active=False, job=None, final=None, unreachable=unreachable)


@pytest.mark.parametrize(("found", "phase", "reason"), [
    pytest.param(_found(Location.TARGET), Phase.PLACED, "Placed", id="it-moved-while-no-one-watched"),
    pytest.param(_found(Location.SOURCE), Phase.PENDING, "Interrupted", id="it-stayed-a-fresh-attempt-may-start"),
    pytest.param(_found(Location.SPLIT_POST_COPY), Phase.FAILED, "LocationSplitPostCopy", id="split-needs-a-human"),
    pytest.param(_found(Location.SOURCE, unreachable=("qemu+tls://kvm-b/system",)), Phase.MIGRATING,
                 "Recovering", id="a-host-unreadable-keeps-it-migrating"),
])
def test_an_attempt_that_ended_unwatched_is_settled_by_where_libvirt_has_the_vm(
        found: Aftermath, phase: Phase, reason: str) -> None:
    effects = fx.unwatched(found, source="kvm-a", target="kvm-b", attempts=1, now=NOW, retry=RETRY)
    assert effects.phase is phase
    assert reason in {c.reason for c in effects.conditions}
    assert (fx.found_after_restart(found) is not None) == (phase is Phase.PLACED)


def with_domain(state: PowerState | None, *, reachable: bool = True) -> dict[str, HypervisorView]:
    found = () if state is None else (domain("web-01", state=state),)
    return {"kvm-a": HypervisorView(spec=HypervisorSpec(name="kvm-a", uri="test:///a"),
                                    report=HostReport(reachable=reachable, probed_at=0.0,
                                                      domains=found if reachable else ())),
            "kvm-b": HypervisorView(spec=HypervisorSpec(name="kvm-b", uri="test:///b"),
                                    report=HostReport(reachable=True, probed_at=0.0))}


@pytest.mark.parametrize(("state", "reachable", "written"), [
    pytest.param(PowerState.RUNNING, True, "Running", id="running"),
    pytest.param(PowerState.SHUT_OFF, True, "ShutOff", id="stopped-behind-our-back"),
    pytest.param(None, True, None, id="undefined-everywhere-removes-it"),
    pytest.param(None, False, "keep", id="a-host-unseen-keeps-what-the-status-says"),
])
def test_every_status_written_says_the_domains_power_state(state: PowerState | None,
                                                          reachable: bool, written: str | None) -> None:
    effects = fx.plan(reconcile.Placed("kvm-a"), desired=PINNED, memory=Memory(),
                      hypervisors=with_domain(state, reachable=reachable), admission=None,
                      looked_again=True)
    if written == "keep":
        assert "domainState" not in effects.fields
    else:
        assert effects.fields["domainState"] == written
