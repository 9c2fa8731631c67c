"""The embedded demo: everything an SRE would run, on one machine, with one command.

Two libvirt hosts and the tiny guest, a small real cluster (control plane,
controllers and a kubelet node), the operator image built from the Dockerfile
and loaded into the node, the chart installed with helm (CRDs, RBAC,
Hypervisors, the Deployment), the operator in the pods the kubelet started, a
Prometheus scraping them with our alert rules, and the live and hybrid
examples applied, watched and summarised.

The cluster and Prometheus keep running after the demo returns, so the user
can look around; ``vmmigration-testbed demo down`` stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from vmmigration.core.config import Settings
from vmtestbed import guest
from vmtestbed.controlplane import REPO_ROOT, ControlPlane, binaries
from vmtestbed.node import NodeCluster
from vmtestbed.prometheus import PrometheusServer
from vmtestbed.testbed import Sandbox

ADDRESS = "127.0.10.1"  # Prometheus (the cluster is on the pod bridge of subnet 0)
SUBNET = 0
API_PORT = 6443
METRICS_PORT = 8000
PROMETHEUS_PORT = 9090
IMAGE_SCRIPT = REPO_ROOT / "scripts" / "build-image"
RELEASE = "vmmigration"
NAMESPACE = "vmmigration-system"
# The guests the examples move: a calm one (live) and one that dirties memory
# faster than its 8 MiB/s link (the hybrid).
GUESTS = {"demo-web": {"dirty_mib": 32, "dirty_rate_mib": 8},
          "demo-hot": {"dirty_mib": 48, "dirty_rate_mib": 48}}
EXAMPLES = ("live.yaml", "hybrid.yaml")


@dataclass(frozen=True)
class Paths:
    repo: Path
    helm: Path

    @property
    def chart(self) -> Path:
        return self.repo / "charts" / "vmmigration-operator"

    @property
    def examples(self) -> Path:
        return self.repo / "examples"

    @property
    def rules(self) -> Path:
        return self.repo / "deploy" / "prometheus" / "vmmigration-rules.yaml"


class Demo:
    def __init__(self, *, settings: Settings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.root = settings.sandbox_dir
        self.state = self.root / "demo"
        self.box = Sandbox(root=self.root, count=2, subnet=0, settings=settings)

    def cluster(self, bin_dir: Path | None = None) -> NodeCluster:
        return NodeCluster(root=self.root / "cluster", subnet=SUBNET, bin_dir=bin_dir, port=API_PORT)

    # ---- up ------------------------------------------------------------------------

    def up(self, paths: Paths) -> None:
        def say(text: str) -> None:
            self.console.print(text, soft_wrap=True)  # commands and paths must stay copyable
        self.down(quiet=True)
        self.state.mkdir(parents=True, exist_ok=True)
        say("[bold]== two libvirt hosts[/] (10.240.0.2, 10.240.0.3, each in its own network namespace)")
        self.box.up()
        say(f"   guests run under {self.box.accelerator().upper()}")
        cluster = self.cluster(binaries())
        plane = cluster.plane
        say(f"[bold]== a Kubernetes cluster[/] (etcd, kube-apiserver on {plane.address}:{API_PORT}, "
            f"the controllers, kube-proxy, and a kubelet node on containerd)")
        cluster.up()
        say("[bold]== the operator image[/], built from the Dockerfile (cached) and loaded into the node")
        image = cluster.node.load_image(_built_image())
        repository, tag = image.rsplit(":", 1)
        say(f"[bold]== helm install {RELEASE}[/] (CRDs, RBAC, ServiceAccount, Hypervisors kvm-a, kvm-b, "
            f"a Deployment of 2 replicas)")
        self._helm(plane, paths, "upgrade", "--install", RELEASE, str(paths.chart),
                   "--namespace", NAMESPACE, "--create-namespace",
                   "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                   # Loaded from the archive: there is no registry to pull from.
                   "--set", "image.pullPolicy=Never",
                   # --set-json: helm's --set reads 0.5 as a string, which the schema refuses.
                   "--set-json", "settings.probeIntervalSeconds=2", "--set-json", "settings.progressIntervalSeconds=0.5",
                   "--set", "hypervisors[0].name=kvm-a", "--set", "hypervisors[0].uri=qemu+tcp://10.240.0.2/system",
                   "--set", "hypervisors[0].migrationAddress=10.241.0.2",
                   "--set", "hypervisors[0].labels.vmmigration\\.dev/zone=lab",
                   "--set", "hypervisors[1].name=kvm-b", "--set", "hypervisors[1].uri=qemu+tcp://10.240.0.3/system",
                   "--set", "hypervisors[1].migrationAddress=10.241.0.3",
                   "--set", "hypervisors[1].labels.vmmigration\\.dev/zone=lab")
        say("[bold]== the operator, under the chart's ServiceAccount[/], in the pods the kubelet started")
        started = time.monotonic()
        plane.kubectl("rollout", "status", f"deployment/{RELEASE}", "-n", NAMESPACE, "--timeout=180s")
        pods = self._pod_addresses(plane)
        say(f"   {len(pods)} pods Ready in {time.monotonic() - started:.1f} s: {', '.join(sorted(pods))}")
        say(f"[bold]== Prometheus[/] on http://{ADDRESS}:{PROMETHEUS_PORT} with the alert rules, "
            f"scraping each pod as a ServiceMonitor would")
        prometheus = PrometheusServer(root=self.state / "prometheus", address=ADDRESS, port=PROMETHEUS_PORT,
                                      targets=[f"{ip}:{METRICS_PORT}" for ip in pods.values()],
                                      rules=paths.rules, interval_seconds=2.0)
        prometheus.up()
        assert prometheus.process is not None
        self._remember("prometheus", prometheus.process.pid)
        self._wait_hypervisors(plane)
        say("[bold]== booting the guests on kvm-a[/]: demo-web (calm), demo-hot (dirties 48 MiB at 48 MiB/s)")
        logs = {}
        for name, spec in GUESTS.items():
            logs[name] = self.box.boot(self.box.guest_spec(name, **spec), host=self.box.hosts[0])
        first = {name: guest.heartbeats(log)[0].boot for name, log in logs.items()}
        say("[bold]== kubectl apply[/] " + " ".join(f"examples/{e}" for e in EXAMPLES))
        for example in EXAMPLES:
            plane.kubectl("apply", "-f", str(paths.examples / example))
        rows = self._watch(plane)
        self._summary(rows, logs, first, prometheus)
        self._look_around(plane)

    def _helm(self, plane: ControlPlane, paths: Paths, *args: str) -> None:
        done = subprocess.run([str(paths.helm), f"--kubeconfig={plane.admin_kubeconfig}", *args],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"helm {args[0]} failed: {done.stderr.strip()}")

    def _pod_addresses(self, plane: ControlPlane) -> dict[str, str]:
        """The operator's pods and their IPs (what a ServiceMonitor's endpoints would list)."""
        listed = json.loads(plane.kubectl("get", "pods", "-n", NAMESPACE, "-l",
                                          "app.kubernetes.io/name=vmmigration-operator", "-o", "json").stdout)
        return {p["metadata"]["name"]: p["status"]["podIP"] for p in listed["items"]
                if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")}

    def _wait_hypervisors(self, plane: ControlPlane) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = json.loads(plane.kubectl("get", "hypervisors", "-o", "json").stdout)["items"]
            reachable = [h for h in listed for c in (h.get("status") or {}).get("conditions") or ()
                         if c["type"] == "Reachable" and c["status"] == "True"]
            if len(reachable) == 2:
                return
            time.sleep(0.5)
        raise RuntimeError("the operator did not report both Hypervisors reachable within 60 s")

    def _watch(self, plane: ControlPlane, *, timeout_seconds: float = 240.0) -> list[dict[str, Any]]:
        """`kubectl get vmm -w`, as a live table, until every VMMigration has settled."""
        deadline = time.monotonic() + timeout_seconds
        rows: list[dict[str, Any]] = []
        with Live(_table(rows), console=self.console, refresh_per_second=4) as live:
            while time.monotonic() < deadline:
                rows = json.loads(plane.kubectl("get", "vmm", "-n", "default", "-o", "json").stdout)["items"]
                live.update(_table(rows))
                if rows and all((r.get("status") or {}).get("phase") in ("Placed", "Failed", "Aborted")
                                for r in rows):
                    break
                time.sleep(0.5)
        return rows

    def _summary(self, rows: list[dict[str, Any]], logs: dict[str, Path], first: dict[str, str],
                 prometheus: PrometheusServer) -> None:
        table = Table(title="What happened")
        for column in ("VMMigration", "phase", "mode", "duration", "downtime", "runs on", "guest"):
            table.add_column(column)
        forecasts: list[str] = []
        for row in rows:
            status = row.get("status") or {}
            name = row["metadata"]["name"]
            beats = guest.heartbeats(logs[name]) if name in logs else []
            healthy = (beats and {b.boot for b in beats} == {first[name]}
                       and not guest.failures(logs[name]))
            downtime = status.get("downtimeMs")
            plan = status.get("plan") or {}
            if "durationSeconds" in plan:
                forecasts.append(f"{name} planned {plan['strategy']}: forecast {plan['durationSeconds']:.1f} s "
                                 f"and {plan['downtimeMs']} ms, took "
                                 f"{status.get('durationSeconds', 0):.1f} s and {downtime} ms")
            failure = status.get("lastFailure") or {}
            if status.get("phase") in ("Failed", "Aborted") and failure:
                # Why, where the user reads the table: the same words `kubectl describe vmm` shows.
                forecasts.append(f"{name} {status['phase'].lower()}: {failure.get('reason')}: {failure.get('message')}")
            table.add_row(name, status.get("phase", "?"), status.get("effectiveMode") or "-",
                          f"{status.get('durationSeconds', 0):.1f} s" if status.get("durationSeconds") else "-",
                          "unknown" if downtime is None else f"{downtime} ms",
                          status.get("currentHypervisor") or "?",
                          f"{len(beats)} heartbeats, 1 boot, no corruption" if healthy else "[red]CHECK[/]")
        self.console.print(table)
        # Beside the table, which must stay narrow enough for a CI log's 120 columns.
        for line in forecasts:
            self.console.print(line, soft_wrap=True)
        time.sleep(3)  # one more scrape and rule evaluation
        with contextlib.suppress(Exception):
            counted = prometheus.query("sum by (mode, result) (vmmigration_migrations_total)")
            seen = ", ".join(f"{r['metric'].get('mode')}/{r['metric'].get('result')}: {float(r['value'][1]):.0f}"
                             for r in counted)
            self.console.print(f"Prometheus counts vmmigration_migrations_total: {seen or 'nothing yet'}",
                               soft_wrap=True)
            firing = [a["labels"]["alertname"] for a in prometheus.alerts() if a["state"] == "firing"]
            self.console.print(f"alerts firing: {', '.join(firing) if firing else 'none'}")

    def _look_around(self, plane: ControlPlane) -> None:
        self.console.print(f"""
