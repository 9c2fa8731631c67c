"""Pure: evening out the memory load of a pool's hosts, and the HypervisorPool's status.

A host's load is the memory of its active domains over its capacity
(``spec.capacity.memoryBytes``, else the probed total), in percent; a pool's
spread is the most loaded eligible host's load minus the least loaded one's,
in percentage points. When the spread exceeds ``thresholdPercent``,
:func:`plan_rebalance` plans moves of VMs placed by a selector, one at a
time on simulated loads, until the spread is at most ``targetPercent``.

Why no VM ping-pongs between hosts:

- every planned move strictly lowers the spread, or keeps it and strictly
  lowers the sum of the squared loads (two hosts tied at the top cannot both
  come down in one move). That pair only ever decreases along a plan, so a
  plan can never undo one of its own moves, and it ends;
- planning stops at ``targetPercent``, which must be below
  ``thresholdPercent``: a pool just rebalanced sits that many points inside
  the band, and a VM's memory changing a little does not start it again;
- a VM moved less than ``cooldownSeconds`` ago (by anyone: its VMMigration
  remembers when it last moved) is not moved again, whatever the loads say;
- at most ``maxMovesPerHour`` rebalancing moves start in any hour, pool-wide,
  and no new move is planned while earlier ones still run (the loads they
  leave behind are only known after a fresh probe).

Nothing is planned while a host of the pool is in maintenance: the drain
moves VMs around the pool, and both at once would fight over the same hosts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vmmigration.core.memory import parse_timestamp, timestamp
from vmmigration.core.model import GIB
from vmmigration.core.scheduling import HypervisorView
from vmmigration.core.spec import SpecError, Selector

# Moves counted against maxMovesPerHour: those started in this window.
WINDOW_SECONDS = 3600.0
# Another replica's clock may run a little ahead; a stamp further in the future
# than this is hand-edited junk, which would otherwise hold the budget forever.
CLOCK_SKEW_SECONDS = 300.0
# How a planned move reaches the VMMigration that carries it out.
REBALANCE_ANNOTATION = "vmmigration.dev/rebalance-to"
# A pool's name is the value of the label vmmigration.dev/pool on its hosts.
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
# Floating point: sums of byte ratios must not count rounding noise as progress.
EPSILON = 1e-6  # percentage points
# What a status keeps of the stored recentMoves at most (a hand edit could hold anything).
MAX_RECENT_MOVES = 1000
# The message shown on the condition: the API allows 32768 characters.
MAX_MESSAGE = 4000

DISABLED = "Disabled"
DRAIN_IN_PROGRESS = "DrainInProgress"
REBALANCING = "Rebalancing"
BALANCED = "Balanced"
IMBALANCED = "Imbalanced"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RebalancePolicy:
    enabled: bool = False  # opt-in: moving VMs nobody asked to move must be a decision
    dry_run: bool = False  # plan and show, move nothing
    threshold_percent: float = 20.0  # start when the spread exceeds this
    target_percent: float = 10.0  # plan until the spread is at most this (below the threshold)
    cooldown_seconds: float = 1800.0  # a VM moved less than this ago stays
    max_moves_per_hour: int = 6  # rebalancing moves started in any hour, pool-wide


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoolSpec:
    name: str
    rebalance: RebalancePolicy = RebalancePolicy()


@dataclasses.dataclass(frozen=True, kw_only=True)
class HostLoad:
    name: str
    used_bytes: int  # memory of the active domains
    capacity_bytes: int  # 0: unknown (never probed, and no capacity in the spec)
    vms: int  # active domains
    eligible: bool  # takes part in the spread and may send or receive moves
    why: str = ""  # why not eligible
    labels: tuple[tuple[str, str], ...] = ()  # the Hypervisor's: a VM's selector must match them

    @property
    def load_percent(self) -> float:
        if self.capacity_bytes <= 0:
            return 0.0
        return 100.0 * self.used_bytes / self.capacity_bytes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Movable:
    """A VM rebalancing may move: placed by a selector, phase Placed."""

    key: str  # namespace/name of its VMMigration
    domain: str
    host: str  # where it runs now
    memory_bytes: int
    selector: Selector
    last_moved_at: float | None  # epoch seconds of its last move by anyone; None: never


@dataclasses.dataclass(frozen=True, kw_only=True)
class Move:
    key: str
    domain: str
    source: str
    target: str
    memory_bytes: int
    why: str
    # The figures that justify it, in percent, on the loads simulated so far.
    source_before: float = 0.0
    target_before: float = 0.0
    source_after: float = 0.0
    target_after: float = 0.0
    spread_before: float = 0.0
    spread_after: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RebalancePlan:
    moves: tuple[Move, ...]
    spread_before: float  # percentage points, over the eligible hosts
    spread_after: float  # once the planned moves are done (the same without moves)
    loads: tuple[HostLoad, ...]  # as measured, before any move
    state: str  # Disabled, DrainInProgress, Rebalancing, Balanced or Imbalanced
    why: str
    # The spread is within the threshold: the Balanced condition's status,
    # whatever the state (a disabled pool can be balanced or not).
    balanced: bool = True


# ---------------------------------------------------------------------------
# The spec


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else f"{text[:80]}… ({len(text)} characters)"


def _flag(body: Mapping[str, Any], key: str, default: bool) -> bool:
    raw = body.get(key)
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise SpecError(f"spec.rebalance.{key} must be true or false, not {_shown(raw)}")
    return raw


def _number(body: Mapping[str, Any], key: str, default: float, *, low: float, high: float,
            low_open: bool = False) -> float:
    raw = body.get(key)
    if raw is None:
        return default
    # bool is an int to Python, never to the user.
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise SpecError(f"spec.rebalance.{key} must be a number, not {_shown(raw)}")
    try:
        number = float(raw)
    except OverflowError:
        raise SpecError(f"spec.rebalance.{key} is far too large: {_shown(raw)}") from None
    # NaN compares false with everything: a NaN threshold would never trigger nor settle.
    if not math.isfinite(number) or number > high or number < low or (low_open and number == low):
        bound = "above" if low_open else "at least"
        raise SpecError(f"spec.rebalance.{key} must be {bound} {low:g} and at most {high:g}, "
                        f"not {_shown(raw)}")
    return number


def _integer(body: Mapping[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    raw = body.get(key)
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(f"spec.rebalance.{key} must be an integer, not {_shown(raw)}")
    if not low <= raw <= high:
        raise SpecError(f"spec.rebalance.{key} must be between {low} and {high}, not {raw}")
    return raw


def parse_pool(*, name: str, spec: Mapping[str, Any]) -> PoolSpec:
    """A HypervisorPool's spec; the CRD's schema says the same, but an object may predate it."""
    if not isinstance(name, str) or not LABEL_VALUE.fullmatch(name):
        raise SpecError(f"metadata.name must be a label value (the pool label vmmigration.dev/pool "
                        f"of its Hypervisors): at most 63 letters, digits, - _ or ., not {_shown(name)}")
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec must be an object, not {_shown(spec)}")
    raw = spec.get("rebalance")
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise SpecError(f"spec.rebalance must be an object, not {_shown(raw)}")
    base = RebalancePolicy()
    threshold = _number(raw, "thresholdPercent", base.threshold_percent, low=0.0, high=100.0,
                        low_open=True)
    target = _number(raw, "targetPercent", base.target_percent, low=0.0, high=100.0)
    # Without the gap a pool just rebalanced sits on the edge, and the next
    # probe's noise starts it again.
    if target >= threshold:
        raise SpecError(f"spec.rebalance.targetPercent must be below thresholdPercent "
                        f"({target:g} is not below {threshold:g})")
    return PoolSpec(name=name, rebalance=RebalancePolicy(
        enabled=_flag(raw, "enabled", base.enabled),
        dry_run=_flag(raw, "dryRun", base.dry_run),
        threshold_percent=threshold,
        target_percent=target,
        cooldown_seconds=_number(raw, "cooldownSeconds", base.cooldown_seconds, low=0.0,
                                 high=7 * 86400.0),
        max_moves_per_hour=_integer(raw, "maxMovesPerHour", base.max_moves_per_hour, low=1, high=100),
    ))


# ---------------------------------------------------------------------------
# Loads and the plan


def loads(*, hypervisors: Mapping[str, HypervisorView],
          capacity: Mapping[str, int | None]) -> tuple[HostLoad, ...]:
    """Each host's load, by name; ``capacity`` overrides, then the spec's, then the probed total.

    An incoming migration's paused copy counts on its target: that memory is
    being filled there, and forgetting it could send a second VM into it.
    """
    result = []
    for name in sorted(hypervisors):
        view = hypervisors[name]
        report = view.report
        given = capacity.get(name)
        if given is None:
            given = view.spec.capacity_bytes
        probed = report.memory_total_bytes if report is not None and report.reachable else 0
        total = given if given is not None and given > 0 else probed
        if report is not None and report.reachable:
            active = [d for d in report.domains if d.active]
            used, vms = sum(d.memory_bytes for d in active), len(active)
        else:
            used, vms = 0, 0
        why = ""
        if report is None:
            why = f"{name} is not probed yet"
        elif not report.reachable:
            why = f"{name} is unreachable"
        elif view.spec.maintenance:
            why = f"{name} is in maintenance"
        elif total <= 0:
            why = f"{name} reports no memory and has no spec.capacity.memoryBytes"
        result.append(HostLoad(name=name, used_bytes=used, capacity_bytes=total, vms=vms,
                               eligible=not why, why=why, labels=view.spec.labels))
    return tuple(result)


def _percent(value: float) -> str:
    return f"{round(value, 1):g}"


def _size(memory_bytes: int) -> str:
    return f"{memory_bytes / GIB:.1f} GiB"


def _spread(percent: Mapping[str, float]) -> float:
    if len(percent) < 2:
        return 0.0
    return max(percent.values()) - min(percent.values())


def _squares(percent: Mapping[str, float]) -> float:
    return sum(p * p for p in percent.values())


def _cooling(vm: Movable, *, policy: RebalancePolicy, now: float) -> bool:
    # A stamp in the future (another clock) counts as just moved.
    return vm.last_moved_at is not None and now - vm.last_moved_at < policy.cooldown_seconds


def _stuck(*, hosts: Mapping[str, HostLoad], percent: Mapping[str, float], used: Mapping[str, int],
           candidates: Sequence[Movable], cooling: Sequence[Movable]) -> str:
    """Why no move lowers the spread, said about the most loaded host's VMs."""
    top = max(percent, key=lambda n: (percent[n], n))
    low = min(percent, key=lambda n: (percent[n], n))
    on_top = [vm for vm in candidates if vm.host == top]
    reasons = []
    if not on_top:
        cooled = sorted(vm.domain for vm in cooling if vm.host == top)
        if cooled:
            more = f" and {len(cooled) - 5} more" if len(cooled) > 5 else ""
            reasons.append(f"the VMs on {top} that rebalancing may move moved less than the "
                           f"cooldown ago ({', '.join(cooled[:5])}{more})")
        else:
            reasons.append(f"no VM on {top} may be moved (only VMs placed by a targetSelector, "
                           f"phase Placed, are)")
    target = hosts[low]
    labels = dict(target.labels)
    for vm in on_top[:5]:
        if not vm.selector.matches(labels):
            reasons.append(f"{vm.domain}'s selector ({vm.selector}) does not match {low}")
        elif used[low] + vm.memory_bytes > target.capacity_bytes:
            reasons.append(f"{vm.domain} ({_size(vm.memory_bytes)}) does not fit on {low}")
        else:
            reasons.append(f"moving {vm.domain} ({_size(vm.memory_bytes)}) would not lower the spread")
    return "; ".join(reasons)


