"""``vmmigration move DOMAIN --to HOST | --selector k=v``: place a domain through its VMMigration.

The domain's VMMigration is patched if it has one (a second would only be
Blocked as a conflict), else one is created, named after the domain.
"""

from __future__ import annotations

import sys

import click

from vmmigration.adapters.kube.api import ApiError, NotFound
from vmmigration.cli.cluster import Where, cluster_options, key
from vmmigration.cli.common import MODES, choice
from vmmigration.cli.watch import follow
from vmmigration.core.moves import Expect, Move, existing, object_name, parse_selector


def _selector(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    try:
        return parse_selector(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.command()
@click.argument("domain")
@click.option("--to", "target", default=None, metavar="HYPERVISOR", help="The Hypervisor to place it on.")
@click.option("-l", "--selector", default=None, metavar="KEY=VALUE[,…]", callback=_selector,
              help="Or any Hypervisor with these labels (the operator picks one).")
@click.option("--mode", type=choice(MODES), default=None,
              help="auto (the default), live, non-live or offline.")
@click.option("--once", is_flag=True, help="Move it once, then leave it alone (placement Once).")
@click.option("--bandwidth", type=click.IntRange(min=0), default=None, metavar="MiB/s",
              help="Cap the migration's bandwidth (0 = unlimited).")
@click.option("--name", default=None, help="The VMMigration's name (default: the domain's, or its existing one).")
@click.option("--wait", is_flag=True, help="Follow the move with a progress bar until it ends.")
@click.option("--timeout", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
              help="With --wait: give up (exit 1) after this long; 0 waits for the outcome.")
@cluster_options
def move(domain: str, target: str | None, selector: dict[str, str] | None, mode: str | None,
         once: bool, bandwidth: int | None, name: str | None, wait: bool, timeout: float,
         where: Where) -> None:
    """Move DOMAIN to a Hypervisor (--to) or one matching labels (--selector).

    A move means "now": it also clears spec.abort and spec.dryRun. With --wait,
    exit 0 when placed, 4 when the attempt failed, 5 when aborted.
    """
    if (target is None) == (selector is None):
        raise click.UsageError("give exactly one of --to HYPERVISOR and --selector KEY=VALUE")
    request = Move(domain=domain, target=target, selector=selector,
                   mode=MODES[mode.lower()].value if mode else None, once=once,
                   bandwidth_mib_per_s=bandwidth)
    cluster, namespace = where.connect()
    if target is not None:
        try:
            cluster.hypervisor(target)
        except NotFound:
            raise ApiError(f"no Hypervisor named {target} (vmmigration get hv lists them)") from None
        except ApiError as error:
            if error.status != 403:  # a user who may not read Hypervisors may still move VMs
                raise
    found = existing(cluster.vmmigrations(namespace), domain=domain, name=name)
    if found is None:
        obj = cluster.create_vmmigration(
            namespace, request.manifest(namespace=namespace, name=name or object_name(domain)))
        verb = "created"
    else:
        patch = request.patch(found)
        if patch["spec"]:
            obj, verb = cluster.patch_vmmigration(namespace, str(found["metadata"]["name"]), patch), "patched"
        else:
            obj, verb = dict(found), "unchanged"
    click.echo(f"vmmigration {key(obj)} {verb}: {domain} → {target or _labels(selector)}")
    if wait:
        sys.exit(follow(cluster, obj, expect=Expect.PLACED, timeout=timeout))


def _labels(selector: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))
