"""Pure: one pass of a host's drain, from its spec, its latest probe and the VMMigrations.

Putting a Hypervisor into maintenance empties it. The per-VMMigration loops
already move what they manage (a selector leaves a host in maintenance, a VM
pinned to it is displaced to its pool; see ``reconcile.decide``). What the
drain adds is here:

- every domain nobody manages gets a VMMigration, made by the operator, owned
  by the Hypervisor and labelled with it, placed by a selector over the host's
  pool; one pass after another makes the same ones (by name), so a restart
  never makes a second;
- the drain's progress, counted from what libvirt reports on the host (a
  domain has left when the probe no longer finds it there), with what blocks
  it named, the ``Drained`` condition and the Events;
- clearing maintenance cancels it: the VMMigrations it made are deleted
  (deleting one aborts its move, so with ``whenCancelled: Finish`` a running
  one is kept until it ends), and the drain is shown Cancelled.

The counts survive a restart in the Hypervisor's status: ``total`` and
``moved`` are read back from it (:func:`DrainRecord.from_status`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vmmigration.core.location import is_incoming
from vmmigration.core.memory import Condition, parse_timestamp, timestamp
from vmmigration.core.model import HostReport
from vmmigration.core.pools import pool_of, selector_fields
from vmmigration.core.spec import HypervisorSpec, Phase, WhenCancelled

DRAINED_FROM_LABEL = "vmmigration.dev/drained-from"
MANAGED_BY = ("app.kubernetes.io/managed-by", "vmmigration")
BLOCKERS_SHOWN = 20
DRAINING, DRAINED, CANCELLED = "Draining", "Drained", "Cancelled"
# A VMMigration phase in which its VM is on its way.
_MOVING = frozenset({Phase.VALIDATING.value, Phase.MIGRATING.value})


@dataclasses.dataclass(frozen=True)
class Managed:
    """One VMMigration as the drain needs to see it (from the API, not from memory)."""

    key: str  # namespace/name
    domain: str
    created: str  # creationTimestamp: the oldest claim on a domain is the one that acts
    target: str | None = None  # spec.targetHypervisor
    phase: str = ""
    reason: str = ""  # of the Ready condition
    message: str = ""
    blocked: bool = False  # the Blocked condition is True
    current: str | None = None  # status.currentHypervisor
    made_for: str | None = None  # the drained-from label: a drain made it
    deleting: bool = False


@dataclasses.dataclass(frozen=True)
class DrainRecord:
    """What the Hypervisor's status remembers of its drain."""

    state: str
    started: float
    total: int = 0
    moved: int = 0
    last_progress: float | None = None
    completed: float | None = None
    blockers: tuple[str, ...] = ()  # domains, to post each blocker's Event once
    moving: int = 0

    def as_fields(self) -> dict[str, Any]:
        """The fields a cancelled drain keeps (the counts of a running one are recomputed)."""
        fields: dict[str, Any] = {"state": self.state, "startTime": timestamp(self.started),
                                  "total": self.total, "moved": self.moved, "moving": self.moving}
        if self.completed is not None:
            fields["completionTime"] = timestamp(self.completed)
        return fields

    @classmethod
    def from_status(cls, stored: Any) -> DrainRecord | None:
        if not isinstance(stored, Mapping) or stored.get("state") not in (DRAINING, DRAINED, CANCELLED):
            return None
        started = parse_timestamp(stored.get("startTime"))
        if started is None:
            return None
        shown = stored.get("blockers")
        return cls(state=stored["state"], started=started, total=_count(stored.get("total")),
                   moved=_count(stored.get("moved")),
                   last_progress=parse_timestamp(stored.get("lastProgressTime")),
                   completed=parse_timestamp(stored.get("completionTime")),
                   moving=_count(stored.get("moving")),
                   blockers=tuple(b["domain"] for b in (shown if isinstance(shown, list) else ())
                                  if isinstance(b, Mapping) and isinstance(b.get("domain"), str)))


@dataclasses.dataclass(frozen=True)
class Blocker:
    domain: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Counts:
    total: int
    moved: int
    moving: int
    queued: int
    failed: int
    blocked: int

    @property
    def remaining(self) -> int:
        return self.moving + self.queued + self.failed + self.blocked


@dataclasses.dataclass(frozen=True)
class Made:
    """A VMMigration to create for a domain nobody manages."""

    name: str
    namespace: str
    body: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Notice:
    type: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class DrainPass:
    create: tuple[Made, ...] = ()
    delete: tuple[str, ...] = ()  # keys of VMMigrations the drain made and no longer needs
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # status fields; None removes
    drained: Condition | None = None
    events: tuple[Notice, ...] = ()
    counts: Counts | None = None  # for the metrics; None: no drain to show
    last_progress: float | None = None