def plan_rebalance(*, policy: RebalancePolicy, hosts: Sequence[HostLoad], movable: Sequence[Movable],
                   recent_moves: Sequence[float], now: float, draining: bool, busy: bool) -> RebalancePlan:
    """The moves that even out the pool, and the state to show (see the module's docstring).

    ``recent_moves`` are the start times of rebalancing moves (their count in
    the last hour is spent budget); ``draining``: a host of the pool is in
    maintenance; ``busy``: moves planned earlier are still running. A dry run
    plans the same moves: the caller does not carry them out.
    """
    # A capacity of 0 makes no load: such a host can neither send nor receive.
    eligible = {h.name: h for h in hosts if h.eligible and h.capacity_bytes > 0}
    percent = {name: h.load_percent for name, h in eligible.items()}
    spread = _spread(percent)
    balanced = spread <= policy.threshold_percent + EPSILON
    figures = (f"spread {_percent(spread)} points over {len(eligible)} eligible hosts, "
               f"threshold {_percent(policy.threshold_percent)}")

    def plan(state: str, why: str, moves: tuple[Move, ...] = (), after: float = spread) -> RebalancePlan:
        return RebalancePlan(moves=moves, spread_before=spread, spread_after=after, loads=tuple(hosts),
                             state=state, why=why, balanced=balanced)

    if not policy.enabled:
        return plan(DISABLED, f"rebalancing is off (spec.rebalance.enabled); {figures}")
    if draining:
        return plan(DRAIN_IN_PROGRESS, f"a host of the pool is in maintenance: no rebalancing "
                                       f"during a drain; {figures}")
    if busy:
        return plan(REBALANCING, f"rebalancing moves are still running: waiting for them and a "
                                 f"fresh probe before planning more; {figures}")
    if len(eligible) < 2:
        return plan(BALANCED, f"fewer than two eligible hosts, nothing to even out; {figures}")
    if balanced:
        return plan(BALANCED, figures)

    started = sum(1 for t in recent_moves if t > now - WINDOW_SECONDS)
    budget = policy.max_moves_per_hour - started
    if budget <= 0:
        return plan(IMBALANCED, f"{figures}; the hourly budget is spent ({started} rebalancing moves "
                                f"started in the last hour, maxMovesPerHour {policy.max_moves_per_hour})")

    on_pool = [vm for vm in movable if vm.host in eligible]
    cooling = [vm for vm in on_pool if _cooling(vm, policy=policy, now=now)]
    candidates = [vm for vm in on_pool if not _cooling(vm, policy=policy, now=now)]
    used = {name: h.used_bytes for name, h in eligible.items()}
    moved: set[str] = set()
    moves: list[Move] = []
    stop = ""
    while True:
        current = _spread(percent)
        if current <= policy.target_percent + EPSILON:
            stop = f"within the target of {_percent(policy.target_percent)} points"
            break
        if len(moves) >= budget:
            stop = f"the hourly budget (maxMovesPerHour {policy.max_moves_per_hour}) is spent"
            break
        squares = _squares(percent)
        best: tuple[tuple[float, float, int, str, str], Movable, str, dict[str, float]] | None = None
        for vm in candidates:
            if vm.key in moved:  # never twice in one plan
                continue
            for name, host in eligible.items():
                # Only downhill: a move to a host at least as loaded never helps.
                if percent[name] >= percent[vm.host] or not vm.selector.matches(dict(host.labels)):
                    continue
                if used[name] + vm.memory_bytes > host.capacity_bytes:
                    continue
                trial = dict(percent)
                trial[vm.host] = 100.0 * (used[vm.host] - vm.memory_bytes) / eligible[vm.host].capacity_bytes
                trial[name] = 100.0 * (used[name] + vm.memory_bytes) / host.capacity_bytes
                after, after_squares = _spread(trial), _squares(trial)
                lower = after < current - EPSILON or (
                    after <= current + EPSILON and after_squares < squares - EPSILON)
                if not lower:
                    continue
                # The lowest spread wins; then the evenest loads, then the cheaper move.
                rank = (round(after, 6), round(after_squares, 6), vm.memory_bytes, vm.key, name)
                if best is None or rank < best[0]:
                    best = (rank, vm, name, trial)
        if best is None:
            stop = "no further move lowers the spread"
            break
        _, vm, target, trial = best
        after = _spread(trial)
        moves.append(Move(
            key=vm.key, domain=vm.domain, source=vm.host, target=target, memory_bytes=vm.memory_bytes,
            why=(f"{vm.domain} ({_size(vm.memory_bytes)}): {vm.host} {_percent(percent[vm.host])}% → "
                 f"{target} {_percent(percent[target])}%, then {_percent(trial[vm.host])}% and "
                 f"{_percent(trial[target])}%: spread {_percent(current)} → {_percent(after)} points"),
            source_before=percent[vm.host], target_before=percent[target],
            source_after=trial[vm.host], target_after=trial[target],
            spread_before=current, spread_after=after))
        moved.add(vm.key)
        used[vm.host] -= vm.memory_bytes
        used[target] += vm.memory_bytes
        percent = trial

    if not moves:
        why = _stuck(hosts=eligible, percent=percent, used=used, candidates=candidates, cooling=cooling)
        return plan(IMBALANCED, f"{figures}; nothing can be moved: {why or stop}")
    after = _spread(percent)
    count = "1 move" if len(moves) == 1 else f"{len(moves)} moves"
    return plan(REBALANCING, f"{figures}; {count} planned, spread {_percent(spread)} → "
                             f"{_percent(after)} points: {stop}", tuple(moves), after)


