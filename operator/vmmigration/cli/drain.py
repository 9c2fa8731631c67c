"""``vmmigration drain HOST`` and ``undrain HOST``: a host into and out of maintenance, watched live.

``drain`` sets the Hypervisor's ``spec.maintenance: true``; the operator then
moves every domain off it and reports the drain in ``status.drain`` and the
Drained condition, which ``--wait`` (the default) follows with a progress bar.
``undrain`` clears it; the VMs that were displaced come home, and ``--wait``
follows them until they are. Ctrl-C stops watching only: the drain goes on
(``undrain`` stops it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from rich.console import Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from vmmigration.adapters.kube.api import ApiError, Cluster, NotFound
from vmmigration.cli.cluster import Where, cluster_options
from vmmigration.cli.common import EXIT_ABORTED, console
from vmmigration.cli.watch import EXIT_INTERRUPTED, EXIT_TIMEOUT, OUTAGE_SECONDS
from vmmigration.core import units
from vmmigration.core.drain import DRAINED_FROM_LABEL
from vmmigration.core.drains import (
    Displacement,
    DrainEnding,
    DrainVerdict,
    UndrainVerdict,
    displaced_of,
    drain_moves_running,
    drain_verdict,
    seen,
    stuck_lines,
    undrain_verdict,
)
from vmmigration.core.moves import get

# The operator writes a Hypervisor's status at each probe (every few seconds).
POLL_SECONDS = 2.0
DEFAULT_TIMEOUT = 1800

T = TypeVar("T")

_WAIT = click.option("--wait/--no-wait", default=True, show_default=True,
                     help="Follow it live until it is done.")
_TIMEOUT = click.option("--timeout", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT, show_default=True,
                        metavar="SECONDS", help="With --wait: give up (exit 1) after this long; 0 waits "
                                                "as long as it takes.")


@click.command()
@click.argument("host")
@_WAIT
@_TIMEOUT
@cluster_options
def drain(host: str, wait: bool, timeout: float, where: Where) -> None:
    """Put Hypervisor HOST into maintenance: the operator moves every domain off it.

    With --wait (the default): exit 0 once it is drained (the Drained condition is
    True), 1 when --timeout passes first (saying what still blocks it), 5 when
    maintenance is cleared before the host is empty.
    """
    cluster, _ = where.connect()
    obj = _hypervisor(cluster, host)
    if get(obj, "spec", "maintenance") is True:
        click.echo(f"hypervisor {host}: already in maintenance")
    else:
        obj = cluster.patch_hypervisor(host, {"spec": {"maintenance": True}})
        click.echo(f"hypervisor {host}: maintenance on; the operator drains it")
    if wait:
        sys.exit(follow_drain(cluster, obj, timeout=timeout))


@click.command()
@click.argument("host")
@_WAIT
@_TIMEOUT
@cluster_options
def undrain(host: str, wait: bool, timeout: float, where: Where) -> None:
    """Take Hypervisor HOST out of maintenance: its displaced VMs come back.

    Clearing maintenance also stops a drain under way (spec.drain.whenCancelled
    says what happens to its running moves). With --wait (the default): exit 0
    once every displaced VM is back and no move of the drain is running, 1 when
    --timeout passes first, saying which VMs are still on their way.
    """
    cluster, _ = where.connect()
    obj = _hypervisor(cluster, host)
    expected = displaced_of(obj)
    if get(obj, "spec", "maintenance") is True:
        obj = cluster.patch_hypervisor(host, {"spec": {"maintenance": False}})
        click.echo(f"hypervisor {host}: maintenance off"
                   + (f"; {len(expected)} displaced VM{'s' if len(expected) != 1 else ''} to come back"
                      if expected else ""))
    else:
        click.echo(f"hypervisor {host}: not in maintenance")
    if wait:
        sys.exit(follow_undrain(cluster, obj, expected=expected, timeout=timeout))


def _hypervisor(cluster: Cluster, host: str) -> dict[str, Any]:
    try:
        return cluster.hypervisor(host)
    except NotFound:
        raise ApiError(f"no Hypervisor named {host} (vmmigration get hv lists them)", status=404) from None


# ---- following a drain -------------------------------------------------------------


class _DrainView(Progress):
    """A progress bar of the domains moved, with the blockers and the Drained message beneath."""

    def __init__(self, name: str) -> None:
        self.notes = Text()  # before Progress starts drawing
        super().__init__(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("moved"), TimeElapsedColumn(),
                         TextColumn("{task.fields[detail]}", markup=False), console=console)
        self.task = self.add_task(name, total=None, detail="")

    def show(self, judged: DrainVerdict) -> None:
        drain = judged.drain
        if drain.state:
            detail = (f"{drain.moving} moving · {drain.queued} queued · {drain.failed} failed · "
                      f"{drain.blocked} blocked")
            self.update(self.task, total=drain.total or None, completed=drain.moved, detail=detail)
        else:
            self.update(self.task, detail=judged.line)
        notes = [f"  blocked: {b}" for b in drain.blockers]
        if judged.message:
            notes.append(f"  {judged.message}")
        self.notes = Text("\n".join(notes))

    def get_renderables(self) -> Iterable[RenderableType]:
        yield Group(self.make_tasks_table(self.tasks), self.notes)


class _DrainLines:
    """For logs and pipes: a line whenever the counts, the blockers or the message change."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: str | None = None

    def show(self, judged: DrainVerdict) -> None:
        line = judged.line + (f" ({judged.message})" if judged.message and judged.drain.state else "")
        if line != self.last:
            self.last = line
            click.echo(f"{self.name}: {line}")


