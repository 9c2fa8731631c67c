"""Pure: which pool a Hypervisor belongs to, and the selector over a pool.

A pool is the set of Hypervisors with the same value of the label
``vmmigration.dev/pool``; those without the label form the default pool. A
drain sends a host's VMs to the rest of its pool, and rebalancing evens the
load within one. A label rather than a field: an SRE already groups hosts by
labels (rack, zone, hardware), and a selector over them is what VMMigrations
use anyway.
"""

from __future__ import annotations

from vmmigration.core.spec import HypervisorSpec, LabelRequirement, Selector

POOL_LABEL = "vmmigration.dev/pool"


def pool_of(spec: HypervisorSpec) -> str | None:
    """The host's pool, or None for the default pool."""
    return spec.label_map.get(POOL_LABEL) or None


def pool_selector(pool: str | None) -> Selector:
    if pool is None:
        return Selector(expressions=(LabelRequirement(key=POOL_LABEL, operator="DoesNotExist"),))
    return Selector(match_labels=((POOL_LABEL, pool),))


def selector_fields(pool: str | None) -> dict[str, object]:
    """The same selector as a VMMigration's spec.targetSelector."""
    if pool is None:
        return {"matchExpressions": [{"key": POOL_LABEL, "operator": "DoesNotExist"}]}
    return {"matchLabels": {POOL_LABEL: pool}}
