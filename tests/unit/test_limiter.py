"""One limiter holds the slots, the running migrations and the queue; nothing keeps a copy."""

from __future__ import annotations

from vmmigration.core.limiter import Limiter, Limits
from vmmigration.core.scheduling import HypervisorView
from vmmigration.core.spec import HypervisorSpec

VIEWS = {name: HypervisorView(spec=HypervisorSpec(name=name, uri=f"test:///{name}",
                                                  max_inbound=1, max_outbound=2))
         for name in ("a", "b", "c")}


def test_a_held_slot_counts_against_the_hosts_until_it_is_freed() -> None:
    limiter = Limiter(Limits(max_concurrent=4))
    limiter.hold("ns/x", source="a", target="b")
    assert limiter.load("a") == (0, 1) and limiter.load("b") == (1, 0)
    assert limiter.why_not(source="c", target="b", hypervisors=VIEWS) == (
        "b already receives 1 migrations (maxInboundMigrations 1)")
    assert limiter.why_not(source="a", target="c", hypervisors=VIEWS) is None
    limiter.free("ns/x")
    assert limiter.load("b") == (0, 0) and limiter.in_flight == ()


def test_the_cluster_limit_counts_every_held_slot() -> None:
    limiter = Limiter(Limits(max_concurrent=1))
    limiter.hold("ns/x", source="a", target="b")
    assert "cluster-wide limit is 1" in (limiter.why_not(source="c", target="a", hypervisors=VIEWS) or "")


def test_running_is_a_subset_of_holding_and_freeing_ends_both() -> None:
    limiter = Limiter(Limits())
    limiter.hold("ns/x", source="a", target="b")
    assert limiter.running_count() == 0  # validating holds a slot, libvirt runs nothing yet
    limiter.running("ns/x", running=True)
    assert limiter.running_count() == 1
    limiter.free("ns/x")
    assert limiter.running_count() == 0 and not limiter.holds("ns/x")


def test_taking_a_slot_leaves_the_queue_and_forgetting_leaves_it_too() -> None:
    limiter = Limiter(Limits())
    limiter.queue("ns/x")
    limiter.queue("ns/y")
    limiter.queue("ns/y")
    assert limiter.queued_count() == 2
    limiter.hold("ns/x", source="a", target="b")
    limiter.forget("ns/y")
    assert limiter.queued == frozenset() and limiter.holds("ns/x")
