"""Pure: what ``vmmigration drain``, ``undrain``, ``pool`` and ``get pools`` make of the API's objects.

``drain`` puts a Hypervisor into maintenance and follows ``status.drain`` until
the Drained condition is True; ``undrain`` clears maintenance and waits for the
VMs that were displaced to come home; ``pool`` shows a HypervisorPool's
balance. Everything here reads the objects as the API returns them, defensively
(a status can be anything a hand edit left there), and says in words where
things stand. The commands in ``vmmigration.cli`` only poll and print.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from vmmigration.core import units
from vmmigration.core.drain import DRAINED_FROM_LABEL
from vmmigration.core.memory import parse_timestamp
from vmmigration.core.moves import condition_of, get, section
from vmmigration.core.rebalance import RebalancePolicy
from vmmigration.core.spec import Phase

# The phases in which a move is under way (what ``status.drain.moving`` counts).
MOVING_PHASES = (Phase.VALIDATING.value, Phase.MIGRATING.value)
# HypervisorPool's spec.rebalance, where the object leaves a field out.
DEFAULTS = RebalancePolicy()
# The width of a load bar: a character per 5 %.
BAR_WIDTH = 20


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> int:
    return max(0, int(value)) if _number(value) else 0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def seen(obj: Mapping[str, Any], condition: Mapping[str, Any] | None = None) -> bool:
    """Whether the operator has seen the object's latest spec (its generation).

    A status computed from an older spec says nothing about the newer one: right
    after ``maintenance: true`` a Drained condition can still be the previous
    drain's. The condition's own observedGeneration is preferred to the status's.
    """
    generation = get(obj, "metadata", "generation")
    if not _number(generation):
        return True
    observed = (condition or {}).get("observedGeneration")
    if not _number(observed):
        observed = get(obj, "status", "observedGeneration")
    return _number(observed) and observed >= generation


def waiting_for_generation(obj: Mapping[str, Any]) -> str:
    return f"waiting for the operator to see generation {get(obj, 'metadata', 'generation')}"


# ---- drain ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Blocker:
    domain: str
    reason: str
    message: str = ""

    def __str__(self) -> str:
        return f"{self.domain}: {self.reason}" + (f": {self.message}" if self.message else "")


@dataclasses.dataclass(frozen=True)
class Drain:
    """A Hypervisor's ``status.drain``, read defensively: missing counts are 0."""

    state: str | None = None  # Draining, Drained or Cancelled; None when no drain is shown
    total: int = 0
    moved: int = 0
    moving: int = 0
    queued: int = 0
    failed: int = 0
    blocked: int = 0
    blockers: tuple[Blocker, ...] = ()
    start: float | None = None
    completion: float | None = None
    last_progress: float | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.moved)

    @property
    def fraction(self) -> float:
        """0 to 1: the share of the drain's domains that have left (1 when there were none)."""
        return min(1.0, self.moved / self.total) if self.total else 1.0

    def counts(self) -> str:
        """``3/5 moved · 1 moving · 0 queued · 0 failed · 1 blocked``."""
        return (f"{self.moved}/{self.total} moved · {self.moving} moving · {self.queued} queued · "
                f"{self.failed} failed · {self.blocked} blocked")

    def blockers_text(self) -> str:
        """``blocked by db-1 (Excluded), web-3 (NoEligibleTarget)``; empty when nothing blocks."""
        if not self.blockers:
            return ""
        named = ", ".join(f"{b.domain} ({b.reason})" for b in self.blockers)
        more = self.blocked - len(self.blockers)
        return f"blocked by {named}" + (f" and {more} more" if more > 0 else "")


def drain_of(obj: Mapping[str, Any]) -> Drain:
    """The drain a Hypervisor's status shows (an empty one when it shows none)."""
    body = section(obj, "status", "drain")
    if not body:
        return Drain()
    blockers = []
    raw = body.get("blockers")
    for item in raw if isinstance(raw, list) else ():
        if isinstance(item, Mapping) and item.get("domain"):
            blockers.append(Blocker(domain=str(item["domain"]), reason=str(item.get("reason") or "Blocked"),
                                    message=str(item.get("message") or "")))
    state = body.get("state")
    return Drain(
        state=str(state) if state else None,
        total=_count(body.get("total")), moved=_count(body.get("moved")),
        moving=_count(body.get("moving")), queued=_count(body.get("queued")),
        failed=_count(body.get("failed")), blocked=max(_count(body.get("blocked")), len(blockers)),
        blockers=tuple(blockers),
        start=parse_timestamp(body.get("startTime")),
        completion=parse_timestamp(body.get("completionTime")),
        last_progress=parse_timestamp(body.get("lastProgressTime")))


