"""``vmmigration watch NAME``: follow one move from its status, with a live progress bar.

It ends with the outcome: exit 0 when the domain is placed, 4 when the attempt
failed, 5 when it was aborted, 1 when ``--timeout`` passed first. Ctrl-C stops
watching only; the move goes on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from vmmigration.adapters.kube.api import ApiError, Cluster, NotFound
from vmmigration.cli.cluster import Where, cluster_options, find, key
from vmmigration.cli.common import EXIT_ABORTED, EXIT_MIGRATION, console
from vmmigration.core import units
from vmmigration.core.moves import (
    Ending,
    Expect,
    Verdict,
    get,
    percent,
    progress_text,
    route,
    section,
    verdict,
)

EXIT_CODES = {Ending.SUCCEEDED: 0, Ending.FAILED: EXIT_MIGRATION, Ending.ABORTED: EXIT_ABORTED}
EXIT_TIMEOUT = 1
EXIT_INTERRUPTED = 130
# The operator writes progress at most every VMMIGRATION_PROGRESS_INTERVAL_SECONDS (2 s by default).
POLL_SECONDS = 1.0
# An API server restart or a network blip is not the end of a move: keep asking this long.
OUTAGE_SECONDS = 60.0


@click.command()
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(min=0), default=0, metavar="SECONDS",
              help="Give up (exit 1) after this long; 0 waits for the outcome.")
@cluster_options
def watch(name: str, timeout: float, where: Where) -> None:
    """Follow the move of VMMigration NAME (or of the domain NAME) until it ends.

    Exit 0 when placed, 4 when the attempt failed, 5 when aborted, 1 on timeout.
    """
    cluster, namespace = where.connect()
    found = find(cluster, namespace, name)
    sys.exit(follow(cluster, found, expect=Expect.PLACED, timeout=timeout))


class _Reporter(Protocol):
    def update(self, obj: dict[str, Any], judged: Verdict) -> None: ...


class _Bar:
    """A rich progress bar for a terminal: percent from status.progress, the details beside it."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress = progress
        self.task = progress.add_task(name, total=100, detail="")

    def update(self, obj: dict[str, Any], judged: Verdict) -> None:
        status = section(obj, "status")
        if judged.copying:
            self.progress.update(self.task, completed=percent(status),
                                 detail=f"{route(status)} │ {progress_text(status)}")
        else:
            self.progress.update(self.task, detail=judged.line)


class _Lines:
    """For logs and pipes: a line when the stage changes, and at every tenth of the copy."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: tuple[str, int] | None = None

    def update(self, obj: dict[str, Any], judged: Verdict) -> None:
        status = section(obj, "status")
        mark = ("", int(percent(status) // 10)) if judged.copying else (judged.line, 0)
        if mark != self.last:
            self.last = mark
            text = (f"{percent(status):.0f}% {route(status)} │ {progress_text(status)}"
                    if judged.copying else judged.line)
            click.echo(f"{self.name}: {text}")


def follow(cluster: Cluster, obj: dict[str, Any], *, expect: Expect, timeout: float) -> int:
    """Poll the VMMigration until its move ends; print the outcome; the exit code."""
    name = key(obj)
    namespace, plain = str(get(obj, "metadata", "namespace")), str(get(obj, "metadata", "name"))
    deadline = time.monotonic() + timeout if timeout else None
    try:
        if console.is_terminal:
            columns = (TextColumn("[bold]{task.description}"), BarColumn(),
                       TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                       TextColumn("{task.fields[detail]}"))
            with Progress(*columns, console=console) as progress:
                bar = _Bar(progress, name)
                ending, line = _poll(cluster, namespace, plain, obj, bar, expect=expect, deadline=deadline)
                if ending is Ending.SUCCEEDED and expect is Expect.PLACED:
                    progress.update(bar.task, completed=100, detail="")
        else:
            ending, line = _poll(cluster, namespace, plain, obj, _Lines(name),
                                 expect=expect, deadline=deadline)
    except KeyboardInterrupt:
        click.echo(f"stopped watching; {name} carries on (vmmigration abort {plain} stops it)", err=True)
        return EXIT_INTERRUPTED
    if ending is None:
        click.echo(f"error: timed out after {units.duration(timeout)}; {name}: {line}", err=True)
        return EXIT_TIMEOUT
    if ending is Ending.SUCCEEDED:
        click.echo(f"{name}: {line}")
    else:
        click.echo(f"error: {name}: {line}", err=True)
    return EXIT_CODES[ending]


def _poll(cluster: Cluster, namespace: str, name: str, obj: dict[str, Any], reporter: _Reporter,
          *, expect: Expect, deadline: float | None) -> tuple[Ending | None, str]:
    outage_since: float | None = None
    while True:
        judged = verdict(obj, expect=expect, now=time.time())
        if judged.ending is not None:
            return judged.ending, judged.line
        reporter.update(obj, judged)
        if deadline is not None and time.monotonic() >= deadline:
            return None, judged.line
        time.sleep(POLL_SECONDS)
        try:
            obj = cluster.vmmigration(namespace, name)
            outage_since = None
        except NotFound:
            raise ApiError(f"VMMigration {namespace}/{name} was deleted", status=404) from None
        except ApiError as error:
            if error.status is not None:  # a refusal, not an outage: asking again will not help
                raise
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > OUTAGE_SECONDS:
                raise
