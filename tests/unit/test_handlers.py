"""The kopf wiring: the event handlers must run on the event loop, not in kopf's threads."""

from __future__ import annotations

import inspect

from vmmigration.adapters.kube import handlers


def test_event_handlers_are_coroutines() -> None:
    # kopf runs a plain ``def`` handler in a worker thread; these mutate the
    # runtime's dicts and asyncio.Events, which only the loop's thread may touch.
    assert inspect.iscoroutinefunction(handlers.hypervisor_event)
    assert inspect.iscoroutinefunction(handlers.vmmigration_event)
