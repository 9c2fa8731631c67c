"""What every command shares: the console, exit codes, and the option types."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

import click
from rich.console import Console

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


def fail(as_json: bool, reason: str, lines: list[str], *, code: int) -> None:
    if as_json:
        click.echo(json.dumps({"error": reason, "messages": lines}))
    else:
        for line in lines:
            click.echo(f"error: {line}", err=True)
    sys.exit(code)