class DrainEnding(enum.Enum):
    DRAINED = "drained"  # the Drained condition is True: nothing is left on the host
    CANCELLED = "cancelled"  # maintenance was cleared before the host was empty


@dataclasses.dataclass(frozen=True)
class DrainVerdict:
    ending: DrainEnding | None  # None: not over yet
    line: str  # where the drain stands, in one line
    drain: Drain
    message: str = ""  # the Drained condition's message, when it says something the counts do not


def drain_verdict(obj: Mapping[str, Any], *, now: float) -> DrainVerdict:
    """Whether the drain of this Hypervisor is over, and a line saying where it stands."""
    drain = drain_of(obj)
    drained = condition_of(section(obj, "status"), "Drained")
    message = str((drained or {}).get("message") or "")
    if not seen(obj, drained):
        return DrainVerdict(None, waiting_for_generation(obj), drain)
    if get(obj, "spec", "maintenance") is not True:
        return DrainVerdict(DrainEnding.CANCELLED,
                            "maintenance was cleared: the drain is cancelled"
                            + (f" ({drain.counts()})" if drain.state else ""), drain, message)
    if drained is not None and drained.get("status") == "True":
        took = ""
        if drain.start is not None:
            took = f" in {units.duration(max(0.0, (drain.completion or now) - drain.start))}"
        moved = f": {_plural(drain.moved, 'domain')} moved{took}" if drain.state else ""
        return DrainVerdict(DrainEnding.DRAINED, "drained" + moved, drain, message)
    if not drain.state:
        return DrainVerdict(None, "waiting for the operator to start the drain"
                            + (f": {message}" if message else ""), drain, message)
    reason = str((drained or {}).get("reason") or drain.state)
    line = f"{reason}: {drain.counts()}"
    if drain.blockers:
        line += f"; {drain.blockers_text()}"
    return DrainVerdict(None, line, drain, message)


def stuck_lines(obj: Mapping[str, Any], *, now: float) -> list[str]:
    """What still keeps the host from emptying, when a wait gives up: one line per cause."""
    name = get(obj, "metadata", "name")
    drain = drain_of(obj)
    drained = condition_of(section(obj, "status"), "Drained")
    if not seen(obj, drained):
        return [f"{name}: the operator has not seen the maintenance yet (is it running?)"]
    if not drain.state:
        message = str((drained or {}).get("message") or "")
        return [f"{name}: no drain shown in status" + (f"; {message}" if message else "")]
    lines = [f"{name}: {_plural(drain.remaining, 'domain')} left: {drain.moving} moving, "
             f"{drain.queued} queued, {drain.failed} failed, {drain.blocked} blocked"]
    since = drain.last_progress or drain.start
    if since is not None:
        lines.append(f"no domain has left {name} for {units.duration(max(0.0, now - since))}")
    lines += [f"blocked: {blocker}" for blocker in drain.blockers]
    if drain.blocked > len(drain.blockers):
        lines.append(f"blocked: {drain.blocked - len(drain.blockers)} more (the status names 20 at most)")
    if drain.failed:
        lines.append(f"{_plural(drain.failed, 'move')} failed and will be retried: "
                     f"kubectl get vmm -A -l {DRAINED_FROM_LABEL}={name} shows why")
    return lines


# ---- undrain -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Displacement:
    """A VM pinned to a host in maintenance, running elsewhere until it ends."""

    domain: str
    vmmigration: str  # namespace/name
    runs_on: str = ""


def displaced_of(obj: Mapping[str, Any]) -> list[Displacement]:
    """A Hypervisor's ``status.displaced``."""
    raw = get(obj, "status", "displaced")
    found = []
    for item in raw if isinstance(raw, list) else ():
        if isinstance(item, Mapping) and item.get("vmmigration"):
            found.append(Displacement(domain=str(item.get("domain") or "?"),
                                      vmmigration=str(item["vmmigration"]),
                                      runs_on=str(item.get("runsOn") or "")))
    return found


@dataclasses.dataclass(frozen=True)
class Returning:
    """A displaced VM not yet home: where it is and what its VMMigration does."""

    vmmigration: str
    domain: str
    stage: str

    def __str__(self) -> str:
        return f"{self.vmmigration} ({self.domain}): {self.stage}"


