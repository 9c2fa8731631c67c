"""Pure: what ``vmmigration delete hv --wait`` decides while Hypervisors go away.

A Hypervisor the operator probes carries kopf's finalizer, which the operator
removes once it sees the deletion; until then the API server keeps the object,
marked for deletion. Waiting is therefore about the objects that were deleted,
known by their uid: one created again under the same name is another object,
and not waited for. When the wait times out, :func:`holdup` says what holds
each one (most often: the operator is not running to release its finalizer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from vmmigration.core import units
from vmmigration.core.memory import parse_timestamp
from vmmigration.core.moves import get

# kopf's finalizer under the operator's group (adapters.kube.handlers sets it).
OPERATOR_FINALIZER = "vmmigration.dev/finalizer"


@dataclasses.dataclass(frozen=True)
class Deleted:
    """An object whose deletion the API server accepted but has not finished."""

    name: str
    uid: str


def pending(answer: Mapping[str, Any]) -> Deleted | None:
    """What the answer to a DELETE leaves to wait for: None when the object is already gone.

    The API server answers with the object when finalizers keep it (deletionTimestamp set),
    and with the object's last state or a Status when it removed it at once.
    """
    if answer.get("kind") == "Status" or not get(answer, "metadata", "finalizers"):
        return None
    name, uid = get(answer, "metadata", "name"), get(answer, "metadata", "uid")
    if not isinstance(name, str) or not isinstance(uid, str):
        return None
    return Deleted(name=name, uid=uid)


def remaining(deleted: Iterable[Deleted], present: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The present objects that are one of ``deleted`` (same name and uid), in the order deleted."""
    by_key = {(get(obj, "metadata", "name"), get(obj, "metadata", "uid")): obj for obj in present}
    return [by_key[(d.name, d.uid)] for d in deleted if (d.name, d.uid) in by_key]


def holdup(obj: Mapping[str, Any], *, now: float) -> str:
    """Why a deleted object is still there, in a line: its finalizers, and what to check."""
    name = get(obj, "metadata", "name")
    since = parse_timestamp(get(obj, "metadata", "deletionTimestamp"))
    finalizers = [str(f) for f in get(obj, "metadata", "finalizers") or ()]
    waited = "" if since is None else f" for {units.age(max(0.0, now - since))}"
    if OPERATOR_FINALIZER in finalizers:
        others = [f for f in finalizers if f != OPERATOR_FINALIZER]
        also = f" (and {', '.join(others)})" if others else ""
        return (f"{name}: still holding finalizer {OPERATOR_FINALIZER}{also}{waited}; the operator "
                "removes it when it sees the deletion: is the operator running?")
    if finalizers:
        return f"{name}: still holding finalizer {', '.join(finalizers)}{waited}"
    return f"{name}: being deleted{waited}, no finalizer left"