# ---------------------------------------------------------------------------
# The status


def recent_moves_from(previous: Mapping[str, Any], *, now: float) -> tuple[float, ...]:
    """The start times of the rebalancing moves of the last hour, as stored in ``recentMoves``.

    A hand-edited entry that is no timestamp, or one far in the future, is
    dropped: junk must neither crash the loop nor spend the budget forever.
    """
    stored = previous.get("recentMoves")
    if not isinstance(stored, list):
        return ()
    times = (parse_timestamp(text) for text in stored[:MAX_RECENT_MOVES])
    return tuple(sorted(t for t in times if t is not None
                        and now - WINDOW_SECONDS < t <= now + CLOCK_SKEW_SECONDS))


def _recent_fields(recent_moves: Sequence[float], *, now: float) -> list[str]:
    # Repeats are kept: two moves started in the same second spent two of the budget.
    return [timestamp(t) for t in sorted(recent_moves)
            if now - WINDOW_SECONDS < t <= now + CLOCK_SKEW_SECONDS]


def _move_fields(move: Move) -> dict[str, Any]:
    return {
        "vmmigration": move.key,
        "domain": move.domain,
        "from": move.source,
        "to": move.target,
        "memoryBytes": move.memory_bytes,
        "loadBefore": {"from": round(move.source_before, 1), "to": round(move.target_before, 1)},
        "loadAfter": {"from": round(move.source_after, 1), "to": round(move.target_after, 1)},
        "spreadBefore": round(move.spread_before, 1),
        "spreadAfter": round(move.spread_after, 1),
        "why": move.why,
    }