def made_name(host: str, domain: str) -> str:
    """``drain-<host>-<domain>`` as a DNS label; a short hash keeps two domains that
    differ only in characters a name cannot hold from sharing one."""
    raw = f"drain-{host}-{domain}"
    name = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
    if name != raw or len(name) > 63:
        digest = hashlib.sha256(domain.encode()).hexdigest()[:6]
        name = f"{name[:56].rstrip('-')}-{digest}"
    return name


def plan_drain(*, spec: HypervisorSpec, owner_uid: str, report: HostReport | None,
               migrations: Sequence[Managed], previous: Mapping[str, Any], namespace: str,
               now: float) -> DrainPass:
    """One pass: what to make or delete, and the drain's status, Events and metrics."""
    record = DrainRecord.from_status(previous.get("drain"))
    mine = [m for m in migrations if m.made_for == spec.name]
    displaced = _displaced(spec.name, migrations)
    if not spec.maintenance:
        return _ended(spec=spec, record=record, mine=mine, displaced=displaced, now=now)
    if report is None or not report.reachable:
        # Nothing can be counted from a host we cannot see; the loops decide on their own.
        return DrainPass(fields={"displaced": displaced or None},
                         drained=Condition("Drained", False, "HostUnreachable",
                                           f"{spec.name} is unreachable: its domains cannot be counted"),
                         counts=None)

    found = {d.name: d for d in report.domains if not is_incoming(d)}
    # A copy still arriving is not one of the host's VMs yet, but it becomes one when its
    # move ends: a host receiving one is not empty, whatever the counts say.
    arriving = sorted(d.name for d in report.domains if is_incoming(d))
    here = sorted(found)
    by_domain: dict[str, list[Managed]] = {}
    for m in migrations:
        if not m.deleting:
            by_domain.setdefault(m.domain, []).append(m)
    create: list[Made] = []
    blockers: list[Blocker] = []
    moving = queued = failed = 0
    for domain in here:
        if domain in spec.drain.exclude:
            blockers.append(Blocker(domain, "Excluded", f"{domain} is listed in spec.drain.exclude"))
            continue
        managing = sorted(by_domain.get(domain, ()), key=lambda m: (m.created, m.key))
        if not managing:
            create.append(_made(spec=spec, owner_uid=owner_uid, domain=domain, namespace=namespace))
            queued += 1
            continue
        acting = managing[0]  # the oldest claim is the one that acts
        if (not found[domain].active and acting.current not in (None, spec.name)
                and acting.phase in (Phase.PLACED.value, Phase.DISPLACED.value)):
            # The VM runs elsewhere; this is the definition a move left behind
            # (persistence.undefineOnSource: false). Only a person may remove it.
            blockers.append(Blocker(domain, "LeftDefined", f"{domain} runs on {acting.current}; "
                                    f"its old definition here is shut off: undefine it to finish the drain"))
            continue
        if acting.phase in _MOVING:
            moving += 1
        elif acting.blocked or acting.phase == Phase.ABORTED.value:
            blockers.append(Blocker(domain, acting.reason or acting.phase,
                                    f"VMMigration {acting.key}: {acting.message or acting.phase}"))
        elif acting.phase == Phase.FAILED.value:
            failed += 1
        else:
            queued += 1

    remaining = len(here)
    fresh = record is None or record.state == CANCELLED
    if fresh:
        total, moved, last_progress, started = remaining, 0, now, now
    else:
        assert record is not None
        total = max(record.total, record.moved + remaining)
        moved = max(record.moved, total - remaining)
        started = record.started
        last_progress = now if moved > record.moved else (record.last_progress or record.started)
    counts = Counts(total=total, moved=moved, moving=moving, queued=queued, failed=failed,
                    blocked=len(blockers))
    state = DRAINED if remaining == 0 and not arriving else DRAINING
    events: list[Notice] = []
    if fresh:
        events.append(Notice("Normal", "DrainStarted",
                             f"{spec.name} is in maintenance: draining {remaining} domain"
                             f"{'' if remaining == 1 else 's'} to pool {pool_of(spec) or '(default)'}"))
    known = set() if fresh or record is None else set(record.blockers)
    for blocker in blockers:
        if blocker.domain not in known:
            events.append(Notice("Warning", "DrainBlocked", f"{blocker.domain} does not leave "
                                 f"{spec.name}: {blocker.reason}: {blocker.message}"))
    completed = None
    if state == DRAINED:
        was_drained = record is not None and record.state == DRAINED and not fresh
        completed = record.completed if was_drained and record is not None else now
        if not was_drained:
            events.append(Notice("Normal", "Drained", f"{spec.name} is empty: {moved} domain"
                                 f"{'' if moved == 1 else 's'} moved in {now - started:.0f} s"))
    drain = {
        "state": state, "startTime": timestamp(started),
        "completionTime": timestamp(completed) if completed is not None else None,
        "lastProgressTime": timestamp(last_progress),
        "total": total, "moved": moved, "moving": moving, "queued": queued, "failed": failed,
        "blocked": len(blockers),
        "blockers": [{"domain": b.domain, "reason": b.reason, "message": b.message[:500]}
                     for b in blockers[:BLOCKERS_SHOWN]],
    }
    drain = {k: v for k, v in drain.items() if v is not None}
    if state == DRAINED:
        condition = Condition("Drained", True, "Drained", f"in maintenance and empty: {moved} domain"
                              f"{'' if moved == 1 else 's'} moved")
    else:
        summary = (f"{remaining} of {total} domain{'' if total == 1 else 's'} left: {moving} moving, "
                   f"{queued} queued, {failed} failed, {len(blockers)} blocked")
        if blockers:
            summary += " (" + "; ".join(f"{b.domain}: {b.reason}" for b in blockers[:5]) + ")"
        if arriving:
            summary += f"; still arriving: {', '.join(arriving[:5])}"
        stuck = bool(blockers) and moving == queued == failed == 0
        condition = Condition("Drained", False, "DrainBlocked" if stuck else "Draining", summary)
    return DrainPass(create=tuple(create), fields={"drain": drain, "displaced": displaced or None},
                     drained=condition, events=tuple(events), counts=counts,
                     last_progress=last_progress)