def follow_drain(cluster: Cluster, obj: dict[str, Any], *, timeout: float) -> int:
    """Poll the Hypervisor until the Drained condition is True; print the outcome; the exit code."""
    name = str(get(obj, "metadata", "name"))
    deadline = time.monotonic() + timeout if timeout else None
    try:
        if console.is_terminal:
            with _DrainView(name) as view:
                obj, judged = _poll_drain(cluster, name, obj, view.show, deadline=deadline)
                if judged.ending is DrainEnding.DRAINED:
                    view.notes = Text()
                    view.update(view.task, total=max(judged.drain.total, 1),
                                completed=max(judged.drain.total, 1), detail="")
        else:
            obj, judged = _poll_drain(cluster, name, obj, _DrainLines(name).show, deadline=deadline)
    except KeyboardInterrupt:
        click.echo(f"stopped watching; the drain of {name} carries on (vmmigration undrain {name} stops it)",
                   err=True)
        return EXIT_INTERRUPTED
    if judged.ending is DrainEnding.DRAINED:
        click.echo(f"hypervisor {name}: {judged.line}")
        return 0
    if judged.ending is DrainEnding.CANCELLED:
        click.echo(f"error: hypervisor {name}: {judged.line}", err=True)
        return EXIT_ABORTED
    click.echo(f"error: timed out after {units.duration(timeout)}; {name} is not drained", err=True)
    for line in stuck_lines(obj, now=time.time()):
        click.echo(f"  {line}", err=True)
    return EXIT_TIMEOUT


def _poll_drain(cluster: Cluster, name: str, obj: dict[str, Any], show: Callable[[DrainVerdict], None],
                *, deadline: float | None) -> tuple[dict[str, Any], DrainVerdict]:
    while True:
        judged = drain_verdict(obj, now=time.time())
        if judged.ending is not None:
            return obj, judged
        show(judged)
        if deadline is not None and time.monotonic() >= deadline:
            return obj, judged
        time.sleep(POLL_SECONDS)
        obj = _again(lambda: cluster.hypervisor(name), name)


def _again(read: Callable[[], T], name: str) -> T:
    """Read again, riding out an API server restart or a network blip (not a refusal)."""
    outage_since: float | None = None
    while True:
        try:
            return read()
        except NotFound:
            raise ApiError(f"Hypervisor {name} was deleted", status=404) from None
        except ApiError as error:
            if error.status is not None:  # a refusal: asking again will not help
                raise
            outage_since = outage_since or time.monotonic()
            if time.monotonic() - outage_since > OUTAGE_SECONDS:
                raise
            time.sleep(POLL_SECONDS)


# ---- following an undrain ----------------------------------------------------------


class _UndrainView(Progress):
    """A progress bar of the displaced VMs back home, with those still on their way beneath."""

    def __init__(self, name: str) -> None:
        self.notes = Text()  # before Progress starts drawing
        super().__init__(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("back"), TimeElapsedColumn(),
                         TextColumn("{task.fields[detail]}", markup=False), console=console)
        self.task = self.add_task(name, total=None, detail="")

    def show(self, judged: UndrainVerdict) -> None:
        total = len(judged.back) + len(judged.returning)
        self.update(self.task, total=max(total, 1), completed=len(judged.back) if total else 0,
                    detail=f"{judged.moving} drain moves running" if judged.moving else "")
        self.notes = Text("\n".join(f"  on the way back: {r}" for r in judged.returning)
                          or ("" if judged.returning or judged.moving else judged.line))

    def get_renderables(self) -> Iterable[RenderableType]:
        yield Group(self.make_tasks_table(self.tasks), self.notes)


