"""Benchmark: how soon a VM changed behind the operator's back shows in its VMMigration.

Two sandbox libvirt hosts, a local control plane and the operator as its own
process. A guest is Placed on kvm-a with ``driftAction: Report``; then, with
virsh, it is migrated live to the other host and back, destroyed and started.
For each change the time runs from libvirt's own lifecycle event (heard by a
listener of this script's, on the host's libvirtd) to the API server returning
the VMMigration's status that shows it (currentHypervisor, domainState).

The operator runs twice, in one run: following libvirt's events (the default),
and with VMMIGRATION_INVENTORY_EVENTS=false, the baseline: a full probe of each
host every VMMIGRATION_PROBE_INTERVAL_SECONDS (10), as before events were used.
Prints medians and ratios. A script, not a test: nothing here asserts speed.

    .venv/bin/python bench/drift_bench.py [--rounds 5]

Uses 127.0.17.1 and sandbox subnet 9: it can run beside the other benches' set-ups.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes

from vmmigration.adapters.libvirt.host import Host
from vmmigration.core.config import CACHE
from vmtestbed.controlplane import ControlPlane, binaries
from vmtestbed.operator_process import OperatorProcess
from vmtestbed.testbed import Sandbox

REPO = Path(__file__).resolve().parents[1]
ROOT = CACHE / "bench-drift"
ADDRESS = "127.0.17.1"
SUBNET = 9
NAMES = ("kvm-a", "kvm-b")
DOMAIN = "drift-guest"
PROBE_SECONDS = 10.0  # the operator's default probe interval


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class Events:
    """When libvirt last announced a lifecycle event of the guest, on either host."""

    def __init__(self, box: Sandbox) -> None:
        self.last = 0.0
        self._lock = threading.Lock()
        self._hosts = [Host(h.uri) for h in box.hosts]
        for host in self._hosts:
            host.watch(changed=self._heard, closed=lambda: None)

    def _heard(self, domain: str) -> None:
        if domain == DOMAIN:
            with self._lock:
                self.last = time.monotonic()

    def since(self) -> float:
        with self._lock:
            return self.last

    def close(self) -> None:
        for host in self._hosts:
            host.close()


def status_reader(plane: ControlPlane) -> Callable[[], dict[str, Any]]:
    api = kubernetes.client.CustomObjectsApi(
        kubernetes.config.new_client_from_config(config_file=str(plane.admin_kubeconfig)))

    def read() -> dict[str, Any]:
        body = api.get_namespaced_custom_object("vmmigration.dev", "v1alpha1", "default",
                                                "vmmigrations", DOMAIN)
        return dict(body.get("status") or {})
    return read


def shown(read: Callable[[], dict[str, Any]], want: dict[str, str], timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = read()
        if all(current.get(k) == v for k, v in want.items()):
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"status never showed {want}: {read()}")


def virsh(box: Sandbox, host: int, *args: str) -> None:
    subprocess.run(["virsh", "-c", box.hosts[host].uri, *args], check=True, capture_output=True,
                   timeout=120)


def one_run(box: Sandbox, plane: ControlPlane, *, events: bool, rounds: int) -> dict[str, list[float]]:
    """The seconds from each change's last libvirt event to its status, by kind of change."""
    logs = ROOT / ("operator-events" if events else "operator-probes")
    operator = OperatorProcess(
        kubeconfig=plane.service_account_kubeconfig(namespace="vmmigration-system",
                                                    name="vmmigration-operator",
                                                    path=logs / "operator.kubeconfig"),
        log_dir=logs, verbose=False,
        env={"VMMIGRATION_INVENTORY_EVENTS": "true" if events else "false",
             "VMMIGRATION_PROBE_INTERVAL_SECONDS": str(PROBE_SECONDS)})
    listener = Events(box)
    read = status_reader(plane)
    found: dict[str, list[float]] = {"virsh migrate": [], "virsh destroy": [], "virsh start": []}
    operator.start()
    try:
        plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
            "metadata": {"name": DOMAIN, "namespace": "default"},
            "spec": {"domain": DOMAIN, "targetHypervisor": "kvm-a", "driftAction": "Report"}}))
        shown(read, {"phase": "Placed", "currentHypervisor": "kvm-a", "domainState": "Running"})
        here = 0
        for r in range(rounds):
            print(f"  round {r + 1}/{rounds} ({'events' if events else 'probes'})", flush=True)
            for _ in range(2):  # there and back
                there = 1 - here
                virsh(box, here, "migrate", "--live", "--p2p", "--persistent", "--undefinesource",
                      DOMAIN, box.hosts[there].uri)
                seen = shown(read, {"currentHypervisor": NAMES[there], "domainState": "Running"})
                found["virsh migrate"].append(seen - listener.since())
                here = there
            virsh(box, here, "destroy", DOMAIN)
            seen = shown(read, {"domainState": "ShutOff"})
            found["virsh destroy"].append(seen - listener.since())
            virsh(box, here, "start", DOMAIN)
            seen = shown(read, {"domainState": "Running"})
            found["virsh start"].append(seen - listener.since())
    finally:
        plane.kubectl("delete", "vmmigration", DOMAIN, "-n", "default", "--ignore-not-found",
                      "--wait=true", check=False)
        operator.stop()
        listener.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="each round: migrate there and back, destroy, start (4 changes)")
    args = parser.parse_args()
    box = Sandbox(root=ROOT / "sandbox", count=2, subnet=SUBNET)
    plane = ControlPlane(root=ROOT / "controlplane", address=ADDRESS, port=free_port(ADDRESS),
                         bin_dir=binaries())
    results: dict[str, dict[str, list[float]]] = {}
    try:
        box.up()
        plane.up()
        plane.install_operator_manifests(REPO)
        plane.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
            "metadata": {"name": name}, "spec": {"uri": host.uri}})
            for name, host in zip(NAMES, box.hosts)))
        box.boot(box.guest_spec(DOMAIN, memory_mib=96), host=box.hosts[0])
        for events in (True, False):
            results["events" if events else "probes"] = one_run(box, plane, events=events,
                                                                rounds=args.rounds)
            # The guest back home on kvm-a and running, for the next run.
            where = []
            for i, daemon in enumerate(box.hosts):
                with Host(daemon.uri) as host:
                    if host.find(DOMAIN) is not None:
                        where.append(i)
            if where and where[0] != 0:
                virsh(box, where[0], "migrate", "--live", "--p2p", "--persistent",
                      "--undefinesource", DOMAIN, box.hosts[0].uri)
    finally:
        plane.down()
        box.down()

    med = statistics.median
    print()
    print(f"From libvirt's lifecycle event to the VMMigration's status showing it, seconds "
          f"({args.rounds} rounds; probes every {PROBE_SECONDS:g} s in the baseline)")
    print(f"{'change':<18}{'n':>4}{'events p50':>12}{'max':>8}{'probes p50':>12}{'max':>8}{'ratio':>8}")
    for kind in results["events"]:
        ev, pr = results["events"][kind], results["probes"][kind]
        print(f"{kind:<18}{len(ev):>4}{med(ev):>12.3f}{max(ev):>8.3f}{med(pr):>12.3f}"
              f"{max(pr):>8.3f}{med(pr) / med(ev):>7.0f}x")
    every_ev = [x for v in results["events"].values() for x in v]
    every_pr = [x for v in results["probes"].values() for x in v]
    print(f"{'all changes':<18}{len(every_ev):>4}{med(every_ev):>12.3f}{max(every_ev):>8.3f}"
          f"{med(every_pr):>12.3f}{max(every_pr):>8.3f}{med(every_pr) / med(every_ev):>7.0f}x")
    print("floor: 0 s (the status cannot change before libvirt's event); the baseline's "
          f"expectation is about half the probe interval, {PROBE_SECONDS / 2:g} s")


if __name__ == "__main__":
    main()
