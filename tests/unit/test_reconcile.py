"""What the operator does next for one VMMigration: the reconcile rules as tables."""

from __future__ import annotations

import pytest

from vmmigration.core.spec import (
    Desired,
    DrainPolicy,
    DriftAction,
    HypervisorSpec,
    Phase,
    PlacementMode,
    Selector,
)
from vmmigration.core.model import GIB, MIB, HostReport, JobDirection, PauseReason, PowerState
from vmmigration.core.memory import Attempt, Condition, Memory
from vmmigration.core.reconcile import (
    Abort,
    Action,
    Block,
    Displaced,
    Idle,
    Migrate,
    Placed,
    Recover,
    ReportDrift,
    Wait,
    backoff_seconds,
    decide,
)
from vmmigration.core.scheduling import Claim, HypervisorView, InFlight

from .conftest import domain

ZONE = Selector(match_labels=(("zone", "lab"),))


def host(name: str, *domains: str, reachable: bool = True, maintenance: bool = False,
         labels: dict[str, str] | None = None, free_mib: int = 4096, paused: str = "",
         probed: bool = True, split: str = "", exclude: tuple[str, ...] = (),
         leaving: str = "") -> HypervisorView:
    """``paused``: an incoming migration's copy; ``leaving``: the VM paused on the sending end."""
    found = [domain(d) for d in domains]
    if split:  # the source half of a post-copy whose link failed
        found.append(domain(split, state=PowerState.PAUSED, reason=PauseReason.POST_COPY_FAILED))
    if paused:
        found.append(domain(paused, state=PowerState.PAUSED, reason=PauseReason.MIGRATION,
                            job=JobDirection.INCOMING))
    if leaving:
        found.append(domain(leaving, state=PowerState.PAUSED, reason=PauseReason.MIGRATION,
                            job=JobDirection.OUTGOING))
    report = HostReport(reachable=reachable, probed_at=0.0, memory_free_bytes=free_mib * MIB,
                        memory_total_bytes=8 * GIB, domains=tuple(found),
                        error="" if reachable else "connection refused")
    spec = HypervisorSpec(name=name, uri=f"qemu+tcp://{name}/system",
                          labels=tuple(sorted((labels or {"zone": "lab"}).items())),
                          maintenance=maintenance, drain=DrainPolicy(exclude=frozenset(exclude)))
    return HypervisorView(spec=spec, report=report if probed else None)


def hosts(*views: HypervisorView) -> dict[str, HypervisorView]:
    return {v.spec.name: v for v in views}


def run(desired: Desired, views: dict[str, HypervisorView], memory: Memory = Memory(),
        claims: tuple[Claim, ...] = (), in_flight: tuple[InFlight, ...] = (),
        now: float = 1000.0, avoid: dict[str, str] | None = None, hint: str | None = None) -> Action:
    return decide(key="default/web", created="2026-01-01T00:00:00Z", desired=desired,
                  memory=memory, hypervisors=views, claims=claims, in_flight=in_flight, now=now,
                  avoid=avoid, hint=hint)


PINNED = Desired(domain="web-01", target="b")
DRIFTED = Condition("Drifted", True, "NotOnTarget", "runs elsewhere")
SELECTED = Desired(domain="web-01", selector=ZONE)


