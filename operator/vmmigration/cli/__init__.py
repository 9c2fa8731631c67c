"""The command line: ``vmmigration migrate``, ``plan``, ``report``, ``inspect`` and ``operator``.

One module per command; this one holds the group and the entry point. The test
bed's commands (``sandbox``, ``demo``) are ``vmmigration-testbed``'s own.
"""

from __future__ import annotations

import logging
import sys

import click

from vmmigration.cli import inspect, migrate, operator, plan, report
from vmmigration.core.config import SettingsError
from vmmigration.core.errors import VirtError


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine decides.")
def cli(verbose: bool) -> None:
    """Move libvirt/KVM virtual machines between hosts, safely."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for command in (migrate.migrate, plan.plan, report.report, inspect.inspect, operator.operator):
    cli.add_command(command)


def main() -> None:
    """Entry point: known failures become one readable line and exit 1, not a traceback."""
    try:
        cli()
    except (VirtError, SettingsError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