@dataclasses.dataclass(frozen=True)
class UndrainVerdict:
    done: bool
    line: str
    returning: tuple[Returning, ...] = ()
    back: tuple[str, ...] = ()  # namespace/name of the VMs that are home
    stays: tuple[str, ...] = ()  # VMs that will not come back (target changed, object deleted), and why
    moving: int = 0  # the drain's own moves still under way
    again: bool = False  # the host went back into maintenance: waiting is pointless


def _stage(status: Mapping[str, Any]) -> str:
    phase = str(status.get("phase") or "Pending")
    where = status.get("currentHypervisor")
    text = phase
    if phase == Phase.MIGRATING.value and _number(get(status, "progress", "percent")):
        text += f" {float(status['progress']['percent']):.0f}%"
    for kind in ("Blocked", "Queued"):
        condition = condition_of(status, kind)
        if condition and condition.get("status") == "True" and condition.get("reason"):
            text += f": {condition['reason']}"
            break
    return f"on {where}, {text}" if where else text


def undrain_verdict(obj: Mapping[str, Any], *, expected: Iterable[Displacement],
                    vmmigrations: Mapping[str, Mapping[str, Any] | None] | None,
                    drain_moving: int | None) -> UndrainVerdict:
    """Whether a host out of maintenance has its displaced VMs back and its drain's moves ended.

    ``expected`` are the displaced VMs known when maintenance was cleared (the
    status may forget them as soon as it ends); ``vmmigrations`` maps each
    namespace/name of those and of ``status.displaced`` to the object as read
    now (None: deleted), or is None when they could not be read, and then the
    status alone is believed. ``drain_moving`` is how many of the VMMigrations
    the drain made are still moving (None: unknown, ``status.drain.moving`` counts).
    """
    name = str(get(obj, "metadata", "name"))
    if not seen(obj):
        return UndrainVerdict(False, waiting_for_generation(obj))
    if get(obj, "spec", "maintenance") is True:
        return UndrainVerdict(False, "in maintenance again", again=True)
    listed = displaced_of(obj)
    wanted = {d.vmmigration: d for d in (*expected, *listed)}
    returning: list[Returning] = []
    back: list[str] = []
    stays: list[str] = []
    if vmmigrations is None:
        now_listed = {d.vmmigration for d in listed}
        for key, d in wanted.items():
            if key in now_listed:
                returning.append(Returning(key, d.domain, f"on {d.runs_on}" if d.runs_on else "displaced"))
            else:
                back.append(key)
    else:
        for key, d in wanted.items():
            vmm = vmmigrations.get(key)
            if vmm is None:
                stays.append(f"{key}: deleted")
                continue
            status = section(vmm, "status")
            target = get(vmm, "spec", "targetHypervisor")
            if target != name:
                stays.append(f"{key}: its target is now {target or _selector_or_none(vmm)}")
            elif status.get("currentHypervisor") == name and status.get("phase") == Phase.PLACED.value:
                back.append(key)
            else:
                returning.append(Returning(key, str(get(vmm, "spec", "domain") or d.domain), _stage(status)))
    drain = drain_of(obj)
    moving = drain_moving if drain_moving is not None else (drain.moving if drain.state != "Drained" else 0)
    done = not returning and moving == 0
    if done:
        line = "out of maintenance" + (f"; {_plural(len(back), 'VM')} back" if back else "")
    else:
        parts = []
        if returning:
            parts.append(f"{_plural(len(returning), 'VM')} on the way back: "
                         + "; ".join(str(r) for r in returning))
        if moving:
            parts.append(f"{moving} of the drain's moves still running")
        line = "; ".join(parts)
    return UndrainVerdict(done, line, tuple(returning), tuple(back), tuple(stays), moving)


def _selector_or_none(vmm: Mapping[str, Any]) -> str:
    return "a selector" if get(vmm, "spec", "targetSelector") else "none"


def drain_moves_running(items: Iterable[Mapping[str, Any]]) -> int:
    """How many of the VMMigrations a drain made are migrating (or validating) now."""
    return sum(1 for i in items if get(i, "status", "phase") in MOVING_PHASES)


# ---- pools ---------------------------------------------------------------------------


POOL_COLUMNS = ("NAME", "HOSTS", "SPREAD", "THRESHOLD", "BALANCED", "REBALANCE", "PLANNED", "LAST", "AGE")
HOST_COLUMNS = ("HOST", "LOAD", "USED", "CAPACITY", "VMS", "NOTE")


