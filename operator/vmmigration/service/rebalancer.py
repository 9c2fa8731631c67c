"""Rebalancing of each HypervisorPool, run after a probe of the pool's first host.

:func:`vmmigration.core.rebalance.plan_rebalance` decides from the loads the
fleet's probes measured and the VMMigrations read from the API server. A
planned move is carried out by annotating the VMMigration with the host to go
to (:data:`~vmmigration.core.rebalance.REBALANCE_ANNOTATION`): the user's spec
is never rewritten (GitOps would fight it), and the VM's own loop moves it
through the same pre-checks, slots and safety as any other move.

Why after a host's probe, not a timer of its own on the HypervisorPool: a
kopf timer puts a finalizer on every pool, which would stay Terminating once
the operator is uninstalled; the probe timers already run only on the
replica that peering made active, and the loads are freshest right after one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from vmmigration.core import status as statuses
from vmmigration.core.memory import parse_timestamp
from vmmigration.core.pools import pool_of
from vmmigration.core.rebalance import (
    REBALANCE_ANNOTATION,
    Movable,
    loads,
    hint_value,
    parse_hint,
    parse_pool,
    plan_rebalance,
    pool_status,
    recent_moves_from,
)
from vmmigration.core.spec import Phase, PlacementMode, SpecError, parse_vmmigration
from vmmigration.service.fleet import Fleet
from vmmigration.service.ports import EventPoster, Kube, Metrics

log = logging.getLogger(__name__)


class Rebalancer:
    def __init__(self, *, fleet: Fleet, kube: Kube, post_event: EventPoster, metrics: Metrics,
                 clock: Callable[[], float]) -> None:
        self.fleet = fleet
        self.kube = kube
        self.post_event = post_event
        self.metrics = metrics
        self.clock = clock
        self._seen: set[str] = set()

    def leads(self, host: str) -> str | None:
        """The pool whose rebalancing runs after ``host``'s probe: its first member by name."""
        view = self.fleet.hypervisors.get(host)
        if view is None:
            return None
        pool = pool_of(view.spec)
        if pool is None:
            return None  # the default pool has no HypervisorPool object to opt in with
        first = min(n for n, v in self.fleet.hypervisors.items() if pool_of(v.spec) == pool)
        return pool if first == host else None

    async def after_probe(self, host: str) -> None:
        name = self.leads(host)
        if name is None:
            return
        pools = await asyncio.to_thread(self.kube.list_hypervisor_pools)
        found = next((p for p in pools if (p.get("metadata") or {}).get("name") == name), None)
        if found is None:
            self.metrics.pool(name, spread_ratio=None, threshold_ratio=None)
            return
        await self.pass_once(found)

    async def pass_once(self, pool: Mapping[str, Any]) -> None:
        meta = pool.get("metadata") or {}
        name = str(meta.get("name"))
        previous = dict(pool.get("status") or {})
        try:
            spec = parse_pool(name=name, spec=pool.get("spec") or {})
        except SpecError as error:
            log.error("HypervisorPool %s is ignored: %s", name, error)
            return
        policy = spec.rebalance
        now = self.clock()
        members = {n: v for n, v in self.fleet.hypervisors.items() if pool_of(v.spec) == name}
        hosts = loads(hypervisors=members, capacity={})
        listed = await asyncio.to_thread(self.kube.list_vmmigrations)
        movable, busy, settled = self._read(listed, pool=name, members=members, now=now)
        recent = list(recent_moves_from(previous, now=now))
        plan = plan_rebalance(policy=policy, hosts=hosts, movable=movable, recent_moves=recent,
                              now=now, draining=any(v.spec.maintenance for v in members.values()),
                              busy=busy)
        acting = policy.enabled and not policy.dry_run and plan.moves and not busy
        if acting:
            for move in plan.moves:
                namespace, vmm = move.key.split("/", 1)
                await asyncio.to_thread(
                    self.kube.patch_vmmigration_annotations, namespace=namespace, name=vmm,
                    annotations={REBALANCE_ANNOTATION: hint_value(target=move.target, pool=name, now=now)})
                recent.append(now)
                self.post_event(pool, type="Normal", reason="Rebalancing",
                                message=f"moving {move.domain} ({move.key}): {move.why}")
                log.info("pool %s: moving %s: %s", name, move.domain, move.why)
            self.metrics.rebalanced(name, moves=len(plan.moves))
        elif plan.moves and policy.dry_run and _planned(previous) != [m.key for m in plan.moves]:
            self.post_event(pool, type="Normal", reason="RebalancePlanned",
                            message="dry run: would move " + "; ".join(
                                f"{m.domain}: {m.why}" for m in plan.moves)[:1000])
        for key in settled:
            # There, or too old to be obeyed: the hint must not steer a later pass.
            namespace, vmm = key.split("/", 1)
            await asyncio.to_thread(self.kube.patch_vmmigration_annotations, namespace=namespace,
                                    name=vmm, annotations={REBALANCE_ANNOTATION: None})
        new = pool_status(plan=plan, previous=previous, recent_moves=recent, now=now,
                          dry_run=policy.dry_run, generation=_generation(meta))
        patch = statuses.merge_patch(previous, new)
        if patch:
            await asyncio.to_thread(self.kube.patch_pool_status, name=name, patch=patch)
            self.metrics.status_patched("hypervisorpools")
        self.metrics.pool(name, spread_ratio=plan.spread_before / 100.0,
                          threshold_ratio=policy.threshold_percent / 100.0 if policy.enabled else None)

    def _read(self, listed: list[Mapping[str, Any]], *, pool: str, members: Mapping[str, Any],
              now: float) -> tuple[list[Movable], bool, list[str]]:
        """The VMs rebalancing may move, whether its earlier moves still run, and the
        VMMigrations whose hint has served (or expired)."""
        movable: list[Movable] = []
        busy = False
        settled: list[str] = []
        for item in listed:
            meta = item.get("metadata") or {}
            status = item.get("status") or {}
            key = f"{meta.get('namespace')}/{meta.get('name')}"
            annotations = meta.get("annotations") or {}
            raw_hint = annotations.get(REBALANCE_ANNOTATION) if isinstance(annotations, Mapping) else None
            current = status.get("currentHypervisor")
            phase = status.get("phase")
            if raw_hint is not None:
                hint = parse_hint(raw_hint, now=now)
                if hint is None or (hint == current and phase == Phase.PLACED.value):
                    settled.append(key)
                elif current in members or hint in members:
                    busy = True  # one of ours, on its way
                continue
            try:
                desired = parse_vmmigration(item.get("spec"))
            except SpecError:
                continue
            if (desired.selector is None or desired.placement is not PlacementMode.CONTINUOUS
                    or phase != Phase.PLACED.value or not isinstance(current, str)
                    or current not in members or desired.abort or desired.dry_run):
                continue
            report = members[current].report
            sizes = [d.memory_bytes for d in (report.by_name.get(desired.domain, ()) if report else ())
                     if d.active]
            if not sizes:
                continue
            movable.append(Movable(key=key, domain=desired.domain, host=current, memory_bytes=max(sizes),
                                   selector=desired.selector,
                                   last_moved_at=parse_timestamp(status.get("completionTime"))))
        return movable, busy, settled


def _planned(previous: Mapping[str, Any]) -> list[str]:
    shown = previous.get("plan")
    if not isinstance(shown, list):
        return []
    return [str(m.get("vmmigration")) for m in shown if isinstance(m, Mapping)]


def _generation(meta: Mapping[str, Any]) -> int | None:
    value = meta.get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
