"""Pure: the status a VMMigration should show, and the smallest patch that gets it there.

Conditions follow Kubernetes' convention: a ``lastTransitionTime`` changes
only when a condition's status flips, and every condition carries the
generation it was computed for, so ``kubectl wait --for=condition=Ready``
and kstatus-based tools read it honestly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vmmigration.core.memory import Condition, parse_timestamp, timestamp
from vmmigration.core.spec import Phase
from vmmigration.core.model import DiskCopy, DomainSummary, HostReport, JobProgress, PowerState
from vmmigration.core import units

CONDITION_TYPES = ("Ready", "Progressing", "Queued", "Blocked", "Drifted")

# A Hypervisor's status names at most this many domains: at hundreds of VMs per
# host the whole inventory would near the API server's object size limit, and
# every domain's state change would rewrite all of it. ``vmmigration domains
# HOST`` lists them all, from libvirt.
DOMAINS_IN_STATUS = 20


def conditions(
    *,
    previous: Any,
    wanted: Iterable[Condition],
    generation: int,
    now: float,
) -> list[dict[str, Any]]:
    """All five condition types: the ``wanted`` ones, the rest False with reason ``AsExpected``."""
    by_type = {c.type: c for c in wanted}
    # The previous conditions are read back as stored; a hand-edited status can hold anything.
    before = {c.get("type"): c for c in (previous if isinstance(previous, (list, tuple)) else ())
              if isinstance(c, Mapping) and isinstance(c.get("type"), str)}
    result = []
    for kind in CONDITION_TYPES:
        condition = by_type.get(kind) or Condition(kind, False, "AsExpected")
        text = "True" if condition.status else "False"
        old = before.get(kind)
        since = (old.get("lastTransitionTime") if old and old.get("status") == text else None)
        since = since if isinstance(since, str) else None  # the API wants a date-time string
        result.append({
            "type": kind,
            "status": text,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since or timestamp(now),
            "observedGeneration": generation,
        })
    return result


def progress(update: JobProgress | None, *, percent: float, eta_seconds: float | None,
             disks: Sequence[DiskCopy] = ()) -> dict[str, Any]:
    if update is None:
        return {"percent": round(percent, 1)}
    body: dict[str, Any] = {
        "percent": round(percent, 1),
        "memoryTotalBytes": update.memory_total,
        "memoryProcessedBytes": update.memory_processed,
        "memoryRemainingBytes": update.memory_remaining,
        "dirtyRateBytesPerSecond": update.dirty_rate_bytes_per_s,
        "transferRateBytesPerSecond": update.transfer_rate_bytes_per_s,
        "iteration": update.iteration,
    }
    if update.data_total:
        body.update(dataTotalBytes=update.data_total, dataProcessedBytes=update.data_processed,
                    dataRemainingBytes=update.data_remaining)
    if disks:
        body["disks"] = [{"source": d.source, "target": d.target, "totalBytes": d.total_bytes,
                          "copiedBytes": d.copied_bytes, "state": d.state} for d in disks]
    if eta_seconds is not None:
        body["etaSeconds"] = round(eta_seconds, 1)
    return body


def compose(
    *,
    previous: Mapping[str, Any],
    phase: Phase,
    generation: int,
    now: float,
    wanted: Iterable[Condition],
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole new status: the previous one, the given fields (None removes one), phase and conditions."""
    new = {k: v for k, v in previous.items() if k not in ("conditions", "phase")}
    for name, value in (fields or {}).items():
        if value is None:
            new.pop(name, None)
        else:
            new[name] = value
    new["phase"] = phase.value
    new["observedGeneration"] = generation
    new["conditions"] = conditions(previous=previous.get("conditions"), wanted=wanted,
                                   generation=generation, now=now)
    return new


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning old into new; empty when nothing changed."""
    patch: dict[str, Any] = {}
    for name in old:
        if name not in new:
            patch[name] = None
    for name, value in new.items():
        before = old.get(name)
        if before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[name] = merge_patch(before, value)
        else:
            patch[name] = value
    return patch


def hypervisor(
    *,
    previous: Mapping[str, Any],
    report: HostReport,
    generation: int,
    now: float,
    inbound: int,
    outbound: int,
    heartbeat_seconds: float = 60.0,
) -> dict[str, Any]:
    """A Hypervisor's status from its latest probe.

    Free memory moves on every probe of a real host; a change under 1 % is not
    written, and ``lastProbeTime`` alone is refreshed at most once per
    ``heartbeat_seconds``, so a quiet host costs the API server almost nothing.
    The domains are counted by state, and at most ``DOMAINS_IN_STATUS`` of them
    are named (see ``in_status``): the status's size does not grow with the host.
    """
    new: dict[str, Any] = {k: v for k, v in previous.items()}
    shown = in_status(report.domains)
    old_conditions = previous.get("conditions")
    # Read back as stored: a hand-edited status is not trusted to be a list.
    old_reachable = next((c for c in (old_conditions if isinstance(old_conditions, (list, tuple)) else ())
                          if isinstance(c, Mapping) and c.get("type") == "Reachable"), None)
    state = "True" if report.reachable else "False"
    since = old_reachable.get("lastTransitionTime") if old_reachable and old_reachable.get("status") == state else None
    since = since if isinstance(since, str) else None  # the API wants a date-time string
    # The other conditions (Drained) are their owners' to change: kept as they were.
    kept = [c for c in (old_conditions if isinstance(old_conditions, (list, tuple)) else ())
            if isinstance(c, Mapping) and c.get("type") != "Reachable"]
    new["conditions"] = [*kept, {
        "type": "Reachable",
        "status": state,
        "reason": "Probed" if report.reachable else "Unreachable",
        "message": "libvirt answered" if report.reachable else report.error[:500],
        "lastTransitionTime": since or timestamp(now),
        "observedGeneration": generation,
    }]
    new["observedGeneration"] = generation
    new["inboundMigrations"] = inbound
    new["outboundMigrations"] = outbound
    if report.reachable:
        new.update({
            "libvirtVersion": report.libvirt_version,
            "hypervisorVersion": report.hypervisor_version,
            "cpuModel": report.cpu_model,
            "memoryTotalBytes": report.memory_total_bytes,
            "domainCount": len(report.domains),
            "domainStates": domain_states(report.domains),
            "domains": [domain_entry(d) for d in shown],
        })
        if len(shown) < len(report.domains):
            new["domainsTruncated"] = True
        else:
            # Absent rather than false: a reader of an older status sees the same shape.
            new.pop("domainsTruncated", None)
        if _moved(previous.get("memoryFreeBytes"), report.memory_free_bytes):
            new["memoryFreeBytes"] = report.memory_free_bytes
        # For the FREE printer column, which cannot format bytes itself; derived
        # from the stored count, so it changes only when that is rewritten.
        new["memoryFree"] = units.size(new["memoryFreeBytes"])
        active = sum(d.memory_bytes for d in report.domains if d.active)
        # A balloon resize alone moves the sum a little: under 1 % it waits for a
        # write that happens anyway (a domain starting or stopping, a count), so
        # the figure is exact whenever the counts beside it change.
        if (_moved(previous.get("activeMemoryBytes"), active)
                or _without(new, _RIDERS) != _without(previous, _RIDERS)):
            new["activeMemoryBytes"] = active
    return stamped(new, previous=previous, probed_at=report.probed_at, now=now,
                   heartbeat_seconds=heartbeat_seconds)


def stamped(new: Mapping[str, Any], *, previous: Mapping[str, Any], probed_at: float, now: float,
            heartbeat_seconds: float) -> dict[str, Any]:
    """``new`` with ``lastProbeTime`` renewed only when something else changed or the
    heartbeat is due: the last step once the whole status (a drain's part too) is composed."""
    result = {k: v for k, v in new.items() if k != "lastProbeTime"}
    old = previous.get("lastProbeTime")
    stale = (parse_timestamp(old) or 0.0) + heartbeat_seconds <= now
    if stale or result != {k: v for k, v in previous.items() if k != "lastProbeTime"}:
        result["lastProbeTime"] = timestamp(probed_at)
    else:
        result["lastProbeTime"] = old
    return result


# Refreshed on their own terms (a heartbeat, a 1 % move) or along with another change: left
# out when asking whether anything else changed.
_RIDERS = frozenset({"lastProbeTime", "activeMemoryBytes"})


def _without(fields: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in names}


def _moved(stored: Any, fresh: int) -> bool:
    """Whether ``fresh`` is more than 1 % away from the stored count (or nothing usable is stored)."""
    # Anything but a stored count means "write it anew"; 0 as well, which 1 % of cannot tell.
    old = stored if isinstance(stored, int) and not isinstance(stored, bool) else 0
    return not old or abs(fresh - old) > old // 100


def state_key(state: PowerState) -> str:
    """A PowerState as a key of ``domainStates``: lowerCamelCase, as Kubernetes spells fields."""
    return state.value[:1].lower() + state.value[1:]


def domain_states(domains: Iterable[DomainSummary]) -> dict[str, int]:
    """How many domains are in each state; every state is present, 0 included, so that
    ``.status.domainStates.paused`` reads 0 rather than nothing."""
    counts = {state_key(state): 0 for state in PowerState}
    for found in domains:
        counts[state_key(found.state)] += 1
    return counts


def in_status(domains: Iterable[DomainSummary], *, limit: int = DOMAINS_IN_STATUS) -> list[DomainSummary]:
    """The domains the status names: those not running first (paused, shut off, crashed:
    the ones a person looks for), then the running ones, each group by name."""
    # The UUID settles a repeated name, so the list, and thus the status, is stable.
    ranked = sorted(domains, key=lambda d: (d.state is PowerState.RUNNING, d.name, d.uuid))
    return ranked[:limit]


def domain_entry(found: DomainSummary) -> dict[str, Any]:
    """One entry of ``status.domains``; ``vmmigration domains --json`` prints the same shape."""
    return {"name": found.name, "uuid": found.uuid, "state": found.state.value,
            "memoryBytes": found.memory_bytes, "persistent": found.persistent}


def with_drain(new: Mapping[str, Any], *, previous: Mapping[str, Any], fields: Mapping[str, Any],
               drained: Condition | None, generation: int, now: float) -> dict[str, Any]:
    """A Hypervisor's new status with its drain's fields and the Drained condition."""
    result = {k: v for k, v in new.items()}
    for name, value in fields.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    if drained is None:
        return result
    old_conditions = previous.get("conditions")
    old = next((c for c in (old_conditions if isinstance(old_conditions, (list, tuple)) else ())
                if isinstance(c, Mapping) and c.get("type") == "Drained"), None)
    text = "True" if drained.status else "False"
    since = old.get("lastTransitionTime") if old and old.get("status") == text else None
    result["conditions"] = [*(c for c in result.get("conditions") or () if c.get("type") != "Drained"), {
        "type": "Drained", "status": text, "reason": drained.reason, "message": drained.message[:1000],
        "lastTransitionTime": since if isinstance(since, str) else timestamp(now),
        "observedGeneration": generation,
    }]
    return result
