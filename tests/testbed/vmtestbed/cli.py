"""``vmmigration-testbed``: the developer's commands for the local test bed.

``sandbox`` starts libvirt hosts and boots guests on them, ``sandbox cluster``
a local Kubernetes control plane, and ``demo`` the whole demo. They are not
part of the product's CLI: the operator's image does not carry the test bed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vmmigration.cli.common import console
from vmmigration.core.config import Settings, SettingsError
from vmmigration.core.errors import VirtError
from vmtestbed.controlplane import ControlPlaneError
from vmtestbed.daemons import DaemonError
from vmtestbed.guest import GuestBuildError
from vmtestbed.roots import RootError
from vmtestbed.testbed import SandboxError

if TYPE_CHECKING:
    from vmtestbed.node import NodeCluster


@click.group()
def cli() -> None:
    """The local test bed: libvirt hosts, guests, a control plane and the demo."""


def main() -> None:
    """Entry point: known failures become one readable line and exit 1, not a traceback."""
    try:
        cli()
    except (VirtError, SandboxError, DaemonError, GuestBuildError, SettingsError,
            ControlPlaneError, RootError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


@click.group()
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Where the sandbox keeps its hosts (default ~/.cache/vmmigration/sandbox).")
@click.option("--hosts", "count", type=click.IntRange(2, 8), default=2, show_default=True)
@click.option("--subnet", type=click.IntRange(0, 255), default=0, show_default=True,
              envvar="VMMIGRATION_SANDBOX_SUBNET", help="Hosts are 10.240.SUBNET.2, .3, … (each in its own network namespace)")
@click.option("--flavour", "flavours", default=None, metavar="NAME[,NAME…]",
              envvar="VMMIGRATION_HOST_FLAVOUR",
              help="Which libvirt and QEMU each host runs: current (libvirt 12.9, QEMU 11.1, "
                   "from a Debian 13 root) or previous (the machine's own libvirt 11.3, "
                   "QEMU 10.0); one for all hosts, or one per host in order "
                   "(default current).")
@click.pass_context
def sandbox(ctx: click.Context, root: Path | None, count: int, subnet: int,
            flavours: str | None) -> None:
    """Local libvirt hosts on this machine, for the demo and the tests."""
    from vmtestbed import roots
    from vmtestbed.testbed import Sandbox

    chosen = tuple(f.strip() for f in flavours.split(",")) if flavours else ()
    for name in chosen:
        if name not in roots.FLAVOURS:
            raise click.BadParameter(f"unknown flavour {name!r}: choose from "
                                     f"{', '.join(sorted(roots.FLAVOURS))}",
                                     param_hint="--flavour")
    if len(chosen) > count:
        raise click.BadParameter(f"{len(chosen)} flavours for {count} hosts",
                                 param_hint="--flavour")
    settings = Settings.from_env()
    ctx.obj = Sandbox(root=root or settings.sandbox_dir, count=count, subnet=subnet,
                      settings=settings, flavours=chosen)


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
    from vmtestbed.testbed import Sandbox

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
    from vmtestbed import guest
    from vmtestbed.testbed import Sandbox

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
    """A local Kubernetes control plane (etcd and kube-apiserver; a node with up --node)."""
    from vmtestbed.controlplane import ControlPlane
    from vmtestbed.testbed import Sandbox

    box = ctx.obj
    assert isinstance(box, Sandbox)
    root = box.root / "controlplane"
    # down and status need no binaries; root/bin is the link up leaves to the
    # ones it ran, so they never trigger a build.
    ctx.obj = ControlPlane(root=root, address=address, port=port, bin_dir=root / "bin")


def _node_cluster(ctx: click.Context, *, bin_dir: Path | None = None) -> NodeCluster | None:
    """The sandbox's cluster with a node, if ``up --node`` ever made one (or bin_dir asks for one)."""
    from vmtestbed.controlplane import ControlPlane
    from vmtestbed.node import NodeCluster
    from vmtestbed.testbed import Sandbox

    box, plane = ctx.find_object(Sandbox), ctx.obj
    assert isinstance(box, Sandbox) and isinstance(plane, ControlPlane)
    if bin_dir is None and not (box.root / "node").is_dir():
        return None
    return NodeCluster(root=box.root, subnet=box.subnet, bin_dir=bin_dir, port=plane.port)


@cluster.command(name="up")
@click.option("--node", "with_node", is_flag=True,
              help="Add a real node (controllers, containerd, kube-proxy, kubelet); the API "
                   "server then listens on the pod bridge, 10.242.SUBNET.1, not on --address.")
@click.pass_context
def cluster_up(ctx: click.Context, with_node: bool) -> None:
    """Build the binaries if need be, then start the control plane from a clean state."""
    from vmtestbed.controlplane import ControlPlane, binaries

    plane = ctx.obj
    assert isinstance(plane, ControlPlane)
    made = _node_cluster(ctx, bin_dir=binaries()) if with_node else None
    if made is not None:
        status = made.up()
        plane = made.plane
    else:
        plane = ControlPlane(root=plane.root, address=plane.address, port=plane.port, bin_dir=binaries())
        status = plane.up()
    click.echo(json.dumps(status, indent=2))
    click.echo(f"admin kubeconfig: {plane.admin_kubeconfig}")
    click.echo(f"export KUBECONFIG={plane.admin_kubeconfig}")


@cluster.command(name="down")
@click.pass_context
def cluster_down(ctx: click.Context) -> None:
    """Stop the node if there is one, kube-apiserver and etcd, by PID."""
    made = _node_cluster(ctx)
    stopped = made.down() if made is not None else ctx.obj.down()
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@cluster.command(name="status")
@click.pass_context
def cluster_status(ctx: click.Context) -> None:
    made = _node_cluster(ctx)
    click.echo(json.dumps(made.status() if made is not None else ctx.obj.status(), indent=2))


@click.group()
def demo() -> None:
    """The embedded demo: hosts, cluster, chart, operator, Prometheus, two migrations."""


@demo.command(name="up")
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="The vmmigration checkout (chart, examples, alert rules).")
@click.option("--helm", "helm_binary", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The helm binary (scripts/build-helm prints its directory).")
def demo_up(repo: Path, helm_binary: Path) -> None:
    """Start everything, apply the live and hybrid examples, watch them, and summarise."""
    from vmtestbed.demo import Demo, Paths

    Demo(settings=Settings.from_env(), console=console).up(Paths(repo=repo.resolve(), helm=helm_binary))


@demo.command(name="down")
def demo_down() -> None:
    """Stop the operator, Prometheus, the control plane and the hosts the demo started."""
    from vmtestbed.demo import Demo

    Demo(settings=Settings.from_env(), console=console).down()


cli.add_command(sandbox)
cli.add_command(demo)

if __name__ == "__main__":
    main()
