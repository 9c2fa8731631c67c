"""What `vmmigration drain`, `undrain`, `pool` and `get pools` make of a Hypervisor's or a pool's status."""

from __future__ import annotations

from typing import Any

import pytest

from vmmigration.core.drains import (
    Displacement,
    DrainEnding,
    drain_moves_running,
    drain_of,
    drain_verdict,
    host_rows,
    load_bar,
    plan_lines,
    pool_of_object,
    pool_row,
    pool_summary,
    seen,
    stuck_lines,
    undrain_verdict,
)
from vmmigration.core.memory import timestamp

NOW = 1_800_000_000.0


def hv(*, maintenance: bool = True, generation: int = 2, observed: int | None = 2,
       drain: dict[str, Any] | None = None, drained: tuple[str, str, str] | None = None,
       displaced: list[dict[str, str]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {} if observed is None else {"observedGeneration": observed}
    if drained is not None:
        state, reason, message = drained
        status["conditions"] = [{"type": "Reachable", "status": "True"},
                                {"type": "Drained", "status": state, "reason": reason, "message": message}]
    if drain is not None:
        status["drain"] = drain
    if displaced is not None:
        status["displaced"] = displaced
    return {"metadata": {"name": "kvm-a", "generation": generation},
            "spec": {"maintenance": maintenance}, "status": status}


DRAINING = {"state": "Draining", "startTime": timestamp(NOW - 300), "lastProgressTime": timestamp(NOW - 120),
            "total": 5, "moved": 3, "moving": 1, "queued": 0, "failed": 0, "blocked": 1,
            "blockers": [{"domain": "db-1", "reason": "Excluded", "message": "listed in spec.drain.exclude"}]}


def vmm(name: str, *, target: str = "kvm-a", phase: str = "Placed", current: str = "kvm-a",
        **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"domain": name, "targetHypervisor": target},
            "status": {"phase": phase, "currentHypervisor": current, **status}}


# ---- drain -------------------------------------------------------------------------------


def test_a_drain_in_progress_is_counted_and_its_blockers_named_in_one_line() -> None:
    judged = drain_verdict(hv(drain=DRAINING, drained=("False", "DrainBlocked", "db-1 is excluded")), now=NOW)
    assert judged.ending is None
    assert judged.line == ("DrainBlocked: 3/5 moved · 1 moving · 0 queued · 0 failed · 1 blocked; "
                           "blocked by db-1 (Excluded)")
    assert judged.message == "db-1 is excluded"
    assert judged.drain.remaining == 2 and judged.drain.fraction == pytest.approx(0.6)


def test_a_drain_is_finished_when_the_drained_condition_is_true_and_says_how_long_it_took() -> None:
    drain = {**DRAINING, "state": "Drained", "moved": 5, "moving": 0, "blocked": 0, "blockers": [],
             "completionTime": timestamp(NOW - 115)}
    judged = drain_verdict(hv(drain=drain, drained=("True", "Drained", "no domain left")), now=NOW)
    assert judged.ending is DrainEnding.DRAINED
    assert judged.line == "drained: 5 domains moved in 3m05s"


def test_a_drained_condition_from_before_the_maintenance_was_seen_is_not_believed() -> None:
    stale = hv(generation=3, observed=2, drained=("True", "Drained", "no domain left"))
    judged = drain_verdict(stale, now=NOW)
    assert (judged.ending, judged.line) == (None, "waiting for the operator to see generation 3")
    # The condition's own generation counts before the status's.
    fresh_condition = hv(generation=3, observed=2, drained=("True", "Drained", ""))
    fresh_condition["status"]["conditions"][1]["observedGeneration"] = 3
    assert drain_verdict(fresh_condition, now=NOW).ending is DrainEnding.DRAINED


def test_a_status_without_generations_is_believed() -> None:
    assert seen({"metadata": {}, "status": {}})
    assert not seen({"metadata": {"generation": 2}, "status": {}})


def test_maintenance_cleared_during_the_wait_ends_it_as_cancelled() -> None:
    judged = drain_verdict(hv(maintenance=False, drain={**DRAINING, "state": "Cancelled"}), now=NOW)
    assert judged.ending is DrainEnding.CANCELLED
    assert judged.line.startswith("maintenance was cleared: the drain is cancelled (3/5 moved")


def test_before_the_operator_shows_a_drain_the_line_says_it_waits_for_it() -> None:
    judged = drain_verdict(hv(), now=NOW)
    assert (judged.ending, judged.line) == (None, "waiting for the operator to start the drain")


def test_a_hand_edited_drain_status_is_read_without_crashing() -> None:
    drain = drain_of(hv(drain={"state": "Draining", "total": "five", "moved": -2, "blockers": ["x", {"a": 1},
                                                                                          {"domain": "vm"}]}))
    assert (drain.total, drain.moved, drain.blocked) == (0, 0, 1)
    assert [str(b) for b in drain.blockers] == ["vm: Blocked"]


def test_a_wait_that_times_out_says_what_is_left_what_blocks_and_since_when_nothing_left() -> None:
    lines = stuck_lines(hv(drain={**DRAINING, "failed": 1, "blocked": 22}, drained=("False", "Draining", "")),
                        now=NOW)
    assert lines == [
        "kvm-a: 2 domains left: 1 moving, 0 queued, 1 failed, 22 blocked",
        "no domain has left kvm-a for 2m00s",
        "blocked: db-1: Excluded: listed in spec.drain.exclude",
        "blocked: 21 more (the status names 20 at most)",
        "1 move failed and will be retried: kubectl get vmm -A -l vmmigration.dev/drained-from=kvm-a shows why",
    ]


def test_a_wait_that_times_out_before_the_operator_saw_the_maintenance_says_so() -> None:
    assert stuck_lines(hv(generation=3, observed=2), now=NOW) == [
        "kvm-a: the operator has not seen the maintenance yet (is it running?)"]


# ---- undrain -----------------------------------------------------------------------------


WEB = Displacement(domain="web-1", vmmigration="default/web-1", runs_on="kvm-b")


def test_an_undrain_waits_for_each_displaced_vm_to_be_placed_on_its_host_again() -> None:
    host = hv(maintenance=False, displaced=[{"domain": "web-1", "vmmigration": "default/web-1", "runsOn": "kvm-b"}])
    on_the_way = vmm("web-1", phase="Migrating", current="kvm-b", progress={"percent": 40})
    judged = undrain_verdict(host, expected=[], vmmigrations={"default/web-1": on_the_way}, drain_moving=0)
    assert not judged.done
    assert judged.line == "1 VM on the way back: default/web-1 (web-1): on kvm-b, Migrating 40%"
    back = undrain_verdict(hv(maintenance=False), expected=[WEB], vmmigrations={"default/web-1": vmm("web-1")},
                           drain_moving=0)
    assert back.done and back.back == ("default/web-1",)
    assert back.line == "out of maintenance; 1 VM back"


def test_a_displaced_vm_whose_target_changed_or_that_was_deleted_is_not_waited_for() -> None:
    judged = undrain_verdict(hv(maintenance=False), expected=[WEB, Displacement("db", "default/db")],
                             vmmigrations={"default/web-1": vmm("web-1", target="kvm-c", current="kvm-c"),
                                           "default/db": None}, drain_moving=0)
    assert judged.done
    assert judged.stays == ("default/web-1: its target is now kvm-c", "default/db: deleted")


def test_an_undrain_also_waits_for_the_drains_own_moves_to_end() -> None:
    judged = undrain_verdict(hv(maintenance=False), expected=[], vmmigrations={}, drain_moving=2)
    assert not judged.done and judged.line == "2 of the drain's moves still running"
    assert drain_moves_running([vmm("a", phase="Migrating"), vmm("b", phase="Pending"),
                                vmm("c", phase="Validating")]) == 2


def test_without_the_right_to_read_vmmigrations_the_hypervisors_status_is_believed() -> None:
    host = hv(maintenance=False, displaced=[{"domain": "web-1", "vmmigration": "default/web-1", "runsOn": "kvm-b"}],
              drain={**DRAINING, "state": "Cancelled", "moving": 0})
    judged = undrain_verdict(host, expected=[WEB, Displacement("db", "default/db")], vmmigrations=None,
                             drain_moving=None)
    assert not judged.done and judged.back == ("default/db",)
    assert judged.line == "1 VM on the way back: default/web-1 (web-1): on kvm-b"
    host["status"]["displaced"] = []
    assert undrain_verdict(host, expected=[WEB], vmmigrations=None, drain_moving=None).done


def test_an_undrain_is_not_over_before_the_operator_saw_it_nor_while_the_host_is_in_maintenance_again() -> None:
    assert not undrain_verdict(hv(maintenance=False, generation=3), expected=[], vmmigrations={},
                               drain_moving=0).done
    again = undrain_verdict(hv(maintenance=True), expected=[], vmmigrations={}, drain_moving=0)
    assert again.again and not again.done


# ---- pools -------------------------------------------------------------------------------


def pool(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "lab", "creationTimestamp": timestamp(NOW - 86400)},
        "spec": {"rebalance": {"enabled": True, "thresholdPercent": 20, **spec}},
        "status": {
            "conditions": [{"type": "Balanced", "status": "False", "reason": "Rebalancing",
                            "message": "spread 50 points"}],
            "spreadPercent": 50.0,
            "hosts": [
                {"name": "kvm-c", "loadPercent": 25.0, "usedBytes": 2 * 2**30, "capacityBytes": 8 * 2**30, "vms": 1},
                {"name": "kvm-a", "loadPercent": 75.0, "usedBytes": 6 * 2**30, "capacityBytes": 8 * 2**30, "vms": 3},
                {"name": "kvm-m", "loadPercent": 0.0, "usedBytes": 0, "capacityBytes": 0, "vms": 0,
                 "eligible": False, "message": "kvm-m is in maintenance"},
            ],
            "plan": [{"vmmigration": "default/web-2", "domain": "web-2", "from": "kvm-a", "to": "kvm-c",
                      "memoryBytes": 2**30, "loadBefore": {"from": 75.0, "to": 25.0},
                      "loadAfter": {"from": 62.5, "to": 37.5},
                      "why": "web-2 (1.0Gi): kvm-a 75% → kvm-c 25%, then 62.5% and 37.5%: spread 50 → 25 points"}],
            "recentMoves": [timestamp(NOW - 600)],
            "lastRebalanceTime": timestamp(NOW - 600),
        },
    }