[bold]Look around[/] (the operator and Prometheus keep running):
  export KUBECONFIG={plane.admin_kubeconfig}
  export PATH={plane.bin_dir}:$PATH
  kubectl get hypervisors
  kubectl get vmm -o wide
  kubectl describe vmm demo-hot
  kubectl get events --field-selector involvedObject.name=demo-web
  kubectl get pods -n {NAMESPACE} -o wide; kubectl get clusterkopfpeering {RELEASE} -o yaml   # who is active
  kubectl logs -n {NAMESPACE} -l app.kubernetes.io/name=vmmigration-operator --tail=20
  curl -s http://$(kubectl get svc -n {NAMESPACE} {RELEASE}-metrics -o jsonpath='{{.spec.clusterIP}}'):{METRICS_PORT}/metrics | grep ^vmmigration_
  Prometheus: http://{ADDRESS}:{PROMETHEUS_PORT}/alerts
  .venv/bin/kubectl-vmm move demo-web --to kvm-a --wait   # move it back (also: kubectl vmm, with .venv/bin on PATH)

[bold]Tear down[/]: make demo-down   (or: .venv/bin/vmmigration-testbed demo down)""", soft_wrap=True)

    # ---- down ----------------------------------------------------------------------

    def _remember(self, what: str, pid: int) -> None:
        (self.state / f"{what}.pid").write_text(str(pid))

    def down(self, *, quiet: bool = False) -> None:
        for what, marker in (("prometheus", b"prometheus"),):
            pid_file = self.state / f"{what}.pid"
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text())
            with contextlib.suppress(OSError):
                # Only what we started: the PID may have been reused since.
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGTERM)
                    _wait_gone(pid)
            pid_file.unlink()
        stopped = self.cluster().down() + self.box.down()
        if not quiet:
            self.console.print("stopped: Prometheus" + (", " + ", ".join(stopped) if stopped else ""))


def _built_image() -> Path:
    """The operator image as a docker archive (scripts/build-image: cached, quick when unchanged)."""
    done = subprocess.run([str(IMAGE_SCRIPT)], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{IMAGE_SCRIPT.name} failed:\n{done.stderr[-2000:]}")
    return Path(lines[-1])


def _wait_gone(pid: int, timeout_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":  # a zombie is gone as far as we are concerned
            return
        time.sleep(0.2)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="kubectl get vmm -w")
    for column in ("NAME", "DOMAIN", "SOURCE", "TARGET", "PHASE", "PROGRESS", "MODE", "REMAINING", "DIRTY RATE"):
        table.add_column(column)
    for row in rows:
        spec, status = row.get("spec") or {}, row.get("status") or {}
        progress = status.get("progress") or {}
        percent = float(progress.get("percent") or 0)
        bar = "█" * int(percent / 10) + "·" * (10 - int(percent / 10))
        remaining = progress.get("memoryRemainingBytes")
        dirty = progress.get("dirtyRateBytesPerSecond")
        table.add_row(row["metadata"]["name"], spec.get("domain", ""), status.get("sourceHypervisor") or "",
                      spec.get("targetHypervisor") or "", status.get("phase") or "Pending",
                      f"{bar} {percent:5.1f}%", status.get("effectiveMode") or "",
                      "" if remaining is None else f"{remaining / 2**20:.1f} MiB",
                      "" if dirty is None else f"{dirty / 2**20:.1f} MiB/s")
    return table
