"""The command line: ``vmmigration migrate``, ``inspect`` and ``sandbox``."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from vmmigration.config import Settings
from vmmigration.trace import Trace
from vmmigration.model import (
    EffectiveMode,
    MigrationRequest,
    Mode,
    OnTimeout,
    Persistence,
    Policy,
    Storage,
)

EXIT_USAGE = 2
EXIT_PRECHECK = 3
EXIT_MIGRATION = 4
EXIT_ABORTED = 5

# Piped into a file or CI log, rich would assume 80 columns and squeeze the tables.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)


def _mib(value: float) -> str:
    return f"{value / (1024 * 1024):.1f} MiB"


class _StatsColumn(ProgressColumn):
    """Bytes, dirty rate and transfer rate as the engine reports them, not as rich guesses."""

    def render(self, task: Task) -> Text:
        f = task.fields
        if not f.get("total_bytes"):
            return Text(f.get("note", "starting…"), style="dim")
        eta = f.get("eta")
        eta_text = "∞" if eta is None else f"{eta:.0f}s"
        return Text(
            f"{_mib(f['remaining'])} left of {_mib(f['total_bytes'])} │ sent {_mib(f['processed'])}"
            f" at {_mib(f['rate'])}/s │ dirty {_mib(f['dirty'])}/s │ pass {f['iteration']}"
            f" │ ETA {eta_text}"
        )


def _choice(names: Mapping[str, object]) -> click.Choice[str]:
    return click.Choice(sorted(names), case_sensitive=False)


def _uri(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme or any(c.isspace() for c in value):
        raise click.BadParameter(f"{value!r} is not a libvirt URI (for example qemu+tcp://host/system)")
    return value


_MODES = {"auto": Mode.AUTO, "live": Mode.LIVE, "non-live": Mode.NON_LIVE, "offline": Mode.OFFLINE}
_ON_TIMEOUT = {"abort": OnTimeout.ABORT, "suspend": OnTimeout.SUSPEND, "post-copy": OnTimeout.POST_COPY}
_STORAGE = {"shared": Storage.SHARED, "copy-all": Storage.COPY_ALL,
            "copy-incremental": Storage.COPY_INCREMENTAL}


def main() -> None:
    """Entry point: known failures become one readable line and exit 1, not a traceback."""
    from vmmigration.config import SettingsError
    from vmmigration.sandbox.controlplane import ControlPlaneError
    from vmmigration.sandbox.daemons import DaemonError
    from vmmigration.sandbox.guest import GuestBuildError
    from vmmigration.sandbox.testbed import SandboxError
    from vmmigration.virt.libvirt_host import VirtError

    try:
        cli()
    except (VirtError, SandboxError, DaemonError, GuestBuildError, SettingsError,
            ControlPlaneError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine decides.")
def cli(verbose: bool) -> None:
    """Move libvirt/KVM virtual machines between hosts, safely."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
@click.argument("domain")
@click.option("--from", "source", required=True, metavar="URI", callback=_uri,
              help="libvirt URI of the source host.")
@click.option("--to", "target", required=True, metavar="URI", callback=_uri,
              help="libvirt URI of the target host.")
@click.option("--mode", type=_choice(_MODES), default="auto", show_default=True,
              help="auto = live when running, offline when shut off.")
@click.option("--on-timeout", type=_choice(_ON_TIMEOUT), default="abort",
              show_default=True, help="What to do with a live migration that does not converge.")
@click.option("--progress-timeout", type=click.FloatRange(min=0), default=150.0, show_default=True,
              metavar="SECONDS", help="Escalate when remaining bytes stop going down this long (0 = never).")
@click.option("--completion-timeout-per-gib", type=click.FloatRange(min=0), default=800.0,
              show_default=True, metavar="SECONDS", help="Escalate past this many seconds per GiB (0 = never).")
