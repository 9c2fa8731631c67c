"""Pure: the migration slots of the cluster and of each host, and who waits for one.

One :class:`Limiter` holds every figure the concurrency limits need: the
migrations holding a slot (from validation to the end of the job), which of
them libvirt is running now, and the VMMigrations queued for a slot. The
per-host counts, the Hypervisor status and the metrics all read it, so there
is no second copy to drift. Not thread-safe: it lives on the operator's event
loop; the metrics read its counts, which are plain integers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from vmmigration.core.scheduling import HypervisorView, InFlight, admit


@dataclasses.dataclass(frozen=True)
class Limits:
    """The cluster-wide limit; per-host limits are on each Hypervisor's spec."""

    max_concurrent: int = 4


class Limiter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._holding: dict[str, InFlight] = {}
        self._running: set[str] = set()
        self._queued: set[str] = set()
        # What each VMMigration last asked a slot for, and what the move costs
        # (the VM's memory): queued moves are admitted cheapest first.
        self._asks: dict[str, tuple[InFlight, int]] = {}

    # ---- reading ------------------------------------------------------------

    @property
    def in_flight(self) -> tuple[InFlight, ...]:
        return tuple(self._holding.values())

    @property
    def queued(self) -> frozenset[str]:
        return frozenset(self._queued)

    def holds(self, key: str) -> bool:
        return key in self._holding

    def running_count(self) -> int:
        """Migrations libvirt is running now (a slot held for validation is not one)."""
        return len(self._running)

    def queued_count(self) -> int:
        return len(self._queued)

    def load(self, host: str) -> tuple[int, int]:
        """(inbound, outbound) migrations holding a slot on ``host``."""
        inbound = sum(1 for m in self._holding.values() if m.target == host)
        outbound = sum(1 for m in self._holding.values() if m.source == host)
        return inbound, outbound

    def why_not(self, *, source: str, target: str, hypervisors: Mapping[str, HypervisorView],
                key: str | None = None, cost: int = 0) -> str | None:
        """None if a migration source -> target may take a slot now; otherwise why it waits.

        With ``key``, a queued move that costs less (``cost``: the VM's memory)
        and could start now goes first: a drain empties its host fastest by
        moving the small VMs while the slots allow, and a big VM does not hold
        a slot that three small ones could have used.
        """
        in_flight = self.in_flight
        why = admit(source=source, target=target, in_flight=in_flight,
                    hypervisors=hypervisors, cluster_limit=self.limits.max_concurrent)
        if key is None:
            return why
        self._asks[key] = (InFlight(key=key, source=source, target=target), cost)
        if why is not None:
            return why
        cheaper = sorted((asked_cost, other) for other in self._queued if other != key
                         and other not in self._holding
                         for asked, asked_cost in (self._asks.get(other, (None, 0)),) if asked is not None
                         and (asked_cost, other) < (cost, key)
                         and admit(source=asked.source, target=asked.target, in_flight=in_flight,
                                   hypervisors=hypervisors, cluster_limit=self.limits.max_concurrent) is None)
        if cheaper:
            return (f"{len(cheaper)} smaller queued move{'s' if len(cheaper) > 1 else ''} go first "
                    f"({cheaper[0][1]} next)")
        return None

    # ---- changing -------------------------------------------------------------

    def queue(self, key: str) -> None:
        self._queued.add(key)

    def hold(self, key: str, *, source: str, target: str) -> None:
        """Take a slot (admitted, or an attempt a restart must settle). Leaves the queue."""
        self._holding[key] = InFlight(key=key, source=source, target=target)
        self._queued.discard(key)
        self._asks.pop(key, None)

    def running(self, key: str, *, running: bool) -> None:
        """libvirt's job for ``key`` started (True) or is no longer watched here (False)."""
        if running:
            self._running.add(key)
        else:
            self._running.discard(key)

    def free(self, key: str) -> None:
        """The slot is given back; the caller wakes whoever is queued."""
        self._holding.pop(key, None)
        self._running.discard(key)

    def forget(self, key: str) -> None:
        """The VMMigration is gone, or no longer waits (aborted)."""
        self._queued.discard(key)
        self._asks.pop(key, None)
