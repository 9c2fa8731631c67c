"""``vmmigration pool NAME``: a HypervisorPool's balance, its members' load and the moves it plans."""

from __future__ import annotations

import time

import click

from vmmigration.adapters.kube.api import ApiError, NotFound
from vmmigration.cli.cluster import Where, cluster_options
from vmmigration.cli.get import show
from vmmigration.core.drains import HOST_COLUMNS, host_rows, plan_lines, pool_of_object, pool_summary


@click.command()
@click.argument("name")
@cluster_options
def pool(name: str, where: Where) -> None:
    """Show pool NAME: each host's memory load as a bar, the spread against the threshold,
    and the rebalancing moves planned, with why (dry run: the moves it would make)."""
    cluster, _ = where.connect()
    try:
        obj = cluster.hypervisorpool(name)
    except NotFound:
        raise ApiError(f"no HypervisorPool named {name} (vmmigration get pools lists them)",
                       status=404) from None
    found = pool_of_object(obj)
    now = time.time()
    for line in pool_summary(found, now=now):
        click.echo(line)
    click.echo()
    if found.hosts:
        show(HOST_COLUMNS, host_rows(found))
    else:
        click.echo(f"no member measured yet (Hypervisors labelled vmmigration.dev/pool={name})")
    click.echo()
    for line in plan_lines(found):
        click.echo(line)
