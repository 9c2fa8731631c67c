"""What every command shares: the console, exit codes, and the option types."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

import click
from rich.console import Console

from vmmigration.core.model import Mode, OnTimeout

EXIT_USAGE = 2
EXIT_PRECHECK = 3
EXIT_MIGRATION = 4
EXIT_ABORTED = 5

# Piped into a file or CI log, rich would assume 80 columns and squeeze the tables.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)


def mib(value: float) -> str:
    return f"{value / (1024 * 1024):.1f} MiB"


def choice(names: Mapping[str, object]) -> click.Choice[str]:
    return click.Choice(sorted(names), case_sensitive=False)


def libvirt_uri(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme or any(c.isspace() for c in value):
        raise click.BadParameter(f"{value!r} is not a libvirt URI (for example qemu+tcp://host/system)")
    return value


MODES = {"auto": Mode.AUTO, "live": Mode.LIVE, "non-live": Mode.NON_LIVE, "offline": Mode.OFFLINE}
ON_TIMEOUT = {"abort": OnTimeout.ABORT, "suspend": OnTimeout.SUSPEND, "post-copy": OnTimeout.POST_COPY}

F = TypeVar("F", bound=Callable[..., object])


def hosts(command: F) -> F:
    """The DOMAIN argument and the --from and --to URIs every host-facing command takes."""
    command = click.option("--to", "target", required=True, metavar="URI", callback=libvirt_uri,
                           help="libvirt URI of the target host.")(command)
    command = click.option("--from", "source", required=True, metavar="URI", callback=libvirt_uri,
                           help="libvirt URI of the source host.")(command)
    return click.argument("domain")(command)


def fail(as_json: bool, reason: str, lines: list[str], *, code: int) -> None:
    if as_json:
        click.echo(json.dumps({"error": reason, "messages": lines}))
    else:
        for line in lines:
            click.echo(f"error: {line}", err=True)
    sys.exit(code)
