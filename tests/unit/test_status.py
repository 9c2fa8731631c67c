"""Status and conditions: honest transition times, and patches only for what changed."""

from __future__ import annotations

from vmmigration.core import status
from vmmigration.core.memory import Condition
from vmmigration.core.spec import Phase
from vmmigration.core.model import HostReport


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = status.compose(previous={}, phase=Phase.PENDING, generation=1, now=100.0,
                           wanted=(Condition("Queued", True, "ConcurrencyLimit", "full"),))
    second = status.compose(previous=first, phase=Phase.PENDING, generation=2, now=200.0,
                            wanted=(Condition("Queued", True, "ConcurrencyLimit", "still full"),))
    queued = {c["type"]: c for c in second["conditions"]}["Queued"]
    assert queued["lastTransitionTime"] == status.timestamp(100.0)
    assert queued["observedGeneration"] == 2 and second["observedGeneration"] == 2


def test_every_condition_type_is_always_present() -> None:
    new = status.compose(previous={}, phase=Phase.PLACED, generation=1, now=0.0,
                         wanted=(Condition("Ready", True, "Placed", "ok"),))
    assert [c["type"] for c in new["conditions"]] == list(status.CONDITION_TYPES)


def test_an_unchanged_status_needs_no_patch_and_removed_fields_become_null() -> None:
    old = {"phase": "Migrating", "attempt": {"source": "a", "target": "b"}, "progress": {"percent": 5}}
    assert status.merge_patch(old, dict(old)) == {}
    new = {"phase": "Placed", "progress": {"percent": 100}}
    assert status.merge_patch(old, new) == {"phase": "Placed", "attempt": None,
                                            "progress": {"percent": 100}}


def test_a_quiet_hypervisor_is_not_rewritten_on_every_probe() -> None:
    report = HostReport(reachable=True, probed_at=1000.0, memory_free_bytes=1_000_000)
    first = status.hypervisor(previous={}, report=report, generation=1, now=1000.0, inbound=0, outbound=0)
    later = HostReport(reachable=True, probed_at=1010.0, memory_free_bytes=1_000_500)
    second = status.hypervisor(previous=first, report=later, generation=1, now=1010.0, inbound=0, outbound=0)
    assert status.merge_patch(first, second) == {}
    much_later = status.hypervisor(previous=first, report=later, generation=1, now=1100.0,
                                   inbound=0, outbound=0)
    assert set(status.merge_patch(first, much_later)) == {"lastProbeTime"}


def test_an_unreachable_hypervisor_flips_its_reachable_condition() -> None:
    up = status.hypervisor(previous={}, report=HostReport(reachable=True, probed_at=0.0),
                           generation=1, now=0.0, inbound=0, outbound=0)
    down = status.hypervisor(previous=up, report=HostReport(reachable=False, probed_at=5.0,
                                                            error="connection refused"),
                             generation=1, now=5.0, inbound=0, outbound=0)
    condition = down["conditions"][0]
    assert condition["status"] == "False" and "refused" in condition["message"]


def test_a_hypervisor_shows_its_free_memory_for_people_and_rewrites_it_only_with_the_count() -> None:
    report = HostReport(reachable=True, probed_at=0.0, memory_free_bytes=3 * 2**30 + 2**28)
    first = status.hypervisor(previous={}, report=report, generation=1, now=0.0, inbound=0, outbound=0)
    assert first["memoryFreeBytes"] == 3 * 2**30 + 2**28 and first["memoryFree"] == "3.2Gi"
    # Under 1 % of change: neither the count nor its text is rewritten.
    nudged = HostReport(reachable=True, probed_at=1.0, memory_free_bytes=3 * 2**30 + 2**28 + 2**20)
    second = status.hypervisor(previous=first, report=nudged, generation=1, now=1.0, inbound=0, outbound=0)
    assert status.merge_patch(first, second) == {}
    emptied = HostReport(reachable=True, probed_at=2.0, memory_free_bytes=512 * 2**20)
    third = status.hypervisor(previous=first, report=emptied, generation=1, now=2.0, inbound=0, outbound=0)
    assert third["memoryFree"] == "512Mi"