def _host_fields(host: HostLoad) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": host.name, "loadPercent": round(host.load_percent, 1),
                              "usedBytes": host.used_bytes, "capacityBytes": host.capacity_bytes,
                              "vms": host.vms, "eligible": host.eligible}
    if host.why:
        fields["message"] = host.why
    return fields


def pool_status(*, plan: RebalancePlan, previous: Mapping[str, Any], recent_moves: Sequence[float],
                now: float, dry_run: bool, generation: int | None = None) -> dict[str, Any]:
    """The HypervisorPool's whole status (the caller patches what changed).

    ``recent_moves`` includes the moves the caller starts now, if any. While
    earlier moves still run (no new plan) the plan shown stays the one being
    carried out. A dry run's moves are shown and said to be a dry run: the
    condition's reason is then Imbalanced, since nothing rebalances it.
    """
    state, message = plan.state, plan.why
    if dry_run and plan.moves:
        state, message = IMBALANCED, f"dry run (spec.rebalance.dryRun): nothing is moved; {plan.why}"
    text = "True" if plan.balanced else "False"
    stored = previous.get("conditions")
    old = next((c for c in (stored if isinstance(stored, list) else ())
                if isinstance(c, Mapping) and c.get("type") == "Balanced"), None)
    since = old.get("lastTransitionTime") if old is not None and old.get("status") == text else None
    since = since if isinstance(since, str) else None  # the API wants a date-time string
    condition: dict[str, Any] = {"type": "Balanced", "status": text, "reason": state,
                                 "message": message[:MAX_MESSAGE],
                                 "lastTransitionTime": since or timestamp(now)}
    if generation is not None:
        condition["observedGeneration"] = generation

    waiting = plan.state == REBALANCING and not plan.moves
    shown_plan: list[Any] = [_move_fields(m) for m in plan.moves]
    old_plan = previous.get("plan")
    if waiting and isinstance(old_plan, list):
        shown_plan = [dict(m) for m in old_plan if isinstance(m, Mapping)]

    recent = _recent_fields(recent_moves, now=now)
    last = parse_timestamp(previous.get("lastRebalanceTime"))
    started = [t for t in recent_moves if t <= now + CLOCK_SKEW_SECONDS]
    if started:
        last = max(started) if last is None else max(last, max(started))

    status: dict[str, Any] = {
        "conditions": [condition],
        "spreadPercent": round(plan.spread_before, 1),
        "hosts": [_host_fields(h) for h in plan.loads],
        "plan": shown_plan,
        "recentMoves": recent,
    }
    if last is not None:
        status["lastRebalanceTime"] = timestamp(last)
    if generation is not None:
        status["observedGeneration"] = generation
    return status


# ---------------------------------------------------------------------------
# The hint on a VMMigration


def hint_value(*, target: str, pool: str, now: float) -> str:
    """The annotation's value: where to move, for which pool, since when."""
    return json.dumps({"to": target, "pool": pool, "at": timestamp(now)}, separators=(",", ":"))


def parse_hint(text: Any, *, now: float, max_age_seconds: float = 900.0) -> str | None:
    """The host a hint names, or None if it is malformed, stale or from the future.

    A stale hint is ignored rather than obeyed late: the loads it was planned
    on are gone.
    """
    if not isinstance(text, str) or len(text) > 1024:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    target, at = body.get("to"), parse_timestamp(body.get("at"))
    if not isinstance(target, str) or not target or len(target) > 253 or at is None:
        return None
    if now - at > max_age_seconds or at > now + CLOCK_SKEW_SECONDS:
        return None
    return target