@click.option("--hard-timeout", type=click.FloatRange(min=0), default=3600.0, show_default=True,
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
@click.option("--storage", type=_choice(_STORAGE), default="shared",
              show_default=True, help="copy-all / copy-incremental copy disks the target cannot see.")
@click.option("--persist/--transient", default=True, show_default=True,
              help="Define the VM on the target (libvirt's own default is transient).")
@click.option("--undefine-source/--keep-source", default=True, show_default=True,
              help="Remove the definition from the source (libvirt's own default keeps it).")
@click.option("--allow-unsafe", is_flag=True,
              help="Skip libvirt's storage safety check, for shared storage it cannot recognise.")
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
            parallel: int, p2p: bool, storage: str, persist: bool, undefine_source: bool,
            allow_unsafe: bool, adopt: bool, as_json: bool, record: Path | None,
            plot: Path | None) -> None:
    """Migrate DOMAIN from one libvirt host to another, showing live progress.

    Ctrl-C aborts the migration; the VM keeps running on the source.
    """
    from vmmigration.virt.engine import (
        Engine,
        MigrationCancelled,
        MigrationError,
        NoJobToAdopt,
        PrecheckFailed,
    )

    request = MigrationRequest(
        domain=domain,
        source_uri=source,
        target_uri=target,
        mode=_MODES[mode.lower()],
        policy=Policy(
            on_timeout=_ON_TIMEOUT[on_timeout.lower()],
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
        ),
        storage=_STORAGE[storage.lower()],
        persistence=Persistence(persist_on_target=persist, undefine_on_source=undefine_source),
    )
    cancel = threading.Event()

    def interrupted(_sig: int, _frame: FrameType | None) -> None:
        console.print("[yellow]aborting the migration…[/]")
        cancel.set()

    signal.signal(signal.SIGINT, interrupted)
    settings = Settings.from_env()
    engine = Engine(poll_interval_seconds=settings.poll_interval_seconds,
                    libvirt_timeout_seconds=settings.libvirt_timeout_seconds)
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
            from vmmigration.plot import PlotUnavailable, render
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

                def show(update: object) -> None:
                    from vmmigration.virt.engine import Update

                    assert isinstance(update, Update)
                    keep(update)
                    fields: dict[str, Any] = {"eta": update.eta_seconds}
                    p = update.progress
                    if p is not None:
                        fields.update(total_bytes=p.data_total, processed=p.data_processed,
                                      remaining=p.data_remaining, dirty=p.dirty_rate_bytes_per_s,
                                      rate=p.transfer_rate_bytes_per_s, iteration=p.iteration)
                    if update.note:
                        bar.console.print(f"[cyan]{domain}: {update.note}[/]")
                    bar.update(task, completed=update.percent,
                               description=f"{domain} {update.mode.value}", **fields)

                result = run(request, on_update=show, cancel=cancel)
    except PrecheckFailed as error:
        saved()
        _fail(as_json, "PrecheckFailed", [f"{f.reason}: {f.message}" for f in error.findings],
              code=EXIT_PRECHECK)
    except NoJobToAdopt as error:
        _fail(as_json, "NoJobToAdopt", [str(error)], code=EXIT_PRECHECK)
    except MigrationCancelled as error:
        trace.fail("aborted", seconds=time.monotonic() - began)
        saved()
        _fail(as_json, error.reason, [str(error)], code=EXIT_ABORTED)
    except MigrationError as error:
        trace.fail(error.reason, seconds=time.monotonic() - began)
        saved()
        _fail(as_json, error.reason, [str(error)], code=EXIT_MIGRATION)

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
    table.add_row("bytes moved", _mib(result.bytes_transferred))
    table.add_row("runs on", target)
    if result.mode is EffectiveMode.LIVE_SUSPENDED:
        table.add_row("note", "did not converge live; the source was suspended to finish")
    console.print(table)


def _fail(as_json: bool, reason: str, lines: list[str], *, code: int) -> None:
    if as_json:
        click.echo(json.dumps({"error": reason, "messages": lines}))
    else:
        for line in lines:
            click.echo(f"error: {line}", err=True)
    sys.exit(code)