@pytest.mark.parametrize(("desired", "views", "memory", "expected"), [
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b")), Memory(),
                 Migrate(source="a", target="b"), id="pinned-target-elsewhere-migrates"),
    pytest.param(PINNED, hosts(host("a"), host("b", "web-01")), Memory(),
                 Placed("b"), id="already-on-target-is-placed-without-migrating"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b", maintenance=True)), Memory(),
                 Block("HostInMaintenance", "", "a"), id="pinned-to-host-in-maintenance-is-blocked"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b", reachable=False)), Memory(),
                 Block("TargetUnreachable", "", "a"), id="unreachable-target-is-blocked"),
    pytest.param(Desired(domain="web-01", target="zz"), hosts(host("a", "web-01")), Memory(),
                 Block("UnknownHypervisor", "", "a"), id="unknown-target-is-blocked"),
    pytest.param(PINNED, hosts(host("a"), host("b")), Memory(),
                 Block("DomainNotFound", ""), id="domain-nowhere-is-blocked"),
    pytest.param(PINNED, hosts(host("a", probed=False), host("b")), Memory(),
                 Wait("InventoryIncomplete", ""), id="unprobed-host-means-wait-not-block"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b", "web-01")), Memory(),
                 Block("RunningTwice", ""), id="running-twice-is-never-touched"),
    pytest.param(PINNED, hosts(host("a", split="web-01"), host("b", "web-01")), Memory(),
                 Block("LocationSplitPostCopy", ""), id="split-post-copy-is-not-running-twice"),
    pytest.param(PINNED, hosts(host("a"), host("b", paused="web-01")), Memory(),
                 Wait("MigrationInProgress", ""), id="incoming-copy-only-means-wait"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("c", paused="web-01"), host("b")),
                 Memory(phase=Phase.PLACED), Wait("MigratingOutside", ""),
                 id="someone-elses-migration-is-waited-out-not-raced"),
    pytest.param(PINNED, hosts(host("a", leaving="web-01"), host("b", paused="web-01")),
                 Memory(phase=Phase.PLACED), Wait("MigratingOutside", ""),
                 id="both-copies-paused-at-an-outside-switch-over-is-one-vm-moving"),
    pytest.param(PINNED, hosts(host("a", leaving="web-01"), host("c", "web-01"), host("b")),
                 Memory(phase=Phase.PLACED), Wait("MigratingOutside", ""),
                 id="a-target-running-while-its-source-waits-to-be-reaped-is-one-vm-moving"),
    pytest.param(PINNED, hosts(host("a", leaving="web-01"), host("b")), Memory(),
                 Migrate(source="a", target="b"),
                 id="a-vm-paused-on-the-sending-end-with-no-other-end-is-where-it-is"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b")),
                 Memory(phase=Phase.PLACED, chosen_target="a"),
                 Migrate(source="a", target="b", why="the spec now asks for b"),
                 id="a-changed-target-is-followed-and-that-is-no-drift"),
    pytest.param(Desired(domain="web-01", target="b", drift_action=DriftAction.REPORT),
                 hosts(host("a", "web-01"), host("b")), Memory(phase=Phase.PLACED, chosen_target="a"),
                 Migrate(source="a", target="b", why="the spec now asks for b"),
                 id="a-changed-target-is-followed-even-when-drift-is-only-reported"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b")),
                 Memory(phase=Phase.PLACED, chosen_target="b"),
                 Migrate(source="a", target="b", drift=True),
                 id="a-vm-moved-away-from-where-it-was-placed-has-drifted"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b")),
                 Memory(phase=Phase.MIGRATING, attempt=Attempt("a", "b")),
                 Recover(source="a", target="b"), id="remembered-attempt-is-recovered-first"),
    pytest.param(Desired(domain="web-01", target="b", abort=True), hosts(host("a", "web-01"), host("b")),
                 Memory(), Abort("a"), id="abort-before-moving"),
    pytest.param(Desired(domain="web-01", target="b", abort=True), hosts(host("a"), host("b", "web-01")),
                 Memory(), Placed("b"), id="abort-after-arrival-leaves-it-placed"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b")), Memory(phase=Phase.PLACED),
                 Migrate(source="a", target="b", drift=True), id="drift-is-corrected"),
    pytest.param(Desired(domain="web-01", target="b", drift_action=DriftAction.REPORT),
                 hosts(host("a", "web-01"), host("b")), Memory(phase=Phase.PLACED),
                 ReportDrift(current="a", target="b"), id="drift-is-only-reported"),
    pytest.param(Desired(domain="web-01", target="b", placement=PlacementMode.ONCE),
                 hosts(host("a", "web-01"), host("b")), Memory(phase=Phase.PLACED),
                 Idle(), id="once-placed-stops-watching"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b")),
                 Memory(phase=Phase.FAILED, next_attempt_at=2000.0, attempts=1),
                 Wait("Backoff", ""), id="failure-backs-off"),
    pytest.param(PINNED, hosts(host("a", "web-01"), host("b")),
                 Memory(phase=Phase.FAILED, next_attempt_at=500.0, attempts=1),
                 Migrate(source="a", target="b"), id="retries-after-backoff"),
    pytest.param(Desired(domain="web-01", target="b", source="c"),
                 hosts(host("a", "web-01"), host("b"), host("c")), Memory(),
                 Block("NotOnSource", "", "a"), id="source-hint-must-hold"),
    pytest.param(SELECTED, hosts(host("a", "web-01", labels={"zone": "other"}), host("b"), host("c", "x", "y")),
                 Memory(), Migrate(source="a", target="b"), id="selector-picks-least-loaded"),
    pytest.param(SELECTED, hosts(host("a", "web-01"), host("b")), Memory(),
                 Placed("a"), id="selector-already-satisfied"),
    pytest.param(SELECTED, hosts(host("a", "web-01", maintenance=True), host("b")), Memory(phase=Phase.PLACED),
                 Migrate(source="a", target="b", why="a is in maintenance"),
                 id="maintenance-moves-selected-vms-off-and-that-is-no-drift"),
    pytest.param(SELECTED, hosts(host("a", "web-01", labels={"zone": "x"}), host("b", free_mib=64),
                                 host("c", reachable=False), host("d", maintenance=True)),
                 Memory(), Block("NoEligibleTarget", "", "a"), id="selector-with-no-eligible-host"),
])
def test_decide_picks_the_next_action(desired: Desired, views: dict[str, HypervisorView],
                                      memory: Memory, expected: Action) -> None:
    action = run(desired, views, memory)
    assert type(action) is type(expected)
    if isinstance(expected, (Block, Wait)):
        assert isinstance(action, (Block, Wait))
        assert action.reason == expected.reason, action.message
        assert action.message
    else:
        assert action == expected


