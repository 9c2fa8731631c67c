"""Pure: what to do next for one VMMigration, from its spec, what its status remembers,
and what the hypervisors report.

The runtime calls :func:`decide` on every pass (an event, a timer, the end of a
probe) and acts on the answer; this function never performs I/O, so each
rule is a row in a table test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from vmmigration.core.memory import Memory
from vmmigration.core.pools import pool_of, pool_selector
from vmmigration.core.reasons import Reason
from vmmigration.core.spec import Desired, DriftAction, Phase, PlacementMode
from vmmigration.core.scheduling import (
    Claim,
    HypervisorView,
    InFlight,
    choose_target,
    conflicting,
    suitable_home,
    whereabouts,
)


# ---- actions ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Recover:
    """Status says a migration was started, and no one here is watching it: inspect libvirt."""

    source: str
    target: str


@dataclasses.dataclass(frozen=True)
class Migrate:
    source: str
    target: str
    drift: bool = False
    # Why, when it is not the spec itself: the VM's host is in maintenance (a pinned
    # VM is displaced to its pool), or rebalancing asked for this host.
    why: str = ""


@dataclasses.dataclass(frozen=True)
class Displaced:
    """Pinned to ``home``, which is in maintenance: the VM stays on ``current`` until it ends."""

    current: str
    home: str


@dataclasses.dataclass(frozen=True)
class Placed:
    current: str


@dataclasses.dataclass(frozen=True)
class Wait:
    """Nothing to do yet; keep the phase, say why."""

    reason: Reason
    message: str


@dataclasses.dataclass(frozen=True)
class Block:
    """Cannot proceed until something outside changes; reported as the Blocked condition."""

    reason: Reason
    message: str
    current: str | None = None


@dataclasses.dataclass(frozen=True)
class Abort:
    current: str


@dataclasses.dataclass(frozen=True)
class ReportDrift:
    current: str
    target: str


@dataclasses.dataclass(frozen=True)
class Idle:
    """placement: Once, and the VM was placed: stop watching."""


Action = Recover | Migrate | Placed | Wait | Block | Abort | ReportDrift | Idle | Displaced


def decide(
    *,
    key: str,
    created: str,
    desired: Desired,
    memory: Memory,
    hypervisors: Mapping[str, HypervisorView],
    claims: Iterable[Claim],
    in_flight: Sequence[InFlight],
    now: float,
    avoid: Mapping[str, str] | None = None,
    hint: str | None = None,
) -> Action:
    """``avoid`` maps hosts that refused this VM at a pre-check lately to why (selectors only);
    ``hint`` is the host rebalancing asked a selector-placed VM to move to."""
    if memory.phase is Phase.MIGRATING and memory.attempt is not None:
        return Recover(source=memory.attempt.source, target=memory.attempt.target)

    rival = conflicting(Claim(key=key, domain=desired.domain, created=created), claims)
    if rival is not None:
        return Block(Reason.CONFLICT, f"VMMigration {rival.key} is older and already manages domain "
                                 f"{desired.domain}; delete one of the two")

    once_placed = desired.placement is PlacementMode.ONCE and memory.phase is Phase.PLACED
    # A pass that only waited or was blocked (a host silent, a carry's two definitions
    # seen for a moment) keeps the phase Placed; idling then would keep that stale
    # condition forever. One more look writes the truth, and only then it idles.
    settled_once = once_placed and memory.ready
    if settled_once and not any(view.spec.maintenance for view in hypervisors.values()):
        # The common case, without looking the domain up: nothing can call it away.
        return Idle()

    where = whereabouts(desired.domain, hypervisors)
    if where.post_copy:
        # Moving either half would lose the VM: only a post-copy resume (or its end) helps.
        others = [h for h in where.active if h not in where.post_copy]
        return Block(Reason.LOCATION_SPLIT, f"domain {desired.domain} is split by a post-copy "
                     f"migration: paused on {' and '.join(where.post_copy)}"
                     + (f", running on {' and '.join(others)}" if others else "")
                     + "; nothing will be moved until a post-copy resume completes it "
                       "(see lastFailure)")
    halves = len(where.active) + len(where.incoming) + len(where.leaving)
    if (where.incoming or where.leaving) and halves > 1:
        # A copy arriving while the VM runs (or sits paused for the switch-over) elsewhere,
        # or a target already running while the paused source waits to be reaped, and no
        # migration of ours (ours is Recovered above): someone else moves it. Any move of
        # ours now would fail on libvirt's job lock, and the two halves are one VM.
        hosts = sorted({*where.active, *where.incoming, *where.leaving})
        return Wait(Reason.MIGRATING_OUTSIDE, f"domain {desired.domain} is being migrated between "
                    f"{' and '.join(hosts)} by something other than vmmigration; waiting for "
                    "that migration to end")
    if len(where.active) > 1:
        return Block(Reason.RUNNING_TWICE, f"domain {desired.domain} runs on {' and '.join(where.active)} "
                                     "at once; resolve this by hand, nothing will be moved")
    if where.active:
        current = where.active[0]
    elif where.leaving:
        current = where.leaving[0]  # paused by a migration that has no other end now
    elif len(where.defined) == 1:
        current = where.defined[0]
    elif len(where.defined) > 1:
        return Block(Reason.DEFINED_TWICE, f"domain {desired.domain} is shut off and defined on "
                                     f"{' and '.join(where.defined)}; undefine one copy")
    elif where.incoming:
        return Wait(Reason.MIGRATION_IN_PROGRESS, f"domain {desired.domain} is arriving on "
                                           f"{where.incoming[0]}")
    elif where.unknown:
        return Wait(Reason.INVENTORY_INCOMPLETE, f"domain {desired.domain} not found yet; not probed or "
                                           f"unreachable: {', '.join(where.unknown)}")
    else:
        return Block(Reason.DOMAIN_NOT_FOUND, f"no Hypervisor holds a domain named {desired.domain}")

    memory_bytes = where.summary.memory_bytes if where.summary else 0
    here = hypervisors.get(current)
    leaving = here is not None and here.spec.maintenance  # its host is being drained
    kept = leaving and here is not None and desired.domain in here.spec.drain.exclude
    why = ""
    if once_placed and (not leaving or kept):
        # Placed once and left alone, unless a drain calls it away (above), or it was
        # displaced: it still has to come home when the maintenance ends.
        home_view = hypervisors.get(desired.target) if desired.target else None
        if not (home_view is not None and home_view.spec.maintenance and current != desired.target):
            return Idle() if settled_once else Placed(current)
    if desired.target is not None:
        view = hypervisors.get(desired.target)
        if view is None:
            return Block(Reason.UNKNOWN_HYPERVISOR, f"no Hypervisor named {desired.target}", current)
        if view.spec.maintenance:
            if kept or (current != desired.target and not leaving):
                if current == desired.target:
                    return Placed(current)  # excluded from the drain: it stays
                if memory.phase in (Phase.PLACED, Phase.DISPLACED):
                    return Displaced(current=current, home=desired.target)
                return Block(Reason.HOST_IN_MAINTENANCE, f"target {desired.target} is in maintenance and "
                                                  "takes no new VMs", current)
            # On a host in maintenance: off to another host of the home's pool, for now.
            pool = pool_of(view.spec)
            chosen, refused = choose_target(selector=pool_selector(pool), hypervisors=hypervisors,
                                            memory_bytes=memory_bytes, current=current,
                                            preferred=memory.chosen_target, in_flight=in_flight,
                                            avoid=avoid or {})
            if chosen is None:
                return Block(Reason.NO_ELIGIBLE_TARGET, f"{current} is in maintenance and no other "
                             f"Hypervisor of pool {pool or '(default)'} can take {desired.domain}: "
                             f"{refused}", current)
            target = chosen
            why = f"{current} is in maintenance; {desired.domain} is displaced until it ends"
        elif current == desired.target:
            return Placed(current)
        elif not view.reachable:
            error = view.report.error if view.report else "not probed yet"
            return Block(Reason.TARGET_UNREACHABLE, f"target {desired.target} is unreachable: {error}",
                         current)
        else:
            target = desired.target
    else:
        assert desired.selector is not None
        if kept:
            return Placed(current)
        hinted = None
        if hint is not None and hint != current and not leaving:
            hinted, _ = choose_target(selector=desired.selector, hypervisors=hypervisors,
                                      memory_bytes=memory_bytes, current=current, preferred=hint,
                                      in_flight=in_flight, avoid=avoid or {})
        if hinted is not None and hinted == hint:
            target = hinted
            why = f"rebalancing its pool moves {desired.domain} to {hint}"
        else:
            if here is not None and suitable_home(here, desired.selector):
                return Placed(current)
            chosen, refused = choose_target(selector=desired.selector, hypervisors=hypervisors,
                                            memory_bytes=memory_bytes, current=current,
                                            preferred=memory.chosen_target, in_flight=in_flight,
                                            avoid=avoid or {})
            if chosen is None:
                return Block(Reason.NO_ELIGIBLE_TARGET, f"no Hypervisor can take {desired.domain}: "
                             f"{refused}", current)
            target = chosen
            if leaving:
                why = f"{current} is in maintenance"

    placed_before = memory.placed_before
    # Drift is the VM leaving the host the status placed it on, behind our back. A
    # VM still there while the spec now asks for another host has not drifted: the
    # spec changed, and following it is an ordinary move (in Report mode too).
    moved_away = placed_before and (memory.chosen_target is None or current != memory.chosen_target)
    if not moved_away and placed_before and not why and current != target:
        why = f"the spec now asks for {target}"
    if desired.source is not None and current != desired.source and not placed_before and not why:
        return Block(Reason.NOT_ON_SOURCE, f"domain {desired.domain} is on {current}, not on "
                                    f"sourceHypervisor {desired.source}", current)
    if desired.abort:
        return Abort(current)
    if moved_away and desired.drift_action is DriftAction.REPORT and not why:
        return ReportDrift(current=current, target=target)
    # A selector that moved on to another host after a refusal need not wait:
    # the backoff was for the host that refused.
    elsewhere = desired.selector is not None and target != memory.chosen_target
    if memory.next_attempt_at is not None and now < memory.next_attempt_at and not elsewhere:
        return Wait(Reason.BACKOFF, f"retrying in {memory.next_attempt_at - now:.0f} s "
                               f"(attempt {memory.attempts + 1})")
    # A move for maintenance or rebalancing is no drift: nobody moved the VM behind our back.
    return Migrate(source=current, target=target, drift=moved_away and not why, why=why)


def backoff_seconds(*, failures: int, base: float, cap: float) -> float:
    """Exponential: base, 2·base, 4·base … capped; failures counts from 1."""
    # A float power: an int 2 ** n overflows the float it is multiplied by past
    # n = 1023 (an edited status.attempts can be anything); below the clamp both agree.
    return float(min(cap, base * 2.0 ** min(max(0, failures - 1), 1000)))
