"""``vmmigration delete hv NAME…|-l SELECTOR [--wait]``: delete Hypervisors, and wait until they are gone.

The chart's pre-delete hook runs it (templates/uninstall-hook.yaml): only the
running operator removes its finalizer from a deleted Hypervisor, so the
release's Hypervisors must go before ``helm uninstall`` stops the operator. A
Hypervisor that is not there is no error (kubectl's ``--ignore-not-found``): a
hook that runs again finds nothing to do.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from vmmigration.adapters.kube.api import ApiError, Cluster, NotFound
from vmmigration.cli.cluster import Where, cluster_options
from vmmigration.cli.watch import OUTAGE_SECONDS
from vmmigration.core import units
from vmmigration.core.deletion import Deleted, holdup, pending, remaining
from vmmigration.core.moves import get

KINDS = ("hv", "hypervisor", "hypervisors")
EXIT_TIMEOUT = 1
# The operator releases a deleted Hypervisor within a moment of seeing it.
POLL_SECONDS = 1.0


@click.command()
@click.argument("kind", metavar="hv", type=click.Choice(KINDS, case_sensitive=False))
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("-l", "--selector", default=None, metavar="SELECTOR",
              help="Those whose labels match, as kubectl's -l (k=v,k!=v,…), instead of names.")
@click.option("--wait", is_flag=True, help="Wait until they are gone (the operator released them).")
@click.option("--timeout", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
              help="With --wait: give up (exit 1) after this long; 0 waits as long as it takes.")
@cluster_options
def delete(kind: str, names: tuple[str, ...], selector: str | None, wait: bool, timeout: float,
           where: Where) -> None:
    """Delete the Hypervisors named NAME, or those -l SELECTOR matches; one not found is no error.

    With --wait: exit 0 once every one is gone, 1 when --timeout passes first, saying what holds them.
    """
    if bool(names) == bool(selector):
        raise click.UsageError("name the Hypervisors, or select them with -l SELECTOR, not both" if names
                               else "name the Hypervisors to delete, or select them with -l SELECTOR")
    cluster, _ = where.connect()
    if selector:
        names = tuple(sorted(str(get(i, "metadata", "name")) for i in cluster.hypervisors(selector=selector)))
        if not names:
            click.echo(f"No Hypervisors match {selector}.", err=True)
    deleted: list[Deleted] = []
    for name in dict.fromkeys(names):
        try:
            answer = cluster.delete_hypervisor(name)
        except NotFound:
            click.echo(f"hypervisor {name}: not found, nothing to delete")
            continue
        held = pending(answer)
        click.echo(f"hypervisor {name} deleted" if held is None
                   else f"hypervisor {name} marked for deletion")
        if held is not None:
            deleted.append(held)
    if wait and deleted:
        sys.exit(wait_until_gone(cluster, deleted, timeout=timeout))


def wait_until_gone(cluster: Cluster, deleted: Sequence[Deleted], *, timeout: float) -> int:
    """Poll until no deleted Hypervisor is left, saying as each goes; the exit code."""
    deadline = time.monotonic() + timeout if timeout else None
    left: list[Mapping[str, Any]] | None = None  # None until the API server has answered once
    outage_since: float | None = None
    while True:
        try:
            left = remaining(deleted, cluster.hypervisors())
            outage_since = None
        except ApiError as error:
            if error.status is not None:  # a refusal, not an outage: asking again will not help
                raise
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > OUTAGE_SECONDS:
                raise
        if left is not None:
            names = {get(i, "metadata", "name") for i in left}
            for gone in (d for d in deleted if d.name not in names):
                click.echo(f"hypervisor {gone.name} gone")
            deleted = [d for d in deleted if d.name in names]
            if not deleted:
                return 0
        if deadline is not None and time.monotonic() >= deadline:
            _timed_out(timeout, deleted, left)
            return EXIT_TIMEOUT
        time.sleep(POLL_SECONDS)


def _timed_out(timeout: float, deleted: Sequence[Deleted], left: list[Mapping[str, Any]] | None) -> None:
    count = f"{len(deleted)} Hypervisor{'s' if len(deleted) != 1 else ''}"
    click.echo(f"error: timed out after {units.duration(timeout)}; {count} still there", err=True)
    if left is None:
        click.echo(f"  {', '.join(d.name for d in deleted)}: the API server never answered", err=True)
        return
    now = time.time()
    for obj in left:
        click.echo(f"  {holdup(obj, now=now)}", err=True)
