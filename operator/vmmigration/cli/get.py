"""``vmmigration get vmm|hv|pool [NAME]``: VMMigrations, Hypervisors and HypervisorPools as tables,
in human units."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import click
from vmmigration.cli.cluster import Where, cluster_options
from vmmigration.core import units
from vmmigration.core.drains import POOL_COLUMNS, pool_row
from vmmigration.core.memory import parse_timestamp
from vmmigration.core.moves import condition_of, get as field, percent, section, selector_text

KINDS = {"vmm": "vmm", "vmmigration": "vmm", "vmmigrations": "vmm",
         "hv": "hv", "hypervisor": "hv", "hypervisors": "hv",
         "hvpool": "pool", "pool": "pool", "pools": "pool", "hypervisorpool": "pool", "hypervisorpools": "pool"}

VMM_COLUMNS = ("NAME", "DOMAIN", "HOST", "TARGET", "PHASE", "PROGRESS", "DOWNTIME", "DURATION",
               "REASON", "AGE")
HV_COLUMNS = ("NAME", "REACHABLE", "MAINTENANCE", "DOMAINS", "FREE", "MEMORY", "IN", "OUT",
              "LIBVIRT", "PROBED", "AGE")
# The conditions that say why a VMMigration is not simply Placed, most telling first.
_TROUBLE = ("Blocked", "Drifted", "Queued")


@click.command()
@click.argument("kind", metavar="vmm|hv|pool", type=click.Choice(sorted(KINDS), case_sensitive=False))
@click.argument("name", required=False)
@click.option("-A", "--all-namespaces", is_flag=True, help="VMMigrations of every namespace.")
@cluster_options
def get(kind: str, name: str | None, all_namespaces: bool, where: Where) -> None:
    """List VMMigrations (vmm), Hypervisors (hv) or HypervisorPools (pool, hvpool), or show the
    one named NAME (`vmmigration pool NAME` shows a pool in full)."""
    cluster, namespace = where.connect()
    now = time.time()
    if KINDS[kind.lower()] == "pool":
        pools = [cluster.hypervisorpool(name)] if name else cluster.hypervisorpools()
        show(POOL_COLUMNS, [pool_row(i, now=now) for i in sorted(pools, key=_name)])
        if not pools:
            click.echo("No HypervisorPools found.", err=True)
        return
    if KINDS[kind.lower()] == "hv":
        items = [cluster.hypervisor(name)] if name else cluster.hypervisors()
        show(HV_COLUMNS, [hypervisor_row(i, now=now) for i in sorted(items, key=_name)])
        if not items:
            click.echo("No Hypervisors found.", err=True)
        return
    if name:
        items = [cluster.vmmigration(namespace, name)]
    else:
        items = cluster.vmmigrations(None if all_namespaces else namespace)
    columns: Sequence[str] = VMM_COLUMNS
    rows = [vmmigration_row(i, now=now) for i in sorted(items, key=_namespaced)]
    if all_namespaces:
        columns = ("NAMESPACE", *columns)
        rows = [[str(field(i, "metadata", "namespace")), *row]
                for i, row in zip(sorted(items, key=_namespaced), rows)]
    show(columns, rows)
    if not items:
        where_text = "any namespace" if all_namespaces else f"namespace {namespace}"
        click.echo(f"No VMMigrations found in {where_text}.", err=True)


def show(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """kubectl's look: no borders, capitals, columns three spaces apart, nothing cut short."""
    if not rows:
        return
    widths = [max(len(row[i]) for row in (columns, *rows)) for i in range(len(columns))]
    for row in (columns, *rows):
        click.echo("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def vmmigration_row(obj: Mapping[str, Any], *, now: float) -> list[str]:
    spec, status = section(obj, "spec"), section(obj, "status")
    phase = str(status.get("phase") or "-")
    if spec.get("abort") and phase != "Aborted":
        phase += " (aborting)"
    elif spec.get("dryRun"):
        phase += " (dry run)"
    progress = "-"
    if status.get("phase") == "Migrating":
        p = section(status, "progress")
        progress = f"{percent(status):.0f}%"
        if isinstance(p.get("memoryRemainingBytes"), int):
            progress += f" {units.size(p['memoryRemainingBytes'])} left"
        if isinstance(p.get("etaSeconds"), (int, float)):
            progress += f" ETA {units.duration(p['etaSeconds'])}"
    return [
        str(field(obj, "metadata", "name")),
        str(spec.get("domain") or "-"),
        str(status.get("currentHypervisor") or "-"),
        target(spec, status),
        phase,
        progress,
        _or_dash(status.get("downtimeMs"), units.milliseconds),
        _or_dash(status.get("durationSeconds"), units.duration),
        reason(status),
        _age(field(obj, "metadata", "creationTimestamp"), now=now),
    ]


def target(spec: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """The named Hypervisor, or the selector with the host it picked: ``zone=lab→kvm-c``."""
    if spec.get("targetHypervisor"):
        return str(spec["targetHypervisor"])
    if spec.get("targetSelector"):
        chosen = status.get("targetHypervisor")
        return selector_text(spec["targetSelector"]) + (f"→{chosen}" if chosen else "")
    return "-"


def reason(status: Mapping[str, Any]) -> str:
    for kind in _TROUBLE:
        condition = condition_of(status, kind)
        if condition and condition.get("status") == "True" and condition.get("reason"):
            return str(condition["reason"])
    if status.get("phase") == "Failed":
        return str(field(status, "lastFailure", "reason") or "-")
    return "-"


def hypervisor_row(obj: Mapping[str, Any], *, now: float) -> list[str]:
    spec, status = section(obj, "spec"), section(obj, "status")
    reachable = condition_of(status, "Reachable")
    return [
        str(field(obj, "metadata", "name")),
        str((reachable or {}).get("status") or "Unknown"),
        "yes" if spec.get("maintenance") else "no",
        _or_dash(status.get("domainCount"), str),
        _or_dash(status.get("memoryFreeBytes"), units.size),
        _or_dash(status.get("memoryTotalBytes"), units.size),
        f"{status.get('inboundMigrations') or 0}/{spec.get('maxInboundMigrations', 2)}",
        f"{status.get('outboundMigrations') or 0}/{spec.get('maxOutboundMigrations', 2)}",
        str(status.get("libvirtVersion") or "-"),
        _age(status.get("lastProbeTime"), now=now),
        _age(field(obj, "metadata", "creationTimestamp"), now=now),
    ]


def _or_dash(value: Any, show: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(show(value))
    return "-"


def _age(text: Any, *, now: float) -> str:
    at = parse_timestamp(text)
    return "-" if at is None else units.age(now - at)


def _name(obj: Mapping[str, Any]) -> str:
    return str(field(obj, "metadata", "name"))


def _namespaced(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(field(obj, "metadata", "namespace")), _name(obj)