@cli.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to save the plot (default: the recording's name with .png).")
def report(recording: Path, png: Path | None) -> None:
    """Summarise a migration saved with `migrate --record`, and plot it as a PNG."""
    from vmmigration.plot import PlotUnavailable, render

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
        table.add_row("peak dirty rate", _mib(max(s.dirty_rate_bytes_per_s for s in trace.samples)) + "/s")
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


@cli.command()
@click.argument("domain")
@click.option("--from", "source", required=True, metavar="URI", callback=_uri)
@click.option("--to", "target", required=True, metavar="URI", callback=_uri)
def inspect(domain: str, source: str, target: str) -> None:
    """Say where DOMAIN runs and whether a migration job is still active (after a crash)."""
    from vmmigration.virt import aftermath
    from vmmigration.virt.libvirt_host import Host, HostUnreachable

    hosts: dict[str, Host | None] = {}
    for role, uri in (("source", source), ("target", target)):
        try:
            hosts[role] = Host(uri)
        except HostUnreachable as error:
            click.echo(f"warning: {error}", err=True)
            hosts[role] = None
    found = aftermath.inspect(domain=domain, source=hosts["source"], target=hosts["target"])
    click.echo(json.dumps({
        "domain": domain,
        "location": found.location.value,
        "jobActive": found.job_active,
        "source": found.source and found.source.state.value,
        "target": found.target and found.target.state.value,
        "downtimeMs": found.final and found.final.downtime_ms,
        "unreachable": list(found.unreachable),
    }, indent=2))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--peering", default=None, metavar="NAME",
              help="kopf peering object (default VMMIGRATION_PEERING, 'vmmigration'); '' runs standalone.")
@click.argument("kopf_args", nargs=-1, type=click.UNPROCESSED)
def operator(peering: str | None, kopf_args: tuple[str, ...]) -> None:
    """Run the Kubernetes operator (kopf run), cluster-wide; extra arguments go to kopf.

    It uses the in-cluster ServiceAccount, else $KUBECONFIG. Settings come from
    VMMIGRATION_* variables (see README); a bad one stops it here.
    """
    settings = Settings.from_env()
    command = settings.kopf_command(python=sys.executable, peering=peering, extra=kopf_args)
    # Replace this process: signals (SIGTERM from the kubelet) then reach kopf directly.
    os.execv(sys.executable, command)


@cli.group()
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Where the sandbox keeps its hosts (default ~/.cache/vmmigration/sandbox).")
@click.option("--hosts", "count", type=click.IntRange(2, 8), default=2, show_default=True)
@click.option("--subnet", type=click.IntRange(0, 255), default=0, show_default=True,
              envvar="VMMIGRATION_SANDBOX_SUBNET", help="Hosts listen on 127.0.SUBNET.2, .3, …")
@click.pass_context
def sandbox(ctx: click.Context, root: Path | None, count: int, subnet: int) -> None:
    """Local libvirt hosts on this machine, for the demo and the tests."""
    from vmmigration.sandbox.testbed import Sandbox

    settings = Settings.from_env()
    ctx.obj = Sandbox(root=root or settings.sandbox_dir, count=count, subnet=subnet, settings=settings)


@sandbox.command()
@click.pass_obj
def up(box: object) -> None:
    """Start the hosts from a clean state (stopping what a previous run left)."""
    click.echo(json.dumps(box.up(), indent=2))  # type: ignore[attr-defined]


@sandbox.command()
@click.pass_obj
def down(box: object) -> None:
    """Stop the hosts and their guests, by PID."""
    stopped = box.down()  # type: ignore[attr-defined]
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@sandbox.command()
@click.pass_obj
def status(box: object) -> None:
    click.echo(json.dumps(box.status(), indent=2))  # type: ignore[attr-defined]


