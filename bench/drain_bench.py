"""Benchmark: draining a host against moving the same VMs one by one, in one run.

On a local control plane and three sandbox libvirt hosts in one pool, with the
operator as its own process under its ServiceAccount and its default limits
(4 migrations at once, 2 out of each host):

1. Drain: N guests run on kvm-a, nobody manages them; ``maintenance: true``
   until the ``Drained`` condition. The operator makes a VMMigration for each
   and empties the host, smallest first, as the slots allow.
2. One by one: the same N guests moved back to kvm-a through the operator, a
   VMMigration each, the next only once the previous one is Placed (what an
   admin scripting ``kubectl apply`` + ``kubectl wait`` gets).

Migrations are counted from libvirt's own records. The floor is the one-by-one
moves' summed duration divided by the source's outbound limit: no drain can
beat that with the same slots. Prints medians over the rounds and ratios.
A script, not a test: nothing here asserts speed.

    .venv/bin/python bench/drain_bench.py [--vms 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from vmmigration.core.config import CACHE
from vmtestbed.controlplane import ControlPlane, binaries
from vmtestbed.hosts import Host
from vmtestbed.operator_process import OperatorProcess
from vmtestbed.records import incoming_migrations
from vmtestbed.testbed import Sandbox

REPO = Path(__file__).resolve().parents[1]
NAMES = ("kvm-a", "kvm-b", "kvm-c")
OUTBOUND = 2  # each Hypervisor's default maxOutboundMigrations


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def hypervisors(box: Sandbox) -> str:
    docs = [{"apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
             "metadata": {"name": name, "labels": {"vmmigration.dev/pool": "bench"}},
             "spec": {"uri": host.uri, "migrationAddress": host.migration_host,
                      "drain": {"mode": "Live"}}}
            for name, host in zip(NAMES, box.hosts)]
    return "\n---\n".join(json.dumps(d) for d in docs)


def status(plane: ControlPlane, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    done = plane.kubectl(*args, check=False)
    return (json.loads(done.stdout).get("status") or {}) if done.returncode == 0 else {}


def wait(check: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def drained(plane: ControlPlane) -> bool:
    return any(c["type"] == "Drained" and c["status"] == "True"
               for c in status(plane, "hypervisor", "kvm-a").get("conditions") or ())


def drain(plane: ControlPlane, box: Sandbox, domains: list[str]) -> tuple[float, int]:
    before = sum(incoming_migrations(box.hosts, d) for d in domains)
    started = time.monotonic()
    plane.kubectl("patch", "hypervisor", "kvm-a", "--type=merge", "-p", '{"spec":{"maintenance":true}}')
    wait(lambda: drained(plane), timeout=900, what="kvm-a drained")
    elapsed = time.monotonic() - started
    moves = sum(incoming_migrations(box.hosts, d) for d in domains) - before
    plane.kubectl("patch", "hypervisor", "kvm-a", "--type=merge", "-p", '{"spec":{"maintenance":false}}')
    wait(lambda: "Drained" not in json.dumps(status(plane, "hypervisor", "kvm-a").get("drain") or {})
         and not plane.kubectl("get", "vmm", "-A", "-l", "vmmigration.dev/drained-from=kvm-a",
                               "-o", "name").stdout.strip(),
         timeout=120, what="the drain's VMMigrations gone")
    return elapsed, moves


def one_by_one(plane: ControlPlane, box: Sandbox, domains: list[str]) -> tuple[float, int, list[float]]:
    before = sum(incoming_migrations(box.hosts, d) for d in domains)
    started = time.monotonic()
    each: list[float] = []
    for domain in domains:
        began = time.monotonic()
        plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
            "metadata": {"name": domain, "namespace": "default"},
            "spec": {"domain": domain, "targetHypervisor": "kvm-a", "mode": "Live"}}))
        wait(lambda: status(plane, "vmm", domain, "default").get("phase") == "Placed", timeout=300,
             what=f"{domain} Placed")
        each.append(time.monotonic() - began)
        plane.kubectl("delete", "vmm", domain, "-n", "default", "--wait=true")
    elapsed = time.monotonic() - started
    return elapsed, sum(incoming_migrations(box.hosts, d) for d in domains) - before, each


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    box = Sandbox(root=CACHE / "bench-drain", count=3, subnet=6)
    box.up()
    plane = ControlPlane(root=CACHE / "bench-drain-controlplane", address="127.0.16.1",
                         port=free_port("127.0.16.1"), bin_dir=binaries())
    plane.up()
    operator = None
    domains = [f"bench-drain-{i}" for i in range(args.vms)]
    drains: list[tuple[float, int]] = []
    singles: list[tuple[float, int, list[float]]] = []
    try:
        plane.install_operator_manifests(REPO)
        plane.kubectl("apply", "-f", "-", input=hypervisors(box))
        logs = CACHE / "bench-drain-operator"
        operator = OperatorProcess(
            kubeconfig=plane.service_account_kubeconfig(
                namespace="vmmigration-system", name="vmmigration-operator",
                path=logs / "operator.kubeconfig"),
            log_dir=logs, verbose=False, env={"VMMIGRATION_PROBE_INTERVAL_SECONDS": "1"})
        operator.start()
        for domain in domains:
            for host in box.hosts:
                with Host(host.uri) as found:
                    found.remove_everywhere(domain)
            box.boot(box.guest_spec(domain, dirty_mib=16, dirty_rate_mib=2), host=box.hosts[0])
        wait(lambda: (status(plane, "hypervisor", "kvm-a").get("domainCount") or 0) >= args.vms,
             timeout=60, what="kvm-a probed with every guest")
        for round_no in range(args.rounds):
            drains.append(drain(plane, box, domains))
            time.sleep(3)  # the probes see where each VM went
            singles.append(one_by_one(plane, box, domains))
            print(f"round {round_no + 1}/{args.rounds}: drain {drains[-1][0]:.1f} s, "
                  f"one by one {singles[-1][0]:.1f} s", flush=True)
    finally:
        if operator is not None:
            operator.stop()
        plane.down()
        box.down()

    med = statistics.median
    drain_s = med(d[0] for d in drains)
    single_s = med(s[0] for s in singles)
    floor = med(sum(s[2]) / OUTBOUND for s in singles)
    print()
    print(f"{args.vms} running guests (128 MiB, 16 MiB hot at 2 MiB/s) drained from kvm-a to kvm-b and kvm-c,"
          f" {args.rounds} rounds, medians")
    print(f"{'':34}{'seconds':>10}{'moves':>8}{'vs one by one':>16}")
    print(f"{'drain (maintenance: true)':34}{drain_s:>10.1f}{med(d[1] for d in drains):>8.0f}"
          f"{drain_s / single_s:>15.2f}x")
    print(f"{'one by one (apply, wait Placed)':34}{single_s:>10.1f}{med(s[1] for s in singles):>8.0f}"
          f"{1.0:>15.2f}x")
    print(f"{'floor: sum of single moves / 2':34}{floor:>10.1f}{'':>8}{floor / single_s:>15.2f}x")
    print(f"single move, median {med(x for s in singles for x in s[2]):.1f} s")


if __name__ == "__main__":
    main()