def _ended(*, spec: HypervisorSpec, record: DrainRecord | None, mine: Sequence[Managed],
           displaced: list[dict[str, str]], now: float) -> DrainPass:
    """Not in maintenance: a drain under way is cancelled, and what it made goes."""
    finish = spec.drain.when_cancelled is WhenCancelled.FINISH
    delete = tuple(m.key for m in mine if not m.deleting and not (finish and m.phase in _MOVING))
    events: list[Notice] = []
    fields: dict[str, Any] = {"displaced": displaced or None}
    running = sum(1 for m in mine if m.phase in _MOVING and not m.deleting)
    if record is not None and record.state == CANCELLED and running != record.moving:
        # Finish: the moves it let run are still watched, until the last ends and goes.
        fields["drain"] = {**record.as_fields(), "moving": running if finish else 0}
    if record is not None and record.state == DRAINING:
        events.append(Notice("Warning", "DrainCancelled",
                             f"maintenance of {spec.name} was cleared before it was empty "
                             f"({record.moved} of {record.total} moved): queued moves are dropped, "
                             f"running ones {'finish' if finish else 'are aborted'} ({running} made by the drain)"))
        fields["drain"] = {"state": CANCELLED, "startTime": timestamp(record.started),
                           "completionTime": timestamp(now), "total": record.total,
                           "moved": record.moved, "moving": running if finish else 0}
    elif record is not None and record.state == DRAINED:
        events.append(Notice("Normal", "MaintenanceEnded",
                             f"{spec.name} is back in service; {len(displaced)} displaced VM"
                             f"{'' if len(displaced) == 1 else 's'} go back"))
        fields["drain"] = None
    return DrainPass(delete=delete, fields=fields, events=tuple(events),
                     drained=Condition("Drained", False, "NotInMaintenance",
                                       f"{spec.name} is not in maintenance"))


def _displaced(host: str, migrations: Sequence[Managed]) -> list[dict[str, str]]:
    return [{"domain": m.domain, "vmmigration": m.key, "runsOn": m.current or ""}
            for m in sorted(migrations, key=lambda m: m.key)
            if m.target == host and m.phase == Phase.DISPLACED.value and not m.deleting]


def _made(*, spec: HypervisorSpec, owner_uid: str, domain: str, namespace: str) -> Made:
    name = made_name(spec.name, domain)
    body = {
        "apiVersion": "vmmigration.dev/v1alpha1",
        "kind": "VMMigration",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {DRAINED_FROM_LABEL: spec.name, MANAGED_BY[0]: MANAGED_BY[1]},
            "annotations": {"vmmigration.dev/reason": f"made by the drain of {spec.name}: "
                                                      f"no VMMigration named domain {domain}"},
            # Owned by the Hypervisor: deleting it takes these along (the garbage collector).
            "ownerReferences": [{"apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
                                 "name": spec.name, "uid": owner_uid}],
        },
        "spec": {
            "domain": domain,
            "targetSelector": selector_fields(pool_of(spec)),
            "mode": spec.drain.mode.value,
            # Moved off the host and then left alone, as it was before the drain.
            "placement": "Once",
        },
    }
    return Made(name=name, namespace=namespace, body=body)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
