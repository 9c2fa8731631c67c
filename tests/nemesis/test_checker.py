"""The checker itself, on small histories written by hand: each rule fails when it should."""

from __future__ import annotations

from typing import Any

from .checker import check, settled, shortest_history

HOSTS = ("kvm-a", "kvm-b")


def setup(**extra: Any) -> dict[str, Any]:
    return {"t": 0.0, "k": "setup", "guests": ["vm"], "cold": [], "hosts": list(HOSTS), **extra}


def round_(t: float, a: dict[str, str] | None, b: dict[str, str] | None,
           a2: dict[str, str] | None = None, b2: dict[str, str] | None = None) -> dict[str, Any]:
    """A palindrome round: a, b, then b2, a2 (the second pass defaults to the first)."""
    return {"t": t, "k": "round", "reads": [["kvm-a", t, t + 0.01, a], ["kvm-b", t + 0.02, t + 0.03, b],
                                            ["kvm-b", t + 0.04, t + 0.05, b if b2 is None else b2],
                                            ["kvm-a", t + 0.06, t + 0.07, a if a2 is None else a2]]}


def final(t: float, unsettled: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"t": t, "k": "final", "unsettled": list(unsettled), "bound": 300}


def rules(history: list[dict[str, Any]]) -> list[str]:
    return [v.rule for v in check(history).violations]


def test_the_checker_passes_a_clean_move() -> None:
    history = [setup(), round_(1, {"vm": "running"}, {"vm": "paused:migration"}),
               round_(2, {"vm": "paused:migration"}, {"vm": "paused:migration"}),
               round_(3, {}, {"vm": "running"}), final(4)]
    assert rules(history) == []


def test_the_checker_sees_a_vm_running_on_two_hosts_in_both_passes_of_a_round() -> None:
    twice = round_(1, {"vm": "running"}, {"vm": "running"})
    assert rules([setup(), twice, final(2)]) == ["RunningOnTwoHosts"]


def test_the_checker_forgives_a_switch_over_seen_between_two_reads() -> None:
    # Source read running, then the target read running after the switch, then the
    # source read again paused: each host's two reads do not both say running.
    switch = round_(1, {"vm": "running"}, {"vm": "running"}, a2={"vm": "paused:migration"})
    assert rules([setup(), switch, final(2)]) == []


def test_the_checker_sees_a_vm_defined_nowhere_and_one_paused_everywhere_too_long() -> None:
    gone = [setup(), round_(1, {}, {}), final(2)]
    assert rules(gone) == ["DefinedNowhere"]
    paused = [setup(), *(round_(t, {"vm": "paused:migration"}, {}) for t in range(1, 40)), final(41)]
    assert rules(paused) == ["RunningNowhere"]


def test_the_checker_allows_a_pause_as_long_as_an_overlapping_fault_plus_the_margin() -> None:
    fault = {"t": 1.0, "k": "fault", "id": 1, "what": "freeze-libvirtd", "hosts": ["kvm-a"]}
    heal = {"t": 20.0, "k": "heal", "fault": 1}
    paused = [setup(), fault, *(round_(t, {"vm": "paused:migration"}, {}) for t in range(1, 45)),
              heal, round_(46, {"vm": "running"}, {}), final(47)]
    assert rules(paused) == []


def hv(t: float, *, drained: bool, maintenance: bool = True) -> dict[str, Any]:
    return {"t": t, "k": "api", "kind": "Hypervisor", "name": "kvm-b",
            "obj": {"spec": {"maintenance": maintenance},
                    "status": {"conditions": [{"type": "Drained", "status": str(drained)}]}}}


def test_the_checker_catches_a_host_said_drained_while_its_vm_is_suspended_there() -> None:
    # The watched bug: Drained written while the hybrid's suspended source is on kvm-b.
    history = [setup(), hv(1, drained=False), hv(2, drained=True),
               round_(2.5, {"vm": "paused:migration"}, {"vm": "paused:migration"}),
               round_(8, {"vm": "running"}, {}), hv(9, drained=False, maintenance=False), final(10)]
    history[3]["reads"] = [["kvm-a", 2.5, 2.51, {"vm": "paused:migration"}],
                           ["kvm-b", 2.52, 2.53, {"vm": "paused:migration"}],
                           ["kvm-b", 2.54, 2.55, {"vm": "paused:migration"}],
                           ["kvm-a", 2.56, 2.57, {"vm": "paused:migration"}]]
    assert rules(history) == ["DrainedButNotEmpty"]


def vmm(t: float, *, phase: str, current: str, ready: bool = True) -> dict[str, Any]:
    return {"t": t, "k": "api", "kind": "VMMigration", "name": "vm",
            "obj": {"spec": {"domain": "vm", "targetHypervisor": current},
                    "status": {"phase": phase, "currentHypervisor": current,
                               "conditions": [{"type": "Ready", "status": str(ready)}]}}}


def test_the_checker_catches_placed_written_where_the_vm_does_not_run() -> None:
    history = [setup(), round_(1, {"vm": "running"}, {}), vmm(1.05, phase="Placed", current="kvm-b"),
               final(2)]
    assert rules(history) == ["PlacedButNotThere"]
    truthful = [setup(), round_(1, {"vm": "running"}, {}), vmm(1.05, phase="Placed", current="kvm-a"),
                final(2)]
    assert rules(truthful) == []


def event(t: float, reason: str, message: str) -> dict[str, Any]:
    return {"t": t, "k": "api", "kind": "Event", "name": f"e{t}",
            "obj": {"reason": reason, "message": message, "involvedObject": {"name": "vm"}}}


