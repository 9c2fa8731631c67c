"""The command line: ``vmmigration migrate``, ``plan``, ``report``, ``inspect`` and ``operator``,
which talk to libvirt, ``get``, ``move``, ``abort``, ``watch``, ``delete``, ``drain``,
``undrain`` and ``pool``, which act through the Kubernetes API, and ``domains``, which finds a
Hypervisor through the API and asks its libvirt (all but the libvirt-only ones also as the
kubectl plugin ``kubectl vmm``).

One module per command; this one holds the group and the entry points. The test
bed's commands (``sandbox``, ``demo``) are ``vmmigration-testbed``'s own.
"""

from __future__ import annotations

import logging
import sys

import click

from vmmigration.adapters.kube.api import ApiError
from vmmigration.cli import (
    abort,
    delete,
    domains,
    drain,
    get,
    inspect,
    migrate,
    move,
    operator,
    plan,
    pool,
    report,
    watch,
)
from vmmigration.cli.plugin import kubectl_vmm
from vmmigration.core.config import SettingsError
from vmmigration.core.errors import VirtError
from vmmigration.core.moves import MoveError


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine decides.")
def cli(verbose: bool) -> None:
    """Move libvirt/KVM virtual machines between hosts, safely."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for command in (migrate.migrate, plan.plan, report.report, inspect.inspect, operator.operator,
                get.get, move.move, abort.abort, watch.watch, delete.delete, drain.drain, drain.undrain,
                pool.pool, domains.domains):
    cli.add_command(command)


def main() -> None:
    """Entry point: known failures become one readable line and exit 1, not a traceback."""
    _run(cli, prog_name="vmmigration")


def kubectl_plugin() -> None:
    """Entry point of ``kubectl-vmm``, which kubectl runs for ``kubectl vmm``."""
    _run(kubectl_vmm, prog_name="kubectl vmm")


def _run(group: click.Group, *, prog_name: str) -> None:
    try:
        group(prog_name=prog_name)
    except (VirtError, SettingsError, ApiError, MoveError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