class _UndrainLines:
    def __init__(self, name: str) -> None:
        self.name = name
        self.last: str | None = None

    def show(self, judged: UndrainVerdict) -> None:
        if judged.line != self.last:
            self.last = judged.line
            click.echo(f"{self.name}: {judged.line}")


def follow_undrain(cluster: Cluster, obj: dict[str, Any], *, expected: list[Displacement],
                   timeout: float) -> int:
    """Poll until the displaced VMs are back and the drain's moves ended; the exit code."""
    name = str(get(obj, "metadata", "name"))
    deadline = time.monotonic() + timeout if timeout else None
    reader = _Returns(cluster, name)
    try:
        if console.is_terminal:
            with _UndrainView(name) as view:
                judged = _poll_undrain(cluster, name, obj, expected, reader, view.show, deadline=deadline)
                if judged.done:
                    view.notes = Text()
                    view.update(view.task, total=max(len(judged.back), 1), completed=max(len(judged.back), 1))
        else:
            judged = _poll_undrain(cluster, name, obj, expected, reader, _UndrainLines(name).show,
                                   deadline=deadline)
    except KeyboardInterrupt:
        click.echo(f"stopped watching; the VMs displaced from {name} carry on coming back", err=True)
        return EXIT_INTERRUPTED
    for stays in judged.stays:
        click.echo(f"not coming back: {stays}")
    if judged.done:
        click.echo(f"hypervisor {name}: {judged.line}")
        return 0
    if judged.again:
        click.echo(f"error: hypervisor {name}: {judged.line}; its VMs will not come back while it is", err=True)
        return EXIT_ABORTED
    click.echo(f"error: timed out after {units.duration(timeout)}; {name}: {judged.line}", err=True)
    return EXIT_TIMEOUT


class _Returns:
    """Reads the VMMigrations an undrain waits for; falls back on the status when it may not."""

    def __init__(self, cluster: Cluster, host: str) -> None:
        self.cluster = cluster
        self.host = host
        self.may_read_vmmigrations = True
        self.may_list_drain_moves = True

    def vmmigrations(self, keys: Iterable[str]) -> dict[str, dict[str, Any] | None] | None:
        if not self.may_read_vmmigrations:
            return None
        found: dict[str, dict[str, Any] | None] = {}
        for key in keys:
            namespace, _, plain = key.partition("/")
            try:
                found[key] = self.cluster.vmmigration(namespace, plain)
            except NotFound:
                found[key] = None
            except ApiError as error:
                if error.status != 403:
                    raise
                self.may_read_vmmigrations = False  # the Hypervisor's status has to do
                return None
        return found

    def drain_moving(self) -> int | None:
        if not self.may_list_drain_moves:
            return None
        try:
            made = self.cluster.vmmigrations(None, selector=f"{DRAINED_FROM_LABEL}={self.host}")
        except ApiError as error:
            if error.status != 403:
                raise
            self.may_list_drain_moves = False  # status.drain.moving has to do
            return None
        return drain_moves_running(made)


def _poll_undrain(cluster: Cluster, name: str, obj: dict[str, Any], expected: list[Displacement],
                  reader: _Returns, show: Callable[[UndrainVerdict], None],
                  *, deadline: float | None) -> UndrainVerdict:
    while True:
        vmmigrations: dict[str, dict[str, Any] | None] | None = {}
        moving: int | None = 0
        if seen(obj) and get(obj, "spec", "maintenance") is not True:  # else there is nothing to look at yet
            keys = {d.vmmigration for d in (*expected, *displaced_of(obj))}
            vmmigrations = _again(lambda: reader.vmmigrations(keys), name)
            moving = _again(reader.drain_moving, name)
        judged = undrain_verdict(obj, expected=expected, vmmigrations=vmmigrations, drain_moving=moving)
        if judged.done or judged.again:
            return judged
        show(judged)
        if deadline is not None and time.monotonic() >= deadline:
            return judged
        time.sleep(POLL_SECONDS)
        obj = _again(lambda: cluster.hypervisor(name), name)
