"""Who is woken when: with a thousand VMMigrations, waking every loop for every event is slow."""

from __future__ import annotations

import asyncio

from vmmigration.config import Settings
from vmmigration.k8s.runtime import Runtime

from .test_runtime import FakeKube


def test_a_freed_migration_slot_wakes_only_the_loops_queued_for_one() -> None:
    runtime = Runtime(settings=Settings(), kube=FakeKube(), post_event=lambda *a, **k: None)
    runtime._wakers = {key: asyncio.Event() for key in ("ns/queued", "ns/idle")}
    runtime._queued.add("ns/queued")
    runtime.wake_queued()
    assert runtime._wakers["ns/queued"].is_set() and not runtime._wakers["ns/idle"].is_set()
    runtime.release("ns/queued")
    assert not runtime._queued
