"""What the operator reads from a VMMigration's annotations (the live body kopf keeps)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vmmigration.core.rebalance import REBALANCE_ANNOTATION, parse_hint


def annotations_of(body: Any) -> Mapping[str, Any]:
    found = (body.get("metadata") or {}).get("annotations")
    return found if isinstance(found, Mapping) else {}


def rebalance_hint(body: Any, *, now: float) -> str | None:
    """The host rebalancing asked this VM to move to, while the request is fresh."""
    return parse_hint(annotations_of(body).get(REBALANCE_ANNOTATION), now=now)