def test_the_younger_of_two_claims_on_one_domain_is_blocked_with_conflict() -> None:
    older = Claim(key="default/first", domain="web-01", created="2025-12-31T00:00:00Z")
    action = run(PINNED, hosts(host("a", "web-01"), host("b")), claims=(older,))
    assert isinstance(action, Block) and action.reason == "Conflict"
    assert "default/first" in action.message


def test_the_older_claim_proceeds_despite_a_younger_rival() -> None:
    younger = Claim(key="default/second", domain="web-01", created="2026-02-01T00:00:00Z")
    assert run(PINNED, hosts(host("a", "web-01"), host("b")), claims=(younger,)) == Migrate("a", "b")


def test_a_selector_keeps_its_earlier_choice_while_it_stays_eligible() -> None:
    views = hosts(host("a", "web-01", labels={"zone": "x"}), host("b", "busy"), host("c"))
    assert run(SELECTED, views, Memory(chosen_target="b")) == Migrate("a", "b")
    assert run(SELECTED, views, Memory()) == Migrate("a", "c")


def test_a_selector_counts_incoming_migrations_as_load() -> None:
    views = hosts(host("a", "web-01", labels={"zone": "x"}), host("b"), host("c", "one"))
    busy = (InFlight(key="x/y", source="q", target="b"), InFlight(key="x/z", source="q", target="b"))
    assert run(SELECTED, views, in_flight=busy) == Migrate("a", "c")


@pytest.mark.parametrize(("failures", "seconds"), [(1, 10), (2, 20), (3, 40), (6, 300), (40, 300)])
def test_backoff_doubles_up_to_its_cap(failures: int, seconds: float) -> None:
    assert backoff_seconds(failures=failures, base=10, cap=300) == seconds


def test_a_selector_skips_a_host_that_refused_the_vm_and_does_not_wait_to_try_another() -> None:
    views = hosts(host("a", "web-01", labels={"zone": "x"}), host("b"), host("c", "busy"))
    refused = Memory(phase=Phase.FAILED, chosen_target="b", next_attempt_at=2000.0, attempts=0)
    assert run(SELECTED, views, refused, avoid={"b": "CpuIncompatible"}) == Migrate("a", "c")


def test_when_every_candidate_refused_the_block_says_why_each_did() -> None:
    views = hosts(host("a", "web-01", labels={"zone": "x"}), host("b"))
    action = run(SELECTED, views, Memory(), avoid={"b": "CpuIncompatible"})
    assert isinstance(action, Block) and action.reason == "NoEligibleTarget"
    assert "b refused it (CpuIncompatible)" in action.message


# ---- maintenance: displacement, exclusion, placement Once, rebalancing hints ----------

PLACED = Memory(phase=Phase.PLACED)
POOL_A = {"zone": "lab", "vmmigration.dev/pool": "a"}
POOL_B = {"zone": "lab", "vmmigration.dev/pool": "b"}


def test_a_vm_pinned_to_a_host_in_maintenance_is_displaced_to_another_host_of_its_pool() -> None:
    views = hosts(host("b", "web-01", maintenance=True, labels=POOL_A), host("c", labels=POOL_B),
                  host("d", labels=POOL_A))
    action = run(PINNED, views, PLACED)
    assert isinstance(action, Migrate) and (action.source, action.target) == ("b", "d")
    assert not action.drift and "maintenance" in action.why