@sandbox.command()
@click.argument("name")
@click.option("--host", "host_index", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--memory", type=click.IntRange(64, 4096), default=128, show_default=True, metavar="MiB")
@click.option("--dirty", type=click.IntRange(1, 4096), default=32, show_default=True, metavar="MiB",
              help="Size of the memory region the guest keeps rewriting.")
@click.option("--dirty-rate", type=click.IntRange(0, 10000), default=8, show_default=True,
              metavar="MiB/s", help="How fast the guest rewrites it.")
@click.pass_obj
def boot(box: object, name: str, host_index: int, memory: int, dirty: int, dirty_rate: int) -> None:
    """Boot the tiny guest NAME on a sandbox host and wait for its heartbeat."""
    from vmmigration.sandbox.testbed import Sandbox

    assert isinstance(box, Sandbox)
    if dirty >= memory:
        raise click.BadParameter(f"--dirty {dirty} must be smaller than --memory {memory}")
    host = box.hosts[host_index - 1]
    spec = box.guest_spec(name, memory_mib=memory, dirty_mib=dirty, dirty_rate_mib=dirty_rate)
    log = box.boot(spec, host=host)
    click.echo(json.dumps({"domain": name, "host": host.uri, "serialLog": str(log),
                           "accel": box.accelerator()}, indent=2))


@sandbox.command(name="console")
@click.argument("name")
@click.option("--lines", type=click.IntRange(1, 10000), default=5, show_default=True)
@click.pass_obj
def serial_console(box: object, name: str, lines: int) -> None:
    """Show the end of guest NAME's serial console, with a heartbeat and corruption summary."""
    from vmmigration.sandbox import guest
    from vmmigration.sandbox.testbed import Sandbox

    assert isinstance(box, Sandbox)
    log = box.serial_log(name)
    if not log.exists():
        raise click.BadParameter(f"no serial log for {name} at {log}", param_hint="NAME")
    for line in log.read_text(errors="replace").splitlines()[-lines:]:
        click.echo(line)
    beats = guest.heartbeats(log)
    boots = sorted({b.boot for b in beats})
    bad = guest.failures(log)
    click.echo(f"-- {len(beats)} heartbeats, boots {boots}, "
               + ("no corruption, no panic" if not bad else f"FAILURES: {bad[:3]}"))


@sandbox.group()
@click.option("--address", default="127.0.10.1", show_default=True,
              help="Loopback address kube-apiserver and etcd listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=6443, show_default=True,
              help="kube-apiserver's port.")
@click.pass_context
def cluster(ctx: click.Context, address: str, port: int) -> None:
    """A local Kubernetes control plane (etcd and kube-apiserver, no nodes)."""
    from vmmigration.sandbox.controlplane import ControlPlane
    from vmmigration.sandbox.testbed import Sandbox

    box = ctx.obj
    assert isinstance(box, Sandbox)
    root = box.root / "controlplane"
    # down and status need no binaries; root/bin is the link up leaves to the
    # ones it ran, so they never trigger a build.
    ctx.obj = ControlPlane(root=root, address=address, port=port, bin_dir=root / "bin")


@cluster.command(name="up")
@click.pass_obj
def cluster_up(plane: object) -> None:
    """Build the binaries if need be, then start the control plane from a clean state."""
    from vmmigration.sandbox.controlplane import ControlPlane, binaries

    assert isinstance(plane, ControlPlane)
    plane = ControlPlane(root=plane.root, address=plane.address, port=plane.port, bin_dir=binaries())
    status = plane.up()
    click.echo(json.dumps(status, indent=2))
    click.echo(f"admin kubeconfig: {plane.admin_kubeconfig}")
    click.echo(f"export KUBECONFIG={plane.admin_kubeconfig}")


@cluster.command(name="down")
@click.pass_obj
def cluster_down(plane: object) -> None:
    """Stop kube-apiserver and etcd, by PID."""
    stopped = plane.down()  # type: ignore[attr-defined]
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@cluster.command(name="status")
@click.pass_obj
def cluster_status(plane: object) -> None:
    click.echo(json.dumps(plane.status(), indent=2))  # type: ignore[attr-defined]


@cli.group()
def demo() -> None:
    """The embedded demo: hosts, cluster, chart, operator, Prometheus, two migrations."""


@demo.command(name="up")
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="The vmmigration checkout (chart, examples, alert rules).")
@click.option("--helm", "helm_binary", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The helm binary (scripts/build-helm prints its directory).")
def demo_up(repo: Path, helm_binary: Path) -> None:
    """Start everything, apply the live and hybrid examples, watch them, and summarise."""
    from vmmigration.sandbox.demo import Demo, Paths

    Demo(settings=Settings.from_env(), console=console).up(Paths(repo=repo.resolve(), helm=helm_binary))


@demo.command(name="down")
def demo_down() -> None:
    """Stop the operator, Prometheus, the control plane and the hosts the demo started."""
    from vmmigration.sandbox.demo import Demo

    Demo(settings=Settings.from_env(), console=console).down()


if __name__ == "__main__":
    main()
