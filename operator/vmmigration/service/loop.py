"""The per-VMMigration loop: read, decide (pure), carry out the Effects, wait.

kopf runs one :meth:`Loop.serve` coroutine (a daemon) per VMMigration. Each
pass reads the live spec, what its status remembers and the latest probe of
every Hypervisor; :func:`vmmigration.core.reconcile.decide` and
:mod:`vmmigration.core.effects` say what to write, post and do; the loop
writes the status once, posts the Events, and runs the command, whose
outcome is carried out the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from vmmigration.core import effects as fx
from vmmigration.core import reconcile, status
from vmmigration.core.config import Settings
from vmmigration.core.memory import Memory
from vmmigration.core.model import Mode
from vmmigration.core.spec import Desired, Phase, SpecError, parse_vmmigration
from vmmigration.service.annotations import rebalance_hint
from vmmigration.service.driver import Driver
from vmmigration.service.fleet import Fleet
from vmmigration.service.ports import EventPoster, Kube, Metrics, Stopped
from vmmigration.service.probes import Probes

log = logging.getLogger(__name__)


class StatusWriter:
    """The last status written for each VMMigration, and a write only when it changes."""

    def __init__(self, *, kube: Kube, metrics: Metrics) -> None:
        self.kube = kube
        self.metrics = metrics
        self._statuses: dict[str, dict[str, Any]] = {}

    def previous(self, key: str, body: Any) -> dict[str, Any]:
        if key not in self._statuses:
            self._statuses[key] = dict(body.get("status") or {})
        return self._statuses[key]

    def forget(self, key: str) -> None:
        self._statuses.pop(key, None)

    async def write(self, key: str, body: Any, effects: fx.Effects, *, now: float) -> None:
        if effects.phase is None:
            return
        previous = self.previous(key, body)
        new = status.compose(previous=previous, phase=effects.phase,
                             generation=(_generation(body) if effects.generation is None
                                         else effects.generation), now=now,
                             wanted=effects.conditions, fields=effects.fields)
        patch = status.merge_patch(previous, new)
        if not patch:
            return
        namespace, name = key.split("/", 1)
        await asyncio.to_thread(self.kube.patch_vmmigration_status, namespace=namespace,
                                name=name, patch=patch)
        self.metrics.status_patched("vmmigrations")
        self._statuses[key] = new


class Loop:
    def __init__(self, *, fleet: Fleet, probes: Probes, driver: Driver, writer: StatusWriter,
                 post_event: EventPoster, metrics: Metrics, settings: Settings,
                 clock: Callable[[], float]) -> None:
        self.fleet = fleet
        self.probes = probes
        self.driver = driver
        self.writer = writer
        self.post_event = post_event
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        # key -> host -> (until, why): targets that refused a VM at a pre-check.
        # VMMigrations whose last pass left them Placed (or Displaced) with nothing to do:
        # whatever could change that wakes them (an event of their domain, a Hypervisor or
        # spec change), so they re-decide on the slow resync only, not every few seconds.
        self._settled: set[str] = set()
        self._avoid: dict[str, dict[str, tuple[float, str]]] = {}

    def forget(self, key: str) -> None:
        self.writer.forget(key)
        self._settled.discard(key)
        self._avoid.pop(key, None)

    async def serve(self, *, key: str, body: Any, stopped: Stopped) -> None:
        """The daemon: decide and act until the resource is deleted or the operator stops."""
        waker = self.fleet.waker(key)
        try:
            while not stopped:
                waker.clear()
                try:
                    idle = await self.pass_once(key=key, body=body, stopped=stopped)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.metrics.reconcile_error()
                    log.exception("reconciling %s failed; retrying", key,
                                  extra={"vmmigration": key, "domain": _domain(body)})
                    idle = False
                timeout = None if idle else (self.settings.inventory_resync_seconds
                                             if key in self._settled
                                             else self.settings.resync_interval_seconds)
                await _wait_for(waker, stopped, timeout=timeout)
        finally:
            self.fleet.forget_waker(key)

    async def pass_once(self, *, key: str, body: Any, stopped: Stopped) -> bool:
        """One decision and what it calls for. True when there is nothing left to watch."""
        try:
            desired = parse_vmmigration(body.get("spec"))
        except SpecError as error:
            return await self.carry_out(fx.invalid_spec(str(error)), key=key, body=body,
                                        desired=None, stopped=stopped)
        self.fleet.measures(key, desired.domain if desired.mode is Mode.AUTO else None)
        memory = Memory.from_status(self.writer.previous(key, body))
        effects = self._plan(key=key, body=body, desired=desired, memory=memory, looked_again=False)
        if isinstance(effects.command, fx.LookAgain):
            # Seen twice: only the hosts that see it, or cannot be seen (a fleet-wide probe
            # per doubt would read every host). Seen nowhere: every host.
            seen = [name for name, view in self.fleet.hypervisors.items()
                    if view.report is None or not view.report.reachable
                    or desired.domain in view.report.by_name]
            await self.probes.reprobe(*(seen or self.fleet.hypervisors))
            effects = self._plan(key=key, body=body, desired=desired,
                                 memory=Memory.from_status(self.writer.previous(key, body)),
                                 looked_again=True)
        if (desired.dry_run and isinstance(effects.command, fx.Validate)
                and Memory.from_status(self.writer.previous(key, body)).plan_generation
                == _generation(body)):
            # A dry run plans once per spec generation: the plan stands until the spec changes.
            return True
        return await self.carry_out(effects, key=key, body=body, desired=desired, stopped=stopped)

    def _plan(self, *, key: str, body: Any, desired: Desired, memory: Memory,
              looked_again: bool) -> fx.Effects:
        now = self.clock()
        avoid = {host: why for host, (until, why) in self._avoid.get(key, {}).items() if until > now}
        limiter = self.fleet.limiter
        action = reconcile.decide(
            key=key, created=str(body["metadata"].get("creationTimestamp") or ""),
            desired=desired, memory=memory, hypervisors=self.fleet.hypervisors,
            claims=self.fleet.claims.on(desired.domain), in_flight=limiter.in_flight, now=now,
            avoid=avoid, hint=rebalance_hint(body, now=now))
        if isinstance(action, reconcile.Migrate):
            found = self.fleet.hypervisors.get(action.source)
            sizes = [d.memory_bytes for d in (found.report.by_name.get(desired.domain, ())
                                              if found and found.report else ())]
            admission = limiter.why_not(source=action.source, target=action.target,
                                        hypervisors=self.fleet.hypervisors, key=key,
                                        cost=max(sizes, default=0))
        else:
            # Not asking for a slot (any more): a stale place in the queue would hold back others.
            limiter.forget(key)
            admission = None
        log.debug("%s: %s -> %s", key, memory, action,
                  extra={"vmmigration": key, "domain": desired.domain})
        return fx.plan(action, desired=desired, memory=memory, hypervisors=self.fleet.hypervisors,
                       admission=admission, looked_again=looked_again)

    async def carry_out(self, effects: fx.Effects, *, key: str, body: Any,
                        desired: Desired | None, stopped: Stopped) -> bool:
        """Carry out one Effects, then the command's outcome in turn; True when idle."""
        command = effects.command
        holds = isinstance(command, (fx.Validate, fx.Start)) and not self.fleet.limiter.holds(key)
        if holds:
            # Taken before the first await, so no other loop can take the same slot.
            assert isinstance(command, (fx.Validate, fx.Start))
            self.fleet.limiter.hold(key, source=command.source, target=command.target)
            # Bigger moves queued behind this one may fit in a slot still free.
            self.fleet.wake_queued()
        try:
            while True:
                await self._apply(effects, key=key, body=body)
                command = effects.command
                if desired is None or not isinstance(command, (fx.Validate, fx.Start)):
                    return effects.idle
                if isinstance(command, fx.Validate):
                    effects = await self.driver.validate(command, desired=desired,
                                                         generation=_generation(body))
                    continue

                # A job runs as the spec it was started for says, whatever a newer
                # generation asks: the status claims no generation the job does not follow.
                job_generation = (command.generation if command.plan is not None
                                  else _observed(self.writer.previous(key, body)))

                async def progressed(update: fx.Effects) -> None:
                    await self.writer.write(key, body, update, now=self.clock())

                ended = await self.driver.run(command, key=key, body=body, desired=desired,
                                              stopped=stopped, progressed=progressed,
                                              generation=job_generation)
                if ended is None:  # left running for the next operator
                    return False
                effects = ended
        finally:
            if holds:
                self.fleet.free(key)

    async def _apply(self, effects: fx.Effects, *, key: str, body: Any) -> None:
        """Everything but the command: re-probes, the one status write, Events, metric flags."""
        if effects.queued is True:
            self.fleet.limiter.queue(key)
        elif effects.queued is False:
            self.fleet.limiter.forget(key)
        if effects.avoid is not None:
            host, why = effects.avoid
            self._avoid.setdefault(key, {})[host] = (self.clock() + self.settings.retry_max_seconds, why)
        if effects.phase is not None:
            blocked = any(c.type == "Blocked" and c.status for c in effects.conditions)
            if (effects.phase in (Phase.PLACED, Phase.DISPLACED) and effects.command is None
                    and not blocked):
                self._settled.add(key)
            else:
                self._settled.discard(key)
        if effects.failed is not None:
            self.metrics.set_failed(key, failed=effects.failed)
        if effects.drifted is not None:
            self.metrics.set_drift(key, drifted=effects.drifted)
        await self.writer.write(key, body, effects, now=self.clock())
        if effects.reprobe:
            # After the write: the status tells what libvirt said of this move, and the
            # re-probe (about 0.4 s for two hosts) only has to be done before the next
            # decision, which comes after this returns.
            await self.probes.reprobe(*effects.reprobe)
        for event in effects.events:
            self.post_event(body, type=event.type, reason=event.reason, message=event.message)


def _generation(body: Any) -> int:
    return int(body["metadata"].get("generation") or 0)


def _domain(body: Any) -> str | None:
    """The spec's domain for a log line's fields, from a spec that may not even parse."""
    spec = body.get("spec")
    domain = spec.get("domain") if isinstance(spec, Mapping) else None
    return domain if isinstance(domain, str) else None


def _observed(stored: Any) -> int | None:
    value = stored.get("observedGeneration") if hasattr(stored, "get") else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _wait_for(waker: asyncio.Event, stopped: Stopped, *, timeout: float | None) -> None:
    """Until woken, stopped, or the timeout; no polling, so a thousand idle loops cost nothing."""
    tasks = {asyncio.ensure_future(waker.wait()), asyncio.ensure_future(stopped.until_stopped())}
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
