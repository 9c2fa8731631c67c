"""Rebalancing a pool: the plan, its safety rules, the HypervisorPool's spec and status, the hint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pytest

from vmmigration.core.memory import timestamp
from vmmigration.core.model import GIB, MIB, DomainSummary, HostReport, PauseReason, PowerState
from vmmigration.core.rebalance import (
    REBALANCE_ANNOTATION,
    HostLoad,
    Movable,
    RebalancePlan,
    RebalancePolicy,
    hint_value,
    loads,
    parse_hint,
    parse_pool,
    plan_rebalance,
    pool_status,
    recent_moves_from,
)
from vmmigration.core.scheduling import HypervisorView
from vmmigration.core.spec import HypervisorSpec, LabelRequirement, Selector, SpecError

NOW = 1_800_000_000.0
POOL = (("vmmigration.dev/pool", "lab"),)
ANYWHERE = Selector(match_labels=POOL)
ON = RebalancePolicy(enabled=True)


def host(name: str, used_gib: float, *, capacity_gib: float = 8, vms: int = 1,
         labels: tuple[tuple[str, str], ...] = POOL, eligible: bool = True) -> HostLoad:
    return HostLoad(name=name, used_bytes=int(used_gib * GIB), capacity_bytes=int(capacity_gib * GIB),
                    vms=vms, eligible=eligible, labels=labels)


def vms(on: str, count: int, *, gib: float = 1, selector: Selector = ANYWHERE,
        moved_at: float | None = None, prefix: str = "") -> list[Movable]:
    return [Movable(key=f"default/{prefix}{on}-{i}", domain=f"{prefix}{on}-{i}", host=on,
                    memory_bytes=int(gib * GIB), selector=selector, last_moved_at=moved_at)
            for i in range(count)]


def plan(hosts: Sequence[HostLoad], movable: Sequence[Movable], *, policy: RebalancePolicy = ON,
         recent: Sequence[float] = (), draining: bool = False, busy: bool = False) -> RebalancePlan:
    return plan_rebalance(policy=policy, hosts=hosts, movable=movable, recent_moves=recent, now=NOW,
                          draining=draining, busy=busy)


def carried_out(hosts: Sequence[HostLoad], movable: Sequence[Movable],
                result: RebalancePlan) -> tuple[list[HostLoad], list[Movable]]:
    """The pool once the plan's moves are done, and a probe has seen it."""
    by_key = {m.key: m for m in result.moves}
    used = {h.name: h.used_bytes for h in hosts}
    for move in result.moves:
        used[move.source] -= move.memory_bytes
        used[move.target] += move.memory_bytes
    after_hosts = [dataclasses.replace(h, used_bytes=used[h.name]) for h in hosts]
    # Even with no cooldown at all, nothing may move back.
    after_vms = [dataclasses.replace(vm, host=by_key[vm.key].target) if vm.key in by_key else vm
                 for vm in movable]
    return after_hosts, after_vms


# An imbalanced pool: kvm-a 75 %, kvm-b and kvm-c 25 % (8 GiB each), half-GiB VMs on kvm-a.
IMBALANCED = [host("kvm-a", 6), host("kvm-b", 2), host("kvm-c", 2)]
ON_A = vms("kvm-a", 12, gib=0.5)


# ---------------------------------------------------------------------------
# The plan


@pytest.mark.parametrize("hosts", [
    pytest.param([host("kvm-a", 4), host("kvm-b", 3.2), host("kvm-c", 2.8)], id="spread-15"),
    pytest.param([host("kvm-a", 4.8), host("kvm-b", 3.2)], id="spread-exactly-the-threshold"),
    pytest.param([host("kvm-a", 8), host("kvm-b", 0, eligible=False)], id="one-eligible-host"),
])
def test_a_balanced_pool_is_left_alone(hosts: list[HostLoad]) -> None:
    result = plan(hosts, vms("kvm-a", 4))
    assert result.state == "Balanced" and result.balanced
    assert result.moves == ()
    assert result.spread_after == result.spread_before