def test_the_checker_catches_a_drift_nobody_caused_and_believes_one_someone_did() -> None:
    base = [setup(), vmm(0.5, phase="Placed", current="kvm-a"), round_(1, {"vm": "running"}, {})]
    drift = event(5, "DriftDetected", "domain vm runs on kvm-a, not on kvm-b; moving it back")
    assert rules([*base, drift, final(6)]) == ["DriftWithoutMover"]
    moved = {"t": 3.0, "k": "op", "what": "outside", "domain": "vm", "outside": True}
    assert rules([*base, moved, drift, final(6)]) == []


def test_the_checker_matches_each_success_to_its_own_incoming_qemu_in_libvirts_log() -> None:
    base = [setup(), vmm(0.5, phase="Migrating", current="kvm-a", ready=False),
            round_(1, {"vm": "running"}, {})]
    success = event(5, "MigrationSucceeded", "domain vm moved to kvm-b (Live) in 3.0 s")
    assert rules([*base, success, final(6)]) == ["SucceededWithoutIncomingQemu"]
    qemu = {"t": 2.0, "k": "qemu", "host": "kvm-b", "domain": "vm", "at": 2.0, "incoming": True}
    assert rules([*base, qemu, success, final(6)]) == []
    again = event(9, "MigrationSucceeded", "domain vm moved to kvm-b (Live) in 3.0 s")
    assert rules([*base, qemu, success, again, final(10)]) == ["SucceededWithoutIncomingQemu"]
    earlier = event(-30, "MigrationSucceeded", "domain vm moved to kvm-b (Live) in 3.0 s")
    assert rules([earlier, *base, final(6)]) == [], "an earlier campaign's Event is not judged"


def test_the_checker_catches_two_started_events_for_one_libvirt_job() -> None:
    base = [setup(), vmm(0.5, phase="Migrating", current="kvm-a", ready=False),
            round_(1, {"vm": "running"}, {})]
    first = event(2, "MigrationStarted", "migrating vm from kvm-a to kvm-b (Live)")
    qemu = {"t": 2.5, "k": "qemu", "host": "kvm-b", "domain": "vm", "at": 2.5, "incoming": True}
    second = event(6, "MigrationStarted", "migrating vm from kvm-a to kvm-b (Live)")
    assert rules([*base, first, qemu, second, final(7)]) == ["StartedTwiceForOneJob"]
    failed = event(4, "MigrationFailed", "the link broke")
    retry_qemu = {"t": 6.5, "k": "qemu", "host": "kvm-b", "domain": "vm", "at": 6.5, "incoming": True}
    assert rules([*base, first, qemu, failed, second, retry_qemu, final(7)]) == []


def test_the_checker_reports_what_kept_the_fleet_from_settling() -> None:
    assert rules([setup(), round_(1, {"vm": "running"}, {}), final(2, ("vm is Migrating",))]) == [
        "NotSettledAfterHealing"]
    objects = {"hypervisors": {"kvm-a": {"spec": {}, "status": {}}},
               "vmms": {"vm": {"spec": {"domain": "vm", "targetHypervisor": "kvm-a"},
                               "status": {"phase": "Placed", "currentHypervisor": "kvm-a",
                                          "conditions": [{"type": "Ready", "status": "True"}]}}}}
    assert settled(objects, {"kvm-a": {"vm": "running"}}) == []
    assert settled(objects, {"kvm-a": {}}) == ["vm is Placed on kvm-a, where libvirt shows vm as None"]


def test_the_checker_keeps_only_the_history_that_touched_the_broken_thing() -> None:
    history = [setup(), {"t": 1.0, "k": "op", "what": "place", "domain": "vm"},
               {"t": 2.0, "k": "op", "what": "place", "domain": "other"},
               {"t": 3.0, "k": "fault", "id": 1, "what": "kill-operator", "hosts": []},
               {"t": 4.0, "k": "fault", "id": 2, "what": "cut-link", "hosts": ["kvm-c"]},
               round_(5, {}, {}), final(6)]
    first = check(history).violations[0]
    kept = [r["what"] for r in shortest_history(history, first)]
    assert kept == ["place", "kill-operator"]


def test_the_checker_accepts_a_failure_to_converge_only_where_the_guest_outruns_the_copy() -> None:
    vmm = {"spec": {"domain": "vm", "targetHypervisor": "kvm-a", "policy": {"bandwidthMiBPerSecond": 16}},
           "status": {"phase": "Failed", "currentHypervisor": "kvm-b",
                      "lastFailure": {"reason": "TimedOut",
                                      "message": "migration of vm did not converge (Forecast)"},
                      "conditions": [{"type": "Ready", "status": "False", "reason": "Backoff"}]}}
    objects = {"hypervisors": {}, "vmms": {"vm": vmm}}
    assert settled(objects, {}, {"vm": 16.0}) == []
    assert settled(objects, {}, {"vm": 1.0}) != []


def test_the_checker_allows_a_pause_as_long_as_the_moves_forecast_downtime_plus_the_margin() -> None:
    planned = {"t": 0.5, "k": "api", "kind": "VMMigration", "name": "vm",
               "obj": {"spec": {"domain": "vm"},
                       "status": {"phase": "Migrating", "plan": {"downtimeMs": 20_000}, "conditions": []}}}
    paused = [setup(), planned, *(round_(t, {"vm": "paused:migration"}, {}) for t in range(1, 45)),
              round_(46, {"vm": "running"}, {}), final(47)]
    assert rules(paused) == []
    longer = [setup(), planned, *(round_(t, {"vm": "paused:migration"}, {}) for t in range(1, 60)),
              final(61)]
    assert rules(longer) == ["RunningNowhere"]
