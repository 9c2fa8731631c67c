"""``vmmigration inspect``: where a domain runs, and whether a job is still active."""

from __future__ import annotations

import json

import click

from vmmigration.cli.common import hosts as host_options
from vmmigration.core.errors import HostUnreachable


@click.command()
@host_options
def inspect(domain: str, source: str, target: str) -> None:
    """Say where DOMAIN runs and whether a migration job is still active (after a crash)."""
    from vmmigration.adapters.libvirt import Host
    from vmmigration.service import aftermath

    hosts: dict[str, Host | None] = {}
    for role, uri in (("source", source), ("target", target)):
        try:
            hosts[role] = Host(uri)
        except HostUnreachable as error:
            click.echo(f"warning: {error}", err=True)
            hosts[role] = None
    found = aftermath.inspect(domain=domain, source=hosts["source"], target=hosts["target"])
    click.echo(json.dumps({
        "domain": domain,
        "location": found.location.value,
        "jobActive": found.job_active,
        "source": found.source and found.source.state.value,
        "target": found.target and found.target.state.value,
        "downtimeMs": found.final and found.final.downtime_ms,
        "unreachable": list(found.unreachable),
    }, indent=2))
