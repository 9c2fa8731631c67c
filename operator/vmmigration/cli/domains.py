"""``vmmigration domains HOST``: every libvirt domain on a Hypervisor, read from its libvirt.

A Hypervisor's status counts its domains by state but names only a few of them
(core.status.DOMAINS_IN_STATUS), so that the object stays small on a host of
hundreds of VMs. This verb lists them all: it reads the Hypervisor through the
Kubernetes API for its ``spec.uri`` and asks that libvirt directly.

It connects as ``migrate`` and ``inspect`` do, with the user's own libvirt
credentials (~/.pki/libvirt, the ssh agent), never the operator's Secret: a
user who may list Hypervisors need not be allowed to read Secrets, and key
material is not copied onto a workstation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

from vmmigration.adapters.kube.api import ApiError, Cluster, NotFound
from vmmigration.cli.cluster import Where, cluster_options
from vmmigration.cli.get import show
from vmmigration.core import units
from vmmigration.core.model import DomainSummary
from vmmigration.core.moves import get as field
from vmmigration.core.status import domain_entry

COLUMNS = ("NAME", "STATE", "MEMORY", "PERSISTENT")


@click.command()
@click.argument("host")
@click.option("--json", "as_json", is_flag=True,
              help="Print the domains as a JSON list, each in status.domains' shape.")
@cluster_options
def domains(host: str, as_json: bool, where: Where) -> None:
    """List every libvirt domain on Hypervisor HOST, from its libvirt (status.domains names
    only a few of them on a big host)."""
    from vmmigration.adapters.libvirt import Host

    cluster, _ = where.connect()
    uri = hypervisor_uri(cluster, host)
    with Host(uri) as libvirt_host:
        found = sorted(libvirt_host.domains(), key=lambda d: (d.name, d.uuid))
    if as_json:
        click.echo(json.dumps(as_entries(found), indent=2))
        return
    show(COLUMNS, rows(found))
    if not found:
        click.echo(f"No domains on hypervisor {host}.", err=True)


def hypervisor_uri(cluster: Cluster, host: str) -> str:
    """The libvirt URI of Hypervisor ``host``, as its spec gives it."""
    try:
        obj = cluster.hypervisor(host)
    except NotFound:
        raise ApiError(f"no Hypervisor named {host} (vmmigration get hv lists them)", status=404) from None
    uri = field(obj, "spec", "uri")
    if not isinstance(uri, str) or not uri:
        raise ApiError(f"hypervisor {host} has no spec.uri")
    return uri


def rows(found: Iterable[DomainSummary]) -> list[list[str]]:
    """One table row per domain, memory in binary units as ``get hv`` shows it."""
    return [[d.name, d.state.value, units.size(d.memory_bytes), "yes" if d.persistent else "no"]
            for d in found]


def as_entries(found: Iterable[DomainSummary]) -> list[dict[str, Any]]:
    # The shape of status.domains, so that a script reading the status reads this too.
    return [domain_entry(d) for d in found]

