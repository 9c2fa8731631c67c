"""A host's drain, one pass at a time: what it makes, counts, reports and winds down."""

from __future__ import annotations

from typing import Any

from vmmigration.core.drain import (
    DRAINED_FROM_LABEL,
    DrainPass,
    DrainRecord,
    Managed,
    made_name,
    plan_drain,
)
from vmmigration.core.memory import timestamp
from vmmigration.core.model import HostReport, JobDirection, PauseReason, PowerState
from vmmigration.core.spec import DrainPolicy, HypervisorSpec, WhenCancelled

from .conftest import domain

NOW = 1_800_000_000.0


def spec(*, maintenance: bool = True, exclude: tuple[str, ...] = (), finish: bool = False,
         pool: str | None = "lab") -> HypervisorSpec:
    return HypervisorSpec(
        name="kvm-a", uri="qemu+tcp://a/system", maintenance=maintenance,
        labels=(("vmmigration.dev/pool", pool),) if pool else (),
        drain=DrainPolicy(exclude=frozenset(exclude),
                          when_cancelled=WhenCancelled.FINISH if finish else WhenCancelled.ABORT))


def report(*names: str, off: tuple[str, ...] = ()) -> HostReport:
    found = [domain(n) for n in names] + [domain(n, state=PowerState.SHUT_OFF) for n in off]
    return HostReport(reachable=True, probed_at=NOW, domains=tuple(found))


def run(host: HypervisorSpec, found: HostReport | None, *migrations: Managed,
        previous: dict[str, Any] | None = None, now: float = NOW) -> DrainPass:
    return plan_drain(spec=host, owner_uid="uid-1", report=found, migrations=migrations,
                      previous=previous or {}, namespace="vmmigration-system", now=now)


def test_a_domain_nobody_manages_gets_a_vmmigration_owned_by_the_host_over_its_pool() -> None:
    done = run(spec(), report("web", off=("cold",)))
    assert [m.name for m in done.create] == ["drain-kvm-a-cold", "drain-kvm-a-web"]
    body = done.create[1].body
    assert body["spec"]["targetSelector"] == {"matchLabels": {"vmmigration.dev/pool": "lab"}}
    assert body["metadata"]["labels"][DRAINED_FROM_LABEL] == "kvm-a"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert body["metadata"]["namespace"] == "vmmigration-system"
    assert done.counts is not None and (done.counts.total, done.counts.queued) == (2, 2)
    assert [e.reason for e in done.events] == ["DrainStarted"]


def test_the_default_pool_is_the_hosts_without_a_pool_label() -> None:
    done = run(spec(pool=None), report("web"))
    assert done.create[0].body["spec"]["targetSelector"] == {
        "matchExpressions": [{"key": "vmmigration.dev/pool", "operator": "DoesNotExist"}]}


def test_a_managed_domain_gets_nothing_made_and_is_counted_by_its_vmmigrations_phase() -> None:
    moving = Managed(key="default/web", domain="web", created="1", target="kvm-a", phase="Migrating")
    failed = Managed(key="default/db", domain="db", created="1", phase="Failed")
    done = run(spec(), report("web", "db"), moving, failed)
    assert done.create == ()
    assert done.counts is not None
    assert (done.counts.moving, done.counts.failed, done.counts.queued) == (1, 1, 0)


def test_excluded_and_blocked_domains_are_named_as_blockers_with_one_event_each() -> None:
    stuck = Managed(key="default/db", domain="db", created="1", phase="Pending", blocked=True,
                    reason="NoEligibleTarget", message="no Hypervisor can take db")
    done = run(spec(exclude=("keep",)), report("keep", "db"), stuck)
    blockers = done.fields["drain"]["blockers"]
    assert [(b["domain"], b["reason"]) for b in blockers] == [("db", "NoEligibleTarget"),
                                                              ("keep", "Excluded")]
    assert done.drained is not None and done.drained.reason == "DrainBlocked"
    assert [e.reason for e in done.events].count("DrainBlocked") == 2
    again = run(spec(exclude=("keep",)), report("keep", "db"), stuck, previous={"drain": done.fields["drain"]})
    assert "DrainBlocked" not in [e.reason for e in again.events], "each blocker is posted once"


def test_progress_is_counted_from_what_the_host_still_holds_and_survives_a_restart() -> None:
    first = run(spec(), report("a", "b", "c"))
    stored = {"drain": first.fields["drain"]}
    later = run(spec(), report("c"), previous=stored, now=NOW + 30)
    drain = later.fields["drain"]
    assert (drain["total"], drain["moved"]) == (3, 2)
    assert drain["lastProgressTime"] == timestamp(NOW + 30)
    record = DrainRecord.from_status(drain)
    assert record is not None and (record.total, record.moved, record.started) == (3, 2, NOW)