@dataclasses.dataclass(frozen=True)
class PoolHost:
    name: str
    load_percent: float | None
    used_bytes: int | None
    capacity_bytes: int | None
    vms: int | None
    eligible: bool = True  # takes part in the spread (not in maintenance, probed, …)
    message: str = ""  # why not


@dataclasses.dataclass(frozen=True)
class PlannedMove:
    vmmigration: str
    domain: str
    source: str
    target: str
    memory_bytes: int | None = None
    # The loads of the two hosts before and after it, in percent, when the status has them.
    load_before: tuple[float, float] | None = None
    load_after: tuple[float, float] | None = None
    why: str = ""

    def __str__(self) -> str:
        """The operator's why names the domain, its size and the load figures; else they are made up here."""
        if self.why:
            return f"{self.vmmigration}: {self.why}"
        size = f", {units.size(self.memory_bytes)}" if self.memory_bytes is not None else ""
        text = f"{self.vmmigration} ({self.domain}{size}): {self.source} → {self.target}"
        if self.load_before is not None:
            (source, target) = self.load_before
            text += f" ({self.source} {_percent(source)}, {self.target} {_percent(target)}"
            if self.load_after is not None:
                text += f"; then {_percent(self.load_after[0])} and {_percent(self.load_after[1])}"
            text += ")"
        return text


@dataclasses.dataclass(frozen=True)
class Pool:
    """A HypervisorPool, read defensively, with the defaults of its spec filled in."""

    name: str
    enabled: bool = DEFAULTS.enabled
    dry_run: bool = DEFAULTS.dry_run
    threshold_percent: float = DEFAULTS.threshold_percent
    target_percent: float = DEFAULTS.target_percent
    cooldown_seconds: float = DEFAULTS.cooldown_seconds
    max_moves_per_hour: int = DEFAULTS.max_moves_per_hour
    spread_percent: float | None = None
    balanced: str | None = None  # the Balanced condition's status
    reason: str | None = None
    message: str = ""
    hosts: tuple[PoolHost, ...] = ()
    plan: tuple[PlannedMove, ...] = ()
    recent_moves: int = 0
    last_rebalance: float | None = None
    created: float | None = None

    @property
    def rebalancing(self) -> str:
        """``on``, ``dry run`` (plans and shows, moves nothing) or ``off``."""
        if not self.enabled:
            return "off"
        return "dry run" if self.dry_run else "on"


def _int_or_none(value: Any) -> int | None:
    return int(value) if _number(value) else None


def _pair(value: Any) -> tuple[float, float] | None:
    """``{"from": 75.0, "to": 25.0}`` as (75.0, 25.0); None unless both are numbers."""
    source, target = get(value, "from"), get(value, "to")
    return (float(source), float(target)) if _number(source) and _number(target) else None


def pool_of_object(obj: Mapping[str, Any]) -> Pool:
    """A HypervisorPool object as the CLI shows it."""
    policy = section(obj, "spec", "rebalance")
    status = section(obj, "status")
    balanced = condition_of(status, "Balanced")
    hosts = []
    raw = status.get("hosts")
    for item in raw if isinstance(raw, list) else ():
        if isinstance(item, Mapping) and item.get("name"):
            load = item.get("loadPercent")
            hosts.append(PoolHost(name=str(item["name"]), load_percent=float(load) if _number(load) else None,
                                  used_bytes=_int_or_none(item.get("usedBytes")),
                                  capacity_bytes=_int_or_none(item.get("capacityBytes")),
                                  vms=_int_or_none(item.get("vms")), eligible=item.get("eligible") is not False,
                                  message=str(item.get("message") or "")))
    plan = []
    raw = status.get("plan")
    for item in raw if isinstance(raw, list) else ():
        if isinstance(item, Mapping):
            plan.append(PlannedMove(vmmigration=str(item.get("vmmigration") or "?"),
                                    domain=str(item.get("domain") or "?"),
                                    source=str(item.get("from") or "?"), target=str(item.get("to") or "?"),
                                    memory_bytes=_int_or_none(item.get("memoryBytes")),
                                    load_before=_pair(item.get("loadBefore")),
                                    load_after=_pair(item.get("loadAfter")),
                                    why=str(item.get("why") or "")))
    recent = status.get("recentMoves")
    spread = status.get("spreadPercent")

    def number(field: str, default: float) -> float:
        value = policy.get(field)
        return float(value) if _number(value) else default

    return Pool(
        name=str(get(obj, "metadata", "name")),
        enabled=policy.get("enabled") is True,
        dry_run=policy.get("dryRun") is True,
        threshold_percent=number("thresholdPercent", DEFAULTS.threshold_percent),
        target_percent=number("targetPercent", DEFAULTS.target_percent),
        cooldown_seconds=number("cooldownSeconds", DEFAULTS.cooldown_seconds),
        max_moves_per_hour=int(number("maxMovesPerHour", DEFAULTS.max_moves_per_hour)),
        spread_percent=float(spread) if _number(spread) else None,
        balanced=str(balanced.get("status")) if balanced and balanced.get("status") else None,
        reason=str(balanced.get("reason")) if balanced and balanced.get("reason") else None,
        message=str((balanced or {}).get("message") or ""),
        hosts=tuple(sorted(hosts, key=lambda h: (-(h.load_percent or 0.0), h.name))),
        plan=tuple(plan),
        recent_moves=len(recent) if isinstance(recent, list) else 0,
        last_rebalance=parse_timestamp(status.get("lastRebalanceTime")),
        created=parse_timestamp(get(obj, "metadata", "creationTimestamp")),
    )