def test_a_displaced_vm_stays_put_while_its_host_is_in_maintenance_and_says_why() -> None:
    views = hosts(host("b", maintenance=True), host("d", "web-01"))
    assert run(PINNED, views, PLACED) == Displaced(current="d", home="b")
    assert run(PINNED, views, Memory(phase=Phase.DISPLACED)) == Displaced(current="d", home="b")


def test_a_displaced_vm_goes_home_when_the_maintenance_ends_and_it_is_no_drift() -> None:
    views = hosts(host("b"), host("d", "web-01"))
    action = run(PINNED, views, Memory(phase=Phase.DISPLACED))
    assert action == Migrate(source="d", target="b")


def test_a_displaced_vm_whose_user_chose_another_host_goes_there_instead() -> None:
    views = hosts(host("b", maintenance=True), host("c"), host("d", "web-01"))
    action = run(Desired(domain="web-01", target="c"), views, Memory(phase=Phase.DISPLACED))
    assert isinstance(action, Migrate) and action.target == "c"


def test_a_vm_never_placed_on_a_host_in_maintenance_is_blocked_not_displaced() -> None:
    views = hosts(host("b", maintenance=True), host("d", "web-01"))
    action = run(PINNED, views, Memory())
    assert isinstance(action, Block) and action.reason == "HostInMaintenance"


def test_a_pinned_vm_with_nowhere_to_go_in_its_pool_blocks_the_drain_with_the_reason() -> None:
    views = hosts(host("b", "web-01", maintenance=True, labels=POOL_A), host("c", labels=POOL_B))
    action = run(PINNED, views, PLACED)
    assert isinstance(action, Block) and action.reason == "NoEligibleTarget"
    assert "pool a" in action.message


def test_an_excluded_domain_stays_on_its_host_in_maintenance() -> None:
    pinned = hosts(host("b", "web-01", maintenance=True, exclude=("web-01",)), host("d"))
    assert run(PINNED, pinned, PLACED) == Placed("b")
    selected = hosts(host("a", "web-01", maintenance=True, exclude=("web-01",)), host("b"))
    assert run(SELECTED, selected, PLACED) == Placed("a")


def test_a_vm_placed_once_is_left_alone_unless_its_host_enters_maintenance() -> None:
    once = Desired(domain="web-01", selector=ZONE, placement=PlacementMode.ONCE)
    assert run(once, hosts(host("a", "web-01"), host("b", maintenance=True)), PLACED) == Idle()
    action = run(once, hosts(host("a", "web-01", maintenance=True), host("b")), PLACED)
    assert isinstance(action, Migrate) and action.target == "b"


def test_a_vm_pinned_once_and_displaced_still_comes_home() -> None:
    once = Desired(domain="web-01", target="b", placement=PlacementMode.ONCE)
    views = hosts(host("b", maintenance=True), host("d", "web-01"))
    assert run(once, views, PLACED) == Displaced(current="d", home="b")
    back = run(once, hosts(host("b"), host("d", "web-01")), Memory(phase=Phase.DISPLACED))
    assert back == Migrate(source="d", target="b")


def test_a_rebalancing_hint_moves_a_selected_vm_to_that_host_and_no_other() -> None:
    views = hosts(host("a", "web-01"), host("b"), host("c"))
    action = run(SELECTED, views, PLACED, hint="c")
    assert isinstance(action, Migrate) and action.target == "c" and not action.drift
    assert run(SELECTED, views, PLACED, hint="a") == Placed("a"), "already there"
    ineligible = hosts(host("a", "web-01"), host("c", maintenance=True))
    assert run(SELECTED, ineligible, PLACED, hint="c") == Placed("a")
    assert run(SELECTED, hosts(host("a", "web-01"), host("c", labels={"zone": "x"})), PLACED,
               hint="c") == Placed("a"), "a hint never overrides the selector"


def test_a_once_placed_vmmigration_left_not_ready_by_a_passing_block_looks_once_more() -> None:
    # Found by the nemesis: an offline carry seen defined on both hosts for a moment
    # wrote Blocked (DefinedTwice) with the phase still Placed, and Once then idled on it
    # forever. The next look writes the truth; only a Ready status idles.
    once = Desired(domain="web-01", target="b", placement=PlacementMode.ONCE)
    views = hosts(host("a"), host("b", "web-01"))
    stale = Memory(phase=Phase.PLACED, ready=False,
                   blocked=Condition("Blocked", True, "DefinedTwice", "defined on a and b"))
    assert run(once, views, stale) == Placed("b")
    assert run(once, views, Memory(phase=Phase.PLACED)) == Idle()
