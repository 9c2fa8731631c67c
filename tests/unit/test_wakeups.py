"""Who is woken when: with a thousand VMMigrations, waking every loop for every event is slow."""

from __future__ import annotations

from .test_runtime import KEY, FakeKube, body, make_runtime, run, runtime_with


def test_a_freed_migration_slot_wakes_only_the_loops_queued_for_one() -> None:
    runtime = make_runtime(kube=FakeKube())
    fleet = runtime.fleet
    queued, idle = fleet.waker("ns/queued"), fleet.waker("ns/idle")
    fleet.limiter.queue("ns/queued")
    fleet.limiter.hold("ns/other", source="a", target="b")
    fleet.free("ns/other")
    assert queued.is_set() and not idle.is_set()
    runtime.release("ns/queued")
    assert not fleet.limiter.queued


def test_an_abort_takes_a_queued_vmmigration_out_of_the_queue_and_its_gauge() -> None:
    runtime, _, engine = runtime_with({"kvm-a": ["web-01"], "kvm-b": []})
    runtime.limiter.queue(KEY)  # it waited for a slot when the user set spec.abort
    assert runtime.metrics.registry.get_sample_value("vmmigration_migrations_queued") == 1
    run(runtime, body(abort=True))
    assert KEY not in runtime.limiter.queued
    assert runtime.metrics.registry.get_sample_value("vmmigration_migrations_queued") == 0
    assert engine.phase_at_start == []