def load_bar(percent: float | None, *, width: int = BAR_WIDTH) -> str:
    """``███████████████░░░░░``: a host's load, a character per 100/width percent (full above 100 %)."""
    if percent is None:
        return "?" * width
    filled = round(max(0.0, min(100.0, percent)) * width / 100)
    return "█" * filled + "░" * (width - filled)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%".replace(".0%", "%")


def _age(at: float | None, now: float) -> str:
    return "-" if at is None else units.age(now - at)


def pool_row(obj: Mapping[str, Any], *, now: float) -> list[str]:
    """One line of ``vmmigration get pools``."""
    pool = pool_of_object(obj)
    return [pool.name, str(len(pool.hosts)), _percent(pool.spread_percent), _percent(pool.threshold_percent),
            pool.reason or pool.balanced or "-", pool.rebalancing, str(len(pool.plan)),
            _age(pool.last_rebalance, now), _age(pool.created, now)]


def host_rows(pool: Pool) -> list[list[str]]:
    """The members, most loaded first: name, bar and percent, used, capacity, VMs, why one is left out."""
    return [[h.name, f"{load_bar(h.load_percent)} {_percent(h.load_percent).rjust(6)}",
             "-" if h.used_bytes is None else units.size(h.used_bytes),
             "-" if h.capacity_bytes is None or h.capacity_bytes <= 0 else units.size(h.capacity_bytes),
             "-" if h.vms is None else str(h.vms),
             "" if h.eligible else f"not counted: {h.message or 'not eligible'}"] for h in pool.hosts]


def pool_summary(pool: Pool, *, now: float) -> list[str]:
    """The lines above the members' table: balance against the threshold, and the policy."""
    spread = pool.spread_percent
    if spread is None:
        against = "spread not measured yet"
    elif spread > pool.threshold_percent:
        against = f"spread {_percent(spread)}, above the threshold of {_percent(pool.threshold_percent)}"
    else:
        against = f"spread {_percent(spread)}, within the threshold of {_percent(pool.threshold_percent)}"
    state = pool.reason or {"True": "Balanced", "False": "Imbalanced"}.get(pool.balanced or "", "Unknown")
    lines = [f"pool {pool.name}: {state}, {against}" + (f" ({pool.message})" if pool.message else "")]
    policy = {"off": "rebalancing off (spec.rebalance.enabled: false)",
              "dry run": "rebalancing in dry run: plans are shown, nothing is moved",
              "on": "rebalancing on"}[pool.rebalancing]
    if pool.enabled:
        policy += (f"; down to {_percent(pool.target_percent)}, at most {pool.max_moves_per_hour} moves "
                   f"an hour ({pool.recent_moves} in the last hour), a VM moved again after "
                   f"{units.duration(pool.cooldown_seconds)}")
        if pool.last_rebalance is not None:
            policy += f"; last rebalanced {units.age(now - pool.last_rebalance)} ago"
    lines.append(policy)
    return lines


def plan_lines(pool: Pool) -> list[str]:
    """The planned moves with their why, under a heading that says whether they will be made."""
    if not pool.plan:
        return ["no moves planned"]
    if not pool.enabled:
        heading = "moves planned last (rebalancing is off now: none will be made)"
    elif pool.dry_run:
        heading = "moves it would make (dry run: nothing is moved)"
    else:
        heading = "planned moves"
    return [f"{heading}:", *(f"  {move}" for move in pool.plan)]