def test_an_imbalanced_pool_gets_moves_from_most_to_least_loaded_until_within_target() -> None:
    result = plan(IMBALANCED, ON_A)
    assert result.state == "Rebalancing" and not result.balanced
    assert result.spread_before == 50.0
    assert result.moves, result.why
    assert result.moves[0].source == "kvm-a" and result.moves[0].target in ("kvm-b", "kvm-c")
    assert all(m.source == "kvm-a" for m in result.moves)
    assert result.spread_after <= ON.target_percent
    assert len({m.key for m in result.moves}) == len(result.moves), "a VM moved twice in one plan"
    # Each move lowers the spread (or keeps it while evening the loads), from where the last one left it.
    spreads = [result.spread_before] + [m.spread_after for m in result.moves]
    assert spreads == sorted(spreads, reverse=True)
    assert result.moves[-1].spread_after == result.spread_after
    first = result.moves[0]
    assert first.why == (f"{first.domain} (0.5 GiB): kvm-a 75% → {first.target} 25%, then 68.8% and "
                         f"31.2%: spread 50 → 43.8 points")


def test_a_move_goes_only_where_its_selector_matches_and_it_fits() -> None:
    gpu = Selector(match_labels=(("gpu", "yes"),))
    hosts = [host("kvm-a", 6), host("kvm-b", 2, labels=POOL + (("gpu", "yes"),)),
             host("kvm-c", 0.5, capacity_gib=1)]
    result = plan(hosts, vms("kvm-a", 6, selector=gpu))
    assert result.moves and {m.target for m in result.moves} == {"kvm-b"}


@pytest.mark.parametrize("selector", [
    pytest.param(Selector(match_labels=(("zone", "elsewhere"),)), id="match-labels-no-host-has"),
    pytest.param(Selector(expressions=(LabelRequirement("vmmigration.dev/pool", "NotIn", ("lab",)),)),
                 id="expression-excluding-the-pool"),
])
def test_a_vm_whose_selector_matches_no_other_host_is_never_moved(selector: Selector) -> None:
    result = plan(IMBALANCED, vms("kvm-a", 12, gib=0.5, selector=selector))
    assert result.state == "Imbalanced" and result.moves == ()
    assert "does not match" in result.why


def test_a_pool_with_no_movable_vm_is_reported_imbalanced_with_why() -> None:
    result = plan(IMBALANCED, [])
    assert result.state == "Imbalanced" and result.moves == ()
    assert "no VM on kvm-a may be moved" in result.why


@pytest.mark.parametrize(("moved_ago", "planned"), [
    pytest.param(600.0, False, id="moved-10-minutes-ago"),
    pytest.param(1799.0, False, id="just-inside-the-cooldown"),
    pytest.param(-60.0, False, id="stamp-from-a-clock-ahead"),
    pytest.param(1800.0, True, id="cooldown-over"),
    pytest.param(None, True, id="never-moved"),
])
def test_a_vm_moved_within_the_cooldown_stays(moved_ago: float | None, planned: bool) -> None:
    moved_at = None if moved_ago is None else NOW - moved_ago
    result = plan(IMBALANCED, vms("kvm-a", 12, gib=0.5, moved_at=moved_at))
    assert bool(result.moves) is planned
    if not planned:
        assert result.state == "Imbalanced" and "cooldown" in result.why


def test_a_cooling_vm_is_skipped_and_another_one_moves() -> None:
    cooling = vms("kvm-a", 6, gib=0.5, moved_at=NOW - 60, prefix="hot-")
    result = plan(IMBALANCED, cooling + vms("kvm-a", 6, gib=0.5))
    assert result.moves and not any(m.domain.startswith("hot-") for m in result.moves)


@pytest.mark.parametrize(("recent", "most"), [
    pytest.param([NOW - 60 * i for i in range(6)], 0, id="six-in-the-last-hour"),
    pytest.param([NOW - 60 * i for i in range(4)] + [NOW - 3600, NOW - 7200], 2, id="four-in-the-hour"),
    pytest.param([NOW - 3601] * 10, 6, id="all-older-than-an-hour"),
])
def test_the_hourly_budget_caps_the_moves(recent: list[float], most: int) -> None:
    result = plan(IMBALANCED, ON_A, recent=recent)
    assert len(result.moves) <= most
    if most == 0:
        assert result.state == "Imbalanced" and "budget is spent" in result.why
    else:
        assert result.moves


