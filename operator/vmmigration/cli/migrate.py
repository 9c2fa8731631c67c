"""``vmmigration migrate``: one migration from the command line, with live progress."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from vmmigration.cli.common import (
    EXIT_ABORTED,
    EXIT_MIGRATION,
    EXIT_PRECHECK,
    MODES,
    ON_TIMEOUT,
    choice,
    console,
    fail,
    hosts,
    mib,
)
from vmmigration.core.config import Settings
from vmmigration.core.model import (
    EffectiveMode,
    MigrationRequest,
    Persistence,
    Policy,
    Storage,
    Update,
    VolumeOptions,
)
from vmmigration.core.spec import POOL_NAME
from vmmigration.core.trace import Trace

# The policy's defaults, as the model defines them (and the CRD repeats, checked by a test).
DEFAULTS = Policy()

_STORAGE = {"shared": Storage.SHARED, "copy-all": Storage.COPY_ALL,
            "copy-incremental": Storage.COPY_INCREMENTAL}


class _StatsColumn(ProgressColumn):
    """Bytes, dirty rate and transfer rate as the engine reports them, not as rich guesses."""

    def render(self, task: Task) -> Text:
        f = task.fields
        if not f.get("total_bytes"):
            return Text(f.get("note", "starting…"), style="dim")
        eta = f.get("eta")
        eta_text = "∞" if eta is None else f"{eta:.0f}s"
        disks = f.get("disks") or ()
        if disks:
            # An Offline move carrying its disks: which volume, and the data of the copies.
            done = sum(1 for d in disks if d.state == "Verified")
            current = next((d for d in disks if d.state != "Verified"), disks[-1])
            return Text(
                f"disk {min(done + 1, len(disks))}/{len(disks)} {current.state.lower()} │ "
                f"{mib(f['processed'])} of {mib(f['total_bytes'])} data at {mib(f['rate'])}/s"
                f" │ ETA {eta_text}")
        return Text(
            f"{mib(f['remaining'])} left of {mib(f['total_bytes'])} │ sent {mib(f['processed'])}"
            f" at {mib(f['rate'])}/s │ dirty {mib(f['dirty'])}/s │ pass {f['iteration']}"
            f" │ ETA {eta_text}"
        )


@click.command()
@hosts
@click.option("--mode", type=choice(MODES), default="auto", show_default=True,
              help="auto = live when running, offline when shut off.")
@click.option("--on-timeout", type=choice(ON_TIMEOUT), default="abort",
              show_default=True, help="What to do with a live migration that does not converge.")
@click.option("--progress-timeout", type=click.FloatRange(min=0), default=DEFAULTS.progress_timeout_seconds, show_default=True,
              metavar="SECONDS", help="Escalate when remaining bytes stop going down this long (0 = never).")
@click.option("--completion-timeout-per-gib", type=click.FloatRange(min=0), default=DEFAULTS.completion_timeout_seconds_per_gib,
              show_default=True, metavar="SECONDS", help="Escalate past this many seconds per GiB (0 = never).")
@click.option("--hard-timeout", type=click.FloatRange(min=0), default=DEFAULTS.hard_timeout_seconds, show_default=True,
              metavar="SECONDS", help="Abort whatever happens after this long (0 = never).")
@click.option("--bandwidth", type=click.IntRange(min=0), default=0, metavar="MiB/s",
              help="Bandwidth cap (0 = unlimited).")
@click.option("--max-downtime", type=click.IntRange(min=0), default=0, metavar="MS",
              help="Longest pause allowed at switch-over (0 = QEMU's default).")
@click.option("--auto-converge", is_flag=True, help="Let QEMU throttle the guest's CPUs to converge.")
@click.option("--compressed", is_flag=True, help="Compress the migration stream.")
@click.option("--parallel", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Parallel migration connections.")
@click.option("--p2p/--no-p2p", default=True, show_default=True, help="Peer-to-peer migration.")
@click.option("--storage", type=choice(_STORAGE), default="shared",
              show_default=True, help="copy-all / copy-incremental copy disks the target cannot see.")
@click.option("--target-pool", default=None, metavar="POOL",
              help="Offline with copy-all/copy-incremental: the target pool for the carried disks "
                   "(default: the pool of the same name as the source's).")
@click.option("--delete-source-volumes", is_flag=True,
              help="Offline with copying storage: delete the source's disks once their copies are "
                   "verified and the source no longer defines the VM.")
@click.option("--persist/--transient", default=True, show_default=True,
              help="Define the VM on the target (libvirt's own default is transient).")
@click.option("--undefine-source/--keep-source", default=True, show_default=True,
              help="Remove the definition from the source (libvirt's own default keeps it).")
@click.option("--allow-unsafe", is_flag=True,
              help="Skip libvirt's storage safety check, for shared storage it cannot recognise.")
@click.option("--allow-older-target", is_flag=True,
              help="Allow a move to an older libvirt or QEMU (rolling an upgrade back); the "
                   "guest's machine type and CPU model are still checked against it.")
@click.option("--adopt", is_flag=True,
              help="Take over a migration job of DOMAIN that is already running (after a crash) "
                   "instead of starting one; the policy options apply to it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, without a progress bar.")
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the migration's samples as JSON (for `vmmigration report`).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save a PNG of memory remaining and dirty rate over time, switch-over marked.")
def migrate(domain: str, source: str, target: str, mode: str, on_timeout: str,
            progress_timeout: float, completion_timeout_per_gib: float, hard_timeout: float,
            bandwidth: int, max_downtime: int, auto_converge: bool, compressed: bool,
            parallel: int, p2p: bool, storage: str, target_pool: str | None,
            delete_source_volumes: bool, persist: bool, undefine_source: bool,
            allow_unsafe: bool, allow_older_target: bool, adopt: bool, as_json: bool, record: Path | None,
            plot: Path | None) -> None:
    """Migrate DOMAIN from one libvirt host to another, showing live progress.

    Ctrl-C aborts the migration; the VM keeps running on the source.
    """
    from vmmigration.adapters import libvirt as virt
    from vmmigration.service.engine import (
        MigrationCancelled,
        MigrationError,
        NoJobToAdopt,
        PrecheckFailed,
    )

    request = MigrationRequest(
        domain=domain,
        source_uri=source,
        target_uri=target,
        mode=MODES[mode.lower()],
        policy=Policy(
            on_timeout=ON_TIMEOUT[on_timeout.lower()],
            progress_timeout_seconds=progress_timeout,
            completion_timeout_seconds_per_gib=completion_timeout_per_gib,
            hard_timeout_seconds=hard_timeout,
            bandwidth_mib_per_s=bandwidth,
            max_downtime_ms=max_downtime,
            auto_converge=auto_converge,
            compressed=compressed,
            parallel_connections=parallel,
            peer_to_peer=p2p,
            allow_unsafe=allow_unsafe,
            allow_older_target=allow_older_target,
        ),
        storage=_STORAGE[storage.lower()],
        persistence=Persistence(persist_on_target=persist, undefine_on_source=undefine_source),
        volumes=VolumeOptions(target_pool=target_pool, delete_from_source=delete_source_volumes),
    )
    if delete_source_volumes and not undefine_source:
        raise click.UsageError("--delete-source-volumes needs --undefine-source: the source's "
                               "definition would name deleted disks")
    if target_pool is not None and not POOL_NAME.fullmatch(target_pool):
        raise click.BadParameter(f"{target_pool!r} is not a storage pool name", param_hint="--target-pool")
    cancel = threading.Event()

    def interrupted(_sig: int, _frame: FrameType | None) -> None:
        console.print("[yellow]aborting the migration…[/]")
        cancel.set()

    signal.signal(signal.SIGINT, interrupted)
    settings = Settings.from_env()
    engine = virt.engine(poll_interval_seconds=settings.poll_interval_seconds,
                         libvirt_timeout_seconds=settings.libvirt_timeout_seconds,
                         post_copy_resume=settings.post_copy_resume,
                         post_copy_resume_try_seconds=settings.post_copy_resume_try_seconds)
    run = engine.adopt if adopt else engine.migrate
    trace = Trace(domain=domain)
    began = time.monotonic()

    def keep(update: Any) -> None:
        trace.record(seconds=time.monotonic() - began, mode=update.mode, progress=update.progress,
                     note=update.note)

    def saved() -> None:
        if record is not None:
            trace.save(record)
        if plot is not None and trace.samples:
            from vmmigration.adapters.plot import PlotUnavailable, render
            try:
                render(trace, plot)
            except PlotUnavailable as error:
                click.echo(f"warning: {error}", err=True)

    try:
        if as_json:
            result = run(request, on_update=keep, cancel=cancel)
        else:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=20),
                TextColumn("{task.percentage:>5.1f}%"),
                _StatsColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task(f"{domain} Live", total=100.0)

                def show(update: Update) -> None:
                    keep(update)
                    fields: dict[str, Any] = {"eta": update.eta_seconds}
                    p = update.progress
                    if p is not None:
                        fields.update(total_bytes=p.data_total, processed=p.data_processed,
                                      remaining=p.data_remaining, dirty=p.dirty_rate_bytes_per_s,
                                      rate=p.transfer_rate_bytes_per_s, iteration=p.iteration,
                                      disks=update.disks)
                    if update.note:
                        bar.console.print(f"[cyan]{domain}: {update.note}[/]")
                    bar.update(task, completed=update.percent,
                               description=f"{domain} {update.mode.value}", **fields)

                result = run(request, on_update=show, cancel=cancel)
    except PrecheckFailed as error:
        saved()
        fail(as_json, "PrecheckFailed", [f"{f.reason}: {f.message}" for f in error.findings],
              code=EXIT_PRECHECK)
    except NoJobToAdopt as error:
        fail(as_json, "NoJobToAdopt", [str(error)], code=EXIT_PRECHECK)
    except MigrationCancelled as error:
        trace.fail("aborted", seconds=time.monotonic() - began)
        saved()
        fail(as_json, error.reason, [str(error)], code=EXIT_ABORTED)
    except MigrationError as error:
        trace.fail(error.reason, seconds=time.monotonic() - began)
        saved()
        fail(as_json, error.reason, [str(error)], code=EXIT_MIGRATION)

    trace.finish(result, seconds=time.monotonic() - began)
    saved()
    summary = {
        "domain": result.domain,
        "mode": result.mode.value,
        "durationSeconds": round(result.duration_seconds, 3),
        "downtimeMs": result.downtime_ms,
        "bytesTransferred": result.bytes_transferred,
        "target": target,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    table = Table(title=f"{domain} moved", show_header=False)
    table.add_row("mode", result.mode.value)
    table.add_row("duration", f"{result.duration_seconds:.2f} s")
    table.add_row("downtime", "unknown" if result.downtime_ms is None else f"{result.downtime_ms} ms")
    table.add_row("bytes moved", mib(result.bytes_transferred))
    table.add_row("runs on", target)
    if result.mode is EffectiveMode.LIVE_SUSPENDED:
        table.add_row("note", "did not converge live; the source was suspended to finish")
    console.print(table)
