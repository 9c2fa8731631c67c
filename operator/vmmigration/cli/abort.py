"""``vmmigration abort NAME``: stop a VMMigration's move (spec.abort), and start no new one."""

from __future__ import annotations

import sys

import click

from vmmigration.cli.cluster import Where, cluster_options, find, key
from vmmigration.cli.watch import follow
from vmmigration.core.moves import Expect, get


@click.command()
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the operator has stopped it (phase Aborted).")
@click.option("--timeout", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
              help="With --wait: give up (exit 1) after this long; 0 waits for the outcome.")
@cluster_options
def abort(name: str, wait: bool, timeout: float, where: Where) -> None:
    """Abort the move of VMMigration NAME (or of the domain NAME); the domain stays on its source.

    No new move starts until `vmmigration move` (or clearing spec.abort) asks again.
    """
    cluster, namespace = where.connect()
    obj = find(cluster, namespace, name)
    if get(obj, "spec", "abort") is True:
        click.echo(f"vmmigration {key(obj)}: abort already requested")
    else:
        patch = {"spec": {"abort": True}}
        obj = cluster.patch_vmmigration(namespace, str(obj["metadata"]["name"]), patch)
        click.echo(f"vmmigration {key(obj)}: abort requested")
    if wait:
        sys.exit(follow(cluster, obj, expect=Expect.ABORTED, timeout=timeout))
