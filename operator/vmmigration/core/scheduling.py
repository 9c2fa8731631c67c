"""Pure: where a domain is across all hypervisors, which host it should go to, and
whether a migration may start now under the concurrency limits.

Inputs are the latest probe of every Hypervisor and the migrations in flight;
nothing here talks to libvirt or Kubernetes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from vmmigration.core.spec import HypervisorSpec, Selector
from vmmigration.core.model import DomainSummary, HostReport
from vmmigration.core.location import in_post_copy, is_incoming, is_leaving


@dataclasses.dataclass(frozen=True)
class HypervisorView:
    spec: HypervisorSpec
    report: HostReport | None = None  # None: not probed yet

    @property
    def reachable(self) -> bool:
        return self.report is not None and self.report.reachable


@dataclasses.dataclass(frozen=True)
class Whereabouts:
    active: tuple[str, ...] = ()  # hosts where the VM itself runs (or is paused)
    incoming: tuple[str, ...] = ()  # hosts holding an incoming migration's paused copy
    # Hosts where the VM itself is paused on the sending end of a migration
    # (switch-over, a hybrid's suspend, or not yet reaped after the move).
    leaving: tuple[str, ...] = ()
    defined: tuple[str, ...] = ()  # hosts where it is defined but shut off
    unknown: tuple[str, ...] = ()  # hosts not probed yet or unreachable: it may be there
    summary: DomainSummary | None = None
    # Hosts where the source half of a post-copy migration waits (paused, its
    # pages not all copied): the VM is split, not running twice.
    post_copy: tuple[str, ...] = ()


def whereabouts(domain: str, hypervisors: Mapping[str, HypervisorView]) -> Whereabouts:
    active, incoming, leaving, defined, unknown, post_copy = [], [], [], [], [], []
    summary = None
    for name in sorted(hypervisors):
        view = hypervisors[name]
        if not view.reachable or view.report is None:
            unknown.append(name)
            continue
        for found in view.report.by_name.get(domain, ()):  # a lookup, not a scan of every domain
            if in_post_copy(found):
                post_copy.append(name)
            if is_incoming(found):
                incoming.append(name)
            elif is_leaving(found):
                leaving.append(name)
                summary = summary or found
            elif found.active:
                active.append(name)
                summary = found
            else:
                defined.append(name)
                summary = summary or found
    return Whereabouts(active=tuple(active), incoming=tuple(incoming), leaving=tuple(leaving),
                       defined=tuple(defined),
                       unknown=tuple(unknown), summary=summary, post_copy=tuple(post_copy))


@dataclasses.dataclass(frozen=True)
class InFlight:
    key: str  # namespace/name of the VMMigration
    source: str
    target: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """A VMMigration's claim on a domain; the oldest claim wins."""

    key: str
    domain: str
    created: str  # RFC 3339 creationTimestamp: sorts as text

    def older_than(self, other: Claim) -> bool:
        return (self.created, self.key) < (other.created, other.key)


def conflicting(mine: Claim, claims: Iterable[Claim]) -> Claim | None:
    """The oldest other claim on the same domain, if it is older than mine."""
    rivals = sorted((c for c in claims if c.domain == mine.domain and c.key != mine.key),
                    key=lambda c: (c.created, c.key))
    if rivals and rivals[0].older_than(mine):
        return rivals[0]
    return None


def admit(
    *,
    source: str,
    target: str,
    in_flight: Sequence[InFlight],
    hypervisors: Mapping[str, HypervisorView],
    cluster_limit: int,
) -> str | None:
    """None if a migration source -> target may start now; otherwise why it must wait."""
    if len(in_flight) >= cluster_limit:
        return f"{len(in_flight)} migrations are in flight, the cluster-wide limit is {cluster_limit}"
    outbound = sum(1 for m in in_flight if m.source == source)
    inbound = sum(1 for m in in_flight if m.target == target)
    source_spec = hypervisors[source].spec if source in hypervisors else None
    target_spec = hypervisors[target].spec if target in hypervisors else None
    if source_spec is not None and outbound >= source_spec.max_outbound:
        return f"{source} already sends {outbound} migrations (maxOutboundMigrations {source_spec.max_outbound})"
    if target_spec is not None and inbound >= target_spec.max_inbound:
        return f"{target} already receives {inbound} migrations (maxInboundMigrations {target_spec.max_inbound})"
    return None


def suitable_home(view: HypervisorView, selector: Selector) -> bool:
    """May a VM stay on this host under this selector? (It is already there: no memory check.)"""
    return selector.matches(view.spec.label_map) and not view.spec.maintenance


def choose_target(
    *,
    selector: Selector,
    hypervisors: Mapping[str, HypervisorView],
    memory_bytes: int,
    current: str | None,
    preferred: str | None,
    in_flight: Sequence[InFlight],
    avoid: Mapping[str, str] | None = None,
) -> tuple[str | None, str]:
    """The host to move to, or None and why none fits.

    Eligible: matches the selector, reachable, not in maintenance, enough free
    memory. The preferred host (chosen before, recorded in status) is kept
    while it stays eligible, so a choice does not flap between probes. Among
    the rest the least loaded wins: fewest running domains plus incoming
    migrations, then most free memory, then name. ``avoid`` maps hosts that
    refused this VM at a pre-check (CPU, memory, storage) to why; they are
    skipped for a while so another candidate gets its turn.
    """
    rejected: list[str] = []
    eligible: list[tuple[int, int, str]] = []
    for name in sorted(hypervisors):
        view = hypervisors[name]
        if name == current:
            continue
        if not selector.matches(view.spec.label_map):
            continue
        if avoid and name in avoid:
            rejected.append(f"{name} refused it ({avoid[name]})")
            continue
        if view.spec.maintenance:
            rejected.append(f"{name} is in maintenance")
            continue
        if not view.reachable or view.report is None:
            rejected.append(f"{name} is unreachable")
            continue
        free = view.report.memory_free_bytes
        if free < memory_bytes:
            rejected.append(f"{name} has {free // 2**20} MiB free, the VM needs {memory_bytes // 2**20} MiB")
            continue
        load = sum(1 for d in view.report.domains if d.active) + sum(
            1 for m in in_flight if m.target == name)
        eligible.append((load, -free, name))
    if not eligible:
        why = "; ".join(rejected) if rejected else f"no Hypervisor matches {selector}"
        return None, why
    names = [e[2] for e in eligible]
    if preferred in names:
        return preferred, ""
    return min(eligible)[2], ""
