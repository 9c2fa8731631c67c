"""Pure: what the command line's API verbs decide before and after they call the API.

``vmmigration move`` finds the VMMigration that already manages a domain and
patches it (a second one would only be Blocked as a conflict), or names a new
one; ``watch`` reads a VMMigration's status and says whether the move ended
and how. Objects are the API's JSON, read defensively: a status can be
anything a hand edit left there.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from vmmigration.core import units
from vmmigration.core.memory import parse_timestamp
from vmmigration.core.spec import Phase, PlacementMode
from vmmigration.core.status import merge_patch

# A DNS-1123 label for names the CLI makes up; users may pass any valid name.
_NAME_LIMIT = 63
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


class MoveError(Exception):
    """The request cannot be carried out as asked; the message says what to do instead."""


def get(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]…``, or None where anything on the way is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def section(obj: Any, *path: str) -> Mapping[str, Any]:
    """Like :func:`get`, for a mapping: empty where there is none."""
    found = get(obj, *path)
    return found if isinstance(found, Mapping) else {}


def object_name(domain: str) -> str:
    """A VMMigration name for a domain: lower case, runs of other characters as one dash."""
    name = re.sub(r"[^a-z0-9]+", "-", domain.lower()).strip("-")[:_NAME_LIMIT].rstrip("-")
    if not name:
        raise MoveError(f"cannot make a VMMigration name from domain {domain!r}; pass --name")
    return name


def parse_selector(text: str) -> dict[str, str]:
    """``key=value[,key=value…]`` as matchLabels; any other form is refused with the reason."""
    labels: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key.endswith("!") or value.startswith("="):
            raise ValueError(f"{part!r} is not key=value (only equality selectors are supported)")
        if not _LABEL_KEY.match(key):
            raise ValueError(f"{key!r} is not a valid label key")
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"{value!r} is not a valid label value")
        if labels.get(key, value) != value:
            raise ValueError(f"label {key!r} is given twice with different values")
        labels[key] = value
    return labels


def selector_text(selector: Any) -> str:
    """A targetSelector as kubectl would write it: ``zone=lab,tier in (a,b)``."""
    parts = [f"{k}={v}" for k, v in sorted(section(selector, "matchLabels").items())]
    for expression in get(selector, "matchExpressions") or ():
        key, operator = get(expression, "key"), get(expression, "operator")
        values = ",".join(str(v) for v in get(expression, "values") or ())
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": f"{key}", "DoesNotExist": f"!{key}"}.get(str(operator), f"{key}?"))
    return ",".join(parts) or "(any)"


@dataclasses.dataclass(frozen=True)
class Move:
    """What the user asked for; ``None`` fields are left as the object has them."""

    domain: str
    target: str | None = None
    selector: Mapping[str, str] | None = None
    mode: str | None = None  # the CRD's spelling: Auto, Live, NonLive, Offline
    once: bool = False
    bandwidth_mib_per_s: int | None = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.selector is None):
            raise MoveError("give exactly one of --to HYPERVISOR and --selector KEY=VALUE")

    def spec(self, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The whole new spec: the previous one with this move applied.

        A move means "move now": it clears ``abort`` and ``dryRun``, which would
        otherwise hold the domain where it is.
        """
        new = dict(previous or {"domain": self.domain})
        new.pop("targetHypervisor", None)
        new.pop("targetSelector", None)
        if self.target is not None:
            new["targetHypervisor"] = self.target
        else:
            new["targetSelector"] = {"matchLabels": dict(self.selector or {})}
        if self.target is not None and new.get("sourceHypervisor") == self.target:
            # Moving back to where it came from: the old source pin would be refused.
            new.pop("sourceHypervisor")
        if self.mode is not None:
            new["mode"] = self.mode
        if self.once:
            new["placement"] = PlacementMode.ONCE.value
        if self.bandwidth_mib_per_s is not None:
            policy = dict(section(new, "policy"))
            policy["bandwidthMiBPerSecond"] = self.bandwidth_mib_per_s
            new["policy"] = policy
        for flag in ("abort", "dryRun"):
            if new.get(flag):
                new[flag] = False
        return new

    def manifest(self, *, namespace: str, name: str) -> dict[str, Any]:
        return {"apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
                "metadata": {"name": name, "namespace": namespace}, "spec": self.spec()}

    def patch(self, existing: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch turning the object's spec into this move's.

        It carries the resourceVersion it was computed from, so a concurrent
        edit makes the API server refuse it (409) rather than merge blindly.
        """
        old = section(existing, "spec")
        patch: dict[str, Any] = {"spec": merge_patch(old, self.spec(old))}
        version = get(existing, "metadata", "resourceVersion")
        if version:
            patch["metadata"] = {"resourceVersion": version}
        return patch


def existing(items: Iterable[Mapping[str, Any]], *, domain: str, name: str | None) -> Mapping[str, Any] | None:
    """The VMMigration to patch for ``domain`` among a namespace's, or None to create one.

    Refuses what would leave two VMMigrations claiming one domain, or a patch
    the operator would never act on.
    """
    items = list(items)
    mine = [i for i in items if get(i, "spec", "domain") == domain]
    if name is not None:
        named = next((i for i in items if get(i, "metadata", "name") == name), None)
        if named is not None and get(named, "spec", "domain") != domain:
            raise MoveError(f"VMMigration {_key(named)} manages domain {get(named, 'spec', 'domain')}, "
                            f"not {domain}; spec.domain cannot change, pick another --name")
        others = [i for i in mine if i is not named]
        if named is None and others:
            raise MoveError(f"domain {domain} is already managed by VMMigration {_key(others[0])}; "
                            f"move it with --name {get(others[0], 'metadata', 'name')} or delete that one")
        found = named
    elif len(mine) > 1:
        names = ", ".join(sorted(str(get(i, "metadata", "name")) for i in mine))
        raise MoveError(f"domain {domain} has {len(mine)} VMMigrations ({names}); pick one with --name")
    else:
        found = mine[0] if mine else None
    if (found is not None and get(found, "spec", "placement") == PlacementMode.ONCE.value
            and get(found, "status", "phase") == Phase.PLACED.value):
        raise MoveError(f"VMMigration {_key(found)} has placement Once and is done (placed on "
                        f"{get(found, 'status', 'currentHypervisor') or '?'}); delete it and move again")
    return found


def _key(obj: Mapping[str, Any]) -> str:
    return f"{get(obj, 'metadata', 'namespace')}/{get(obj, 'metadata', 'name')}"


# ---- watching one move ------------------------------------------------------------


class Expect(enum.Enum):
    PLACED = "placed"
    ABORTED = "aborted"


class Ending(enum.Enum):
    """How a watch ends; the command maps each onto its exit code."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclasses.dataclass(frozen=True)
class Verdict:
    ending: Ending | None  # None: not over yet
    line: str
    copying: bool = False  # the line is a copy's progress, from status.progress


def verdict(obj: Mapping[str, Any], *, expect: Expect, now: float) -> Verdict:
    """Whether the move of this VMMigration is over, and one line saying where it stands.

    A status older than the spec says nothing about the spec: until the operator
    has seen the latest generation, even a Placed phase is the previous move's.
    """
    status = section(obj, "status")
    if get(obj, "spec", "placement") == PlacementMode.ONCE.value and get(status, "phase") == Phase.PLACED.value:
        # Done for good: the operator no longer looks at this object, nor writes its status.
        where = get(status, "currentHypervisor") or "?"
        if expect is Expect.ABORTED:
            return Verdict(Ending.SUCCEEDED, f"nothing to abort: placed on {where} (placement Once)")
        return Verdict(Ending.SUCCEEDED, f"placed on {where}" + outcome_details(status))
    generation = get(obj, "metadata", "generation")
    observed = get(status, "observedGeneration")
    if isinstance(generation, int) and not (isinstance(observed, int) and observed >= generation):
        return Verdict(None, f"waiting for the operator to see generation {generation}")
    phase = get(status, "phase")
    current = get(status, "currentHypervisor") or "?"
    if phase == Phase.PLACED.value:
        if expect is Expect.ABORTED:
            return Verdict(Ending.SUCCEEDED, f"nothing to abort: placed on {current}")
        return Verdict(Ending.SUCCEEDED, "placed on " + current + outcome_details(status))
    if phase == Phase.ABORTED.value:
        ending = Ending.SUCCEEDED if expect is Expect.ABORTED else Ending.ABORTED
        return Verdict(ending, f"aborted; the domain stays on {current}")
    if phase == Phase.FAILED.value:
        reason = get(status, "lastFailure", "reason") or "Failed"
        message = get(status, "lastFailure", "message") or ""
        retry = ""
        at = parse_timestamp(get(status, "nextAttemptTime"))
        if at is not None:
            retry = f" (the operator retries in {units.duration(max(0.0, at - now))})"
        return Verdict(Ending.FAILED, f"failed: {reason}: {message}".rstrip(": ") + retry)
    return Verdict(None, stage(status), copying=copying(status))


def copying(status: Mapping[str, Any]) -> bool:
    return get(status, "phase") == Phase.MIGRATING.value and bool(
        get(status, "progress", "memoryTotalBytes") or get(status, "progress", "disks"))


def stage(status: Mapping[str, Any]) -> str:
    """The phase and, while it waits or moves, why or how far: one line."""
    phase = get(status, "phase") or "Pending"
    if copying(status):
        return f"Migrating {route(status)}: {progress_text(status)}"
    for kind in ("Blocked", "Queued", "Progressing"):
        condition = condition_of(status, kind)
        if condition and condition.get("status") == "True":
            message = condition.get("message") or ""
            return f"{phase}: {condition.get('reason')}" + (f": {message}" if message else "")
    return str(phase)


def route(status: Mapping[str, Any]) -> str:
    return f"{get(status, 'sourceHypervisor') or '?'} → {get(status, 'targetHypervisor') or '?'}"


def progress_text(status: Mapping[str, Any]) -> str:
    """``310Mi left of 1.0Gi · 120Mi/s · dirty 8.0Mi/s · pass 3 · ETA 4.0s``."""
    p = section(status, "progress")
    parts = []
    total, remaining = p.get("memoryTotalBytes"), p.get("memoryRemainingBytes")
    disks = p.get("disks")
    if isinstance(disks, list) and disks and not _number(total):
        # An Offline move carrying its disks: the data of the copies, and which one runs.
        total, remaining = p.get("dataTotalBytes"), p.get("dataRemainingBytes")
        done = sum(1 for d in disks if isinstance(d, Mapping) and d.get("state") == "Verified")
        parts.append(f"disk {min(done + 1, len(disks))}/{len(disks)}" if done < len(disks)
                     else f"{len(disks)} disk(s) verified")
        if _number(total) and _number(remaining):
            parts.append(f"{units.size(remaining)} left of {units.size(total)}")
    elif _number(total) and _number(remaining):
        parts.append(f"{units.size(remaining)} left of {units.size(total)}")
    if _number(p.get("transferRateBytesPerSecond")):
        parts.append(units.rate(p["transferRateBytesPerSecond"]))
    if _number(p.get("dirtyRateBytesPerSecond")):
        parts.append("dirty " + units.rate(p["dirtyRateBytesPerSecond"]))
    if _number(p.get("iteration")):
        parts.append(f"pass {p['iteration']}")
    if _number(p.get("etaSeconds")):
        parts.append("ETA " + units.duration(p["etaSeconds"]))
    return " · ".join(parts)


def percent(status: Mapping[str, Any]) -> float:
    value = get(status, "progress", "percent")
    return max(0.0, min(100.0, float(value))) if _number(value) else 0.0


def outcome_details(status: Mapping[str, Any]) -> str:
    """`` (Live, downtime 45ms, took 3.2s)``, from what the last move measured; empty if nothing."""
    parts = [str(m) for m in (get(status, "effectiveMode"),) if m]
    if _number(get(status, "downtimeMs")):
        parts.append("downtime " + units.milliseconds(status["downtimeMs"]))
    if _number(get(status, "durationSeconds")):
        parts.append("took " + units.duration(status["durationSeconds"]))
    return f" ({', '.join(parts)})" if parts else ""


def condition_of(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    conditions = get(status, "conditions")
    for condition in conditions if isinstance(conditions, list) else ():
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return condition
    return None


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