def test_a_budget_of_one_plans_one_move_and_says_why_it_stopped() -> None:
    result = plan(IMBALANCED, ON_A, policy=RebalancePolicy(enabled=True, max_moves_per_hour=1))
    assert len(result.moves) == 1 and result.state == "Rebalancing"
    assert result.why.endswith("the hourly budget (maxMovesPerHour 1) is spent")


SCENARIOS = {
    "one-hot-host": (IMBALANCED, ON_A),
    "two-hot-two-cold": ([host("kvm-a", 6), host("kvm-b", 6), host("kvm-c", 2), host("kvm-d", 2)],
                         vms("kvm-a", 6) + vms("kvm-b", 6)),
    "big-vms-that-overshoot": ([host("kvm-a", 6), host("kvm-b", 2)], vms("kvm-a", 2, gib=3)),
    "uneven-capacities": ([host("kvm-a", 14, capacity_gib=16), host("kvm-b", 1, capacity_gib=4),
                           host("kvm-c", 2, capacity_gib=8)],
                          vms("kvm-a", 7, gib=2) + vms("kvm-c", 2)),
    "vms-everywhere": ([host("kvm-a", 7), host("kvm-b", 4), host("kvm-c", 1)],
                       vms("kvm-a", 7) + vms("kvm-b", 4) + vms("kvm-c", 1)),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_planning_again_once_the_moves_are_done_moves_nothing(name: str) -> None:
    hosts, movable = SCENARIOS[name]
    first = plan(hosts, movable)
    assert first.state in ("Rebalancing", "Imbalanced", "Balanced")
    again = plan(*carried_out(hosts, movable, first))
    assert again.moves == (), f"ping-pong: {again.moves}"


def test_two_hosts_tied_at_the_top_still_come_down() -> None:
    hosts, movable = SCENARIOS["two-hot-two-cold"]
    result = plan(hosts, movable)
    assert {m.source for m in result.moves} == {"kvm-a", "kvm-b"}
    assert result.spread_after <= ON.target_percent


def test_a_vm_too_big_for_any_gap_is_not_moved_back_and_forth() -> None:
    # Moving the 3 GiB VM turns 75/25 into 37.5/62.5: a lower spread, once; never back.
    hosts, movable = SCENARIOS["big-vms-that-overshoot"]
    result = plan(hosts, movable)
    assert len(result.moves) == 1 and result.spread_after == 25.0
    assert "within the target" not in result.why and "no further move" in result.why


@pytest.mark.parametrize(("draining", "busy", "state"), [
    pytest.param(True, False, "DrainInProgress", id="drain"),
    pytest.param(True, True, "DrainInProgress", id="drain-and-busy"),
    pytest.param(False, True, "Rebalancing", id="earlier-moves-still-running"),
])
def test_nothing_is_planned_during_a_drain_or_while_earlier_moves_run(draining: bool, busy: bool,
                                                                      state: str) -> None:
    result = plan(IMBALANCED, ON_A, draining=draining, busy=busy)
    assert result.state == state and result.moves == ()
    assert result.spread_before == 50.0 and not result.balanced


def test_a_disabled_pool_still_measures_its_spread_but_plans_nothing() -> None:
    result = plan(IMBALANCED, ON_A, policy=RebalancePolicy())
    assert result.state == "Disabled" and result.moves == ()
    assert result.spread_before == 50.0 and not result.balanced
    assert "spread 50 points" in result.why


def test_a_dry_run_plans_exactly_the_same_moves() -> None:
    wet = plan(IMBALANCED, ON_A)
    dry = plan(IMBALANCED, ON_A, policy=dataclasses.replace(ON, dry_run=True))
    assert dry == wet


def test_ineligible_hosts_neither_count_in_the_spread_nor_receive_moves() -> None:
    hosts = [host("kvm-a", 6), host("kvm-b", 4), host("kvm-c", 0, eligible=False)]
    result = plan(hosts, vms("kvm-a", 12, gib=0.5))
    assert result.spread_before == 25.0
    assert {m.target for m in result.moves} == {"kvm-b"}


# ---------------------------------------------------------------------------
# Loads


def report(*domains: DomainSummary, total_gib: int = 8) -> HostReport:
    return HostReport(reachable=True, probed_at=NOW, memory_total_bytes=total_gib * GIB,
                      memory_free_bytes=GIB, domains=domains)


def dom(name: str, mib: int, state: PowerState = PowerState.RUNNING) -> DomainSummary:
    return DomainSummary(name=name, uuid=name, state=state, pause_reason=PauseReason.NONE,
                         memory_bytes=mib * MIB, persistent=True)


def view(name: str, found: HostReport | None, *, maintenance: bool = False,
         capacity: int | None = None) -> HypervisorView:
    return HypervisorView(spec=HypervisorSpec(name=name, uri=f"test:///{name}", labels=POOL,
                                              maintenance=maintenance, capacity_bytes=capacity),
                          report=found)


def test_a_hosts_load_counts_its_active_domains_over_its_capacity() -> None:
    hypervisors = {
        "kvm-a": view("kvm-a", report(dom("a", 2048), dom("b", 1024, PowerState.PAUSED),
                                      dom("off", 4096, PowerState.SHUT_OFF))),
        "kvm-b": view("kvm-b", report(dom("c", 1024)), capacity=2 * GIB),
        "kvm-c": view("kvm-c", report(dom("d", 1024))),
    }
    by_name = {h.name: h for h in loads(hypervisors=hypervisors, capacity={"kvm-c": 4 * GIB})}
    assert (by_name["kvm-a"].used_bytes, by_name["kvm-a"].vms, by_name["kvm-a"].load_percent) == (
        3 * GIB, 2, 37.5)
    assert by_name["kvm-b"].load_percent == 50.0  # the spec's capacity
    assert by_name["kvm-c"].load_percent == 25.0  # the caller's capacity
    assert all(h.eligible and h.labels == POOL for h in by_name.values())


@pytest.mark.parametrize(("hypervisor", "why"), [
    pytest.param(view("kvm-a", None), "not probed yet", id="not-probed"),
    pytest.param(view("kvm-a", HostReport(reachable=False, probed_at=NOW, error="refused")),
                 "unreachable", id="unreachable"),
    pytest.param(view("kvm-a", report(dom("a", 1024)), maintenance=True), "in maintenance",
                 id="maintenance"),
    pytest.param(view("kvm-a", report(total_gib=0)), "reports no memory", id="no-capacity"),
])
def test_a_host_that_cannot_take_part_says_why(hypervisor: HypervisorView, why: str) -> None:
    [load] = loads(hypervisors={"kvm-a": hypervisor}, capacity={})
    assert not load.eligible and why in load.why


# ---------------------------------------------------------------------------
# The spec


def test_a_pool_spec_defaults_to_rebalancing_off() -> None:
    assert parse_pool(name="lab", spec={}).rebalance == RebalancePolicy()
    parsed = parse_pool(name="lab", spec={"rebalance": {
        "enabled": True, "dryRun": True, "thresholdPercent": 30, "targetPercent": 5.5,
        "cooldownSeconds": 60, "maxMovesPerHour": 2}})
    assert parsed.name == "lab"
    assert parsed.rebalance == RebalancePolicy(enabled=True, dry_run=True, threshold_percent=30.0,
                                               target_percent=5.5, cooldown_seconds=60.0,
                                               max_moves_per_hour=2)


@pytest.mark.parametrize(("name", "spec", "message"), [
    pytest.param("lab", {"rebalance": {"targetPercent": 20}}, "spec.rebalance.targetPercent must be below "
                 "thresholdPercent", id="target-equal-to-default-threshold"),
    pytest.param("lab", {"rebalance": {"thresholdPercent": 5}}, "targetPercent must be below thresholdPercent",
                 id="threshold-below-default-target"),
    pytest.param("lab", {"rebalance": {"thresholdPercent": 0, "targetPercent": 0}},
                 "spec.rebalance.thresholdPercent must be above 0", id="zero-threshold"),
    pytest.param("lab", {"rebalance": {"thresholdPercent": 120}}, "spec.rebalance.thresholdPercent",
                 id="threshold-above-100"),
    pytest.param("lab", {"rebalance": {"thresholdPercent": float("nan")}}, "spec.rebalance.thresholdPercent",
                 id="nan-threshold"),
    pytest.param("lab", {"rebalance": {"targetPercent": -1}}, "spec.rebalance.targetPercent", id="negative-target"),
    pytest.param("lab", {"rebalance": {"thresholdPercent": "20"}}, "spec.rebalance.thresholdPercent must be a "
                 "number", id="threshold-as-text"),
    pytest.param("lab", {"rebalance": {"enabled": "yes"}}, "spec.rebalance.enabled must be true or false",
                 id="enabled-as-text"),
    pytest.param("lab", {"rebalance": {"dryRun": 1}}, "spec.rebalance.dryRun", id="dry-run-as-number"),
    pytest.param("lab", {"rebalance": {"cooldownSeconds": -5}}, "spec.rebalance.cooldownSeconds",
                 id="negative-cooldown"),
    pytest.param("lab", {"rebalance": {"maxMovesPerHour": 0}}, "spec.rebalance.maxMovesPerHour",
                 id="no-moves-per-hour"),
    pytest.param("lab", {"rebalance": {"maxMovesPerHour": 2.5}}, "spec.rebalance.maxMovesPerHour must be an "
                 "integer", id="fractional-moves"),
    pytest.param("lab", {"rebalance": {"maxMovesPerHour": True}}, "spec.rebalance.maxMovesPerHour",
                 id="moves-as-bool"),
    pytest.param("lab", {"rebalance": ["enabled"]}, "spec.rebalance must be an object", id="rebalance-a-list"),
    pytest.param("lab", ["rebalance"], "spec must be an object", id="spec-a-list"),
    pytest.param("x" * 64, {}, "metadata.name must be a label value", id="name-too-long-for-a-label"),
])
def test_a_bad_pool_spec_is_refused_with_the_field_named(name: str, spec: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_pool(name=name, spec=spec)


# ---------------------------------------------------------------------------
# The status


def status_of(result: RebalancePlan, previous: dict[str, Any] | None = None, *,
              recent: Sequence[float] = (), now: float = NOW, dry_run: bool = False) -> dict[str, Any]:
    return pool_status(plan=result, previous=previous or {}, recent_moves=recent, now=now,
                       dry_run=dry_run)


def test_the_status_shows_the_spread_the_hosts_and_the_planned_moves() -> None:
    result = plan(IMBALANCED, ON_A)
    status = status_of(result, recent=[NOW])
    [condition] = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("Balanced", "False", "Rebalancing")
    assert condition["lastTransitionTime"] == timestamp(NOW)
    assert status["spreadPercent"] == 50.0
    assert [h["loadPercent"] for h in status["hosts"]] == [75.0, 25.0, 25.0]
    assert status["hosts"][0] == {"name": "kvm-a", "loadPercent": 75.0, "usedBytes": 6 * GIB,
                                  "capacityBytes": 8 * GIB, "vms": 1, "eligible": True}
    first = status["plan"][0]
    assert first["from"] == "kvm-a" and first["loadBefore"] == {"from": 75.0, "to": 25.0}
    assert first["vmmigration"] == result.moves[0].key and first["why"] == result.moves[0].why
    assert status["lastRebalanceTime"] == timestamp(NOW)
    json.dumps(status)  # what the API server gets


def test_recent_moves_round_trip_through_the_status_and_forget_what_is_older_than_an_hour() -> None:
    recent = [NOW - 3000, NOW - 100, NOW - 100, NOW - 3601]
    status = status_of(plan(IMBALANCED, ON_A), recent=recent)
    assert status["recentMoves"] == [timestamp(NOW - 3000), timestamp(NOW - 100), timestamp(NOW - 100)]
    assert recent_moves_from(status, now=NOW) == (NOW - 3000, NOW - 100, NOW - 100)
    assert recent_moves_from(status, now=NOW + 3000) == (NOW - 100, NOW - 100)


@pytest.mark.parametrize("stored", [
    pytest.param({"recentMoves": "2026-12-05T10:00:00Z"}, id="a-string-not-a-list"),
    pytest.param({"recentMoves": [None, 5, "yesterday", {"at": "x"}]}, id="junk-entries"),
    pytest.param({"recentMoves": [timestamp(NOW + 86400)]}, id="a-day-in-the-future"),
    pytest.param({}, id="absent"),
])
def test_hand_edited_recent_moves_count_as_none(stored: dict[str, Any]) -> None:
    assert recent_moves_from(stored, now=NOW) == ()


def test_the_balanced_condition_keeps_its_transition_time_until_its_status_flips() -> None:
    imbalanced = plan(IMBALANCED, ON_A, busy=True)
    first = status_of(imbalanced, now=NOW - 600)
    still = status_of(plan(IMBALANCED, ON_A), first)
    assert still["conditions"][0]["lastTransitionTime"] == timestamp(NOW - 600)
    assert still["conditions"][0]["reason"] == "Rebalancing"
    balanced = status_of(plan([host("kvm-a", 4), host("kvm-b", 4)], []), still)
    assert balanced["conditions"][0]["status"] == "True"
    assert balanced["conditions"][0]["lastTransitionTime"] == timestamp(NOW)


def test_while_earlier_moves_run_the_plan_being_carried_out_stays_shown() -> None:
    planned = status_of(plan(IMBALANCED, ON_A), recent=[NOW - 30])
    waiting = status_of(plan(IMBALANCED, ON_A, busy=True), planned, recent=[NOW - 30])
    assert waiting["plan"] == planned["plan"] and waiting["plan"]
    assert waiting["lastRebalanceTime"] == timestamp(NOW - 30)
    # Later, balanced and with the hour gone: the plan clears, the last rebalance is remembered.
    later = status_of(plan([host("kvm-a", 4), host("kvm-b", 4)], []), waiting, now=NOW + 7200)
    assert later["plan"] == [] and later["recentMoves"] == []
    assert later["lastRebalanceTime"] == timestamp(NOW - 30)


def test_a_dry_runs_status_shows_the_moves_and_says_nothing_moves() -> None:
    result = plan(IMBALANCED, ON_A, policy=dataclasses.replace(ON, dry_run=True))
    status = status_of(result, dry_run=True)
    condition = status["conditions"][0]
    assert condition["reason"] == "Imbalanced" and condition["message"].startswith("dry run")
    assert len(status["plan"]) == len(result.moves) > 0
    assert status["recentMoves"] == [] and "lastRebalanceTime" not in status


# ---------------------------------------------------------------------------
# The hint on a VMMigration


def test_a_hint_names_its_target_until_it_is_too_old() -> None:
    value = hint_value(target="kvm-c", pool="lab", now=NOW)
    assert REBALANCE_ANNOTATION == "vmmigration.dev/rebalance-to"
    assert json.loads(value) == {"to": "kvm-c", "pool": "lab", "at": timestamp(NOW)}
    assert " " not in value
    assert parse_hint(value, now=NOW) == "kvm-c"
    assert parse_hint(value, now=NOW + 900) == "kvm-c"
    assert parse_hint(value, now=NOW + 901) is None
    assert parse_hint(value, now=NOW + 60, max_age_seconds=30) is None


@pytest.mark.parametrize("text", [
    pytest.param(None, id="absent"),
    pytest.param("kvm-c", id="a-bare-name"),
    pytest.param("{not json", id="broken-json"),
    pytest.param('["kvm-c"]', id="a-list"),
    pytest.param(json.dumps({"to": "", "at": timestamp(NOW)}), id="empty-target"),
    pytest.param(json.dumps({"to": 3, "at": timestamp(NOW)}), id="target-not-text"),
    pytest.param(json.dumps({"to": "kvm-c"}), id="no-time"),
    pytest.param(json.dumps({"to": "kvm-c", "at": "soon"}), id="time-not-a-timestamp"),
    pytest.param(json.dumps({"to": "kvm-c", "at": timestamp(NOW + 3600)}), id="from-the-future"),
])
def test_a_malformed_hint_is_ignored(text: Any) -> None:
    assert parse_hint(text, now=NOW) is None
