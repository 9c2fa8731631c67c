"""``vmmigration report``: summarise and plot a migration saved with ``migrate --record``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from vmmigration.cli.common import EXIT_USAGE, console, mib
from vmmigration.core.trace import Trace


@click.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to save the plot (default: the recording's name with .png).")
def report(recording: Path, png: Path | None) -> None:
    """Summarise a migration saved with `migrate --record`, and plot it as a PNG."""
    from vmmigration.adapters.plot import PlotUnavailable, render

    try:
        trace = Trace.from_json(recording.read_text())
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="RECORDING") from None
    table = Table(title=f"{trace.domain}: {trace.outcome}", show_header=False)
    table.add_row("mode", trace.mode or "-")
    table.add_row("duration", "-" if trace.duration_seconds is None else f"{trace.duration_seconds:.2f} s")
    table.add_row("downtime", "unknown" if trace.downtime_ms is None else f"{trace.downtime_ms} ms")
    table.add_row("samples", str(len(trace.samples)))
    if trace.samples:
        table.add_row("passes", str(max(s.iteration for s in trace.samples)))
        table.add_row("peak dirty rate", mib(max(s.dirty_rate_bytes_per_s for s in trace.samples)) + "/s")
    switch = trace.switch_over()
    table.add_row("switch-over", "-" if switch is None else f"at {switch:.2f} s")
    for moment in trace.moments:
        if not moment.what.startswith("switch"):
            table.add_row(f"at {moment.seconds:.2f} s", moment.what)
    console.print(table)
    out = png or recording.with_suffix(".png")
    try:
        render(trace, out)
    except (PlotUnavailable, ValueError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"plot saved to {out}")