def test_a_load_is_drawn_as_a_bar_of_twenty_characters() -> None:
    assert load_bar(75.0) == "█" * 15 + "░" * 5
    assert load_bar(130.0) == "█" * 20 and load_bar(-5) == "░" * 20
    assert load_bar(None) == "?" * 20


def test_a_pool_is_listed_with_its_spread_threshold_state_and_plan() -> None:
    assert pool_row(pool(), now=NOW) == ["lab", "3", "50%", "20%", "Rebalancing", "on", "1", "10m", "24h"]
    assert pool_row(pool(dryRun=True), now=NOW)[5] == "dry run"
    assert pool_row({"metadata": {"name": "new"}}, now=NOW) == ["new", "0", "-", "20%", "-", "off", "0", "-", "-"]


def test_a_pools_hosts_are_shown_most_loaded_first_with_a_bar_and_human_sizes() -> None:
    rows = host_rows(pool_of_object(pool()))
    assert [r[0] for r in rows] == ["kvm-a", "kvm-c", "kvm-m"]
    assert rows[0] == ["kvm-a", "█" * 15 + "░" * 5 + "    75%", "6.0Gi", "8.0Gi", "3", ""]
    assert rows[2][3:] == ["-", "0", "not counted: kvm-m is in maintenance"]


def test_a_pools_summary_puts_the_spread_against_the_threshold_and_states_the_policy() -> None:
    assert pool_summary(pool_of_object(pool()), now=NOW) == [
        "pool lab: Rebalancing, spread 50%, above the threshold of 20% (spread 50 points)",
        "rebalancing on; down to 10%, at most 6 moves an hour (1 in the last hour), a VM moved again "
        "after 30m00s; last rebalanced 10m ago"]
    off = pool_of_object({"metadata": {"name": "idle"}, "status": {"spreadPercent": 4.5}})
    assert pool_summary(off, now=NOW) == ["pool idle: Unknown, spread 4.5%, within the threshold of 20%",
                                          "rebalancing off (spec.rebalance.enabled: false)"]


@pytest.mark.parametrize(("spec", "heading"), [
    pytest.param({}, "planned moves:", id="enabled"),
    pytest.param({"dryRun": True}, "moves it would make (dry run: nothing is moved):", id="dry-run"),
    pytest.param({"enabled": False}, "moves planned last (rebalancing is off now: none will be made):", id="off"),
])
def test_the_planned_moves_are_shown_with_their_why_under_a_heading_that_says_if_they_happen(
        spec: dict[str, Any], heading: str) -> None:
    assert plan_lines(pool_of_object(pool(**spec))) == [
        heading, "  default/web-2: web-2 (1.0Gi): kvm-a 75% → kvm-c 25%, then 62.5% and 37.5%: spread 50 → 25 points"]


def test_a_planned_move_without_a_why_is_explained_by_its_load_figures() -> None:
    obj = pool()
    del obj["status"]["plan"][0]["why"]
    assert plan_lines(pool_of_object(obj))[1] == (
        "  default/web-2 (web-2, 1.0Gi): kvm-a → kvm-c (kvm-a 75%, kvm-c 25%; then 62.5% and 37.5%)")
    obj["status"]["plan"] = []
    assert plan_lines(pool_of_object(obj)) == ["no moves planned"]