def test_an_empty_host_is_drained_once_with_the_condition_true_and_one_event() -> None:
    first = run(spec(), report("a"))
    done = run(spec(), report(), previous={"drain": first.fields["drain"]}, now=NOW + 60)
    assert done.drained is not None and done.drained.status and done.drained.reason == "Drained"
    assert done.fields["drain"]["state"] == "Drained"
    assert [e.reason for e in done.events] == ["Drained"]
    again = run(spec(), report(), previous={"drain": done.fields["drain"]}, now=NOW + 70)
    assert again.events == () and again.fields["drain"]["completionTime"] == timestamp(NOW + 60)


def test_a_vm_paused_on_the_sending_end_of_its_move_keeps_the_host_from_being_drained() -> None:
    # The watched bug: the hybrid suspends the source for its last copy, and libvirt
    # gives that pause the same reason as the target's incoming copy. Only the job
    # says which end is which; a host holding the suspended source is not empty.
    moving = Managed(key="default/hot", domain="hot", created="1", phase="Migrating")
    suspended = domain("hot", state=PowerState.PAUSED, reason=PauseReason.MIGRATION,
                       job=JobDirection.OUTGOING)
    done = run(spec(), HostReport(reachable=True, probed_at=NOW, domains=(suspended,)), moving,
               previous={"drain": {"state": "Draining", "total": 3, "moved": 2,
                                   "startTime": timestamp(NOW - 14)}})
    assert done.drained is not None and done.drained.status is False
    assert done.counts is not None and (done.counts.moving, done.counts.moved) == (1, 2)
    assert "Drained" not in [e.reason for e in done.events]


def test_an_incoming_copy_is_not_counted_as_a_vm_but_keeps_the_host_from_being_drained() -> None:
    # Found by the 60-minute soak: a host put back into maintenance while its VMs were
    # coming home said Drained, and the copies then landed on it.
    arriving = domain("web", state=PowerState.PAUSED, reason=PauseReason.MIGRATION,
                      job=JobDirection.INCOMING)
    done = run(spec(), HostReport(reachable=True, probed_at=NOW, domains=(arriving,)))
    assert done.counts is not None and done.counts.total == 0
    assert done.drained is not None and done.drained.status is False
    assert "still arriving: web" in done.drained.message


def test_a_definition_left_behind_by_a_move_blocks_the_drain_and_says_so() -> None:
    placed = Managed(key="default/web", domain="web", created="1", phase="Placed", current="kvm-b")
    done = run(spec(), report(off=("web",)), placed)
    assert done.fields["drain"]["blockers"][0]["reason"] == "LeftDefined"


def test_clearing_maintenance_cancels_the_drain_and_deletes_what_it_made() -> None:
    started = run(spec(), report("a", "b"))
    made_moving = Managed(key="vmmigration-system/drain-kvm-a-a", domain="a", created="1",
                          phase="Migrating", made_for="kvm-a")
    made_queued = Managed(key="vmmigration-system/drain-kvm-a-b", domain="b", created="1",
                          phase="Pending", made_for="kvm-a")
    stored = {"drain": started.fields["drain"]}
    aborted = run(spec(maintenance=False), report("a", "b"), made_moving, made_queued, previous=stored)
    assert set(aborted.delete) == {made_moving.key, made_queued.key}
    assert aborted.fields["drain"]["state"] == "Cancelled"
    assert [e.reason for e in aborted.events] == ["DrainCancelled"]
    assert aborted.drained is not None and not aborted.drained.status
    finished = run(spec(maintenance=False, finish=True), report("a", "b"), made_moving, made_queued,
                   previous=stored)
    assert finished.delete == (made_queued.key,), "Finish lets the running move end"
    assert finished.fields["drain"]["moving"] == 1


def test_the_end_of_maintenance_after_a_full_drain_lists_who_goes_back() -> None:
    first = run(spec(), report())
    away = Managed(key="default/web", domain="web", created="1", target="kvm-a", phase="Displaced",
                   current="kvm-b")
    done = run(spec(maintenance=False), report(), away, previous={"drain": first.fields["drain"]})
    assert done.fields["displaced"] == [{"domain": "web", "vmmigration": "default/web", "runsOn": "kvm-b"}]
    assert done.fields["drain"] is None
    assert [e.reason for e in done.events] == ["MaintenanceEnded"]


def test_an_unreachable_host_in_maintenance_makes_nothing_and_says_why() -> None:
    done = run(spec(), HostReport(reachable=False, probed_at=NOW, error="refused"))
    assert done.create == () and done.drained is not None and done.drained.reason == "HostUnreachable"


def test_made_names_are_dns_labels_and_distinct_for_distinct_domains() -> None:
    assert made_name("kvm-a", "web") == "drain-kvm-a-web"
    odd = made_name("kvm-a", "Web_1.x")
    assert odd.startswith("drain-kvm-a-web-1-x-") and len(odd) <= 63
    assert made_name("kvm-a", "web_1") != made_name("kvm-a", "web.1")
    assert len(made_name("kvm-a", "x" * 64)) <= 63
