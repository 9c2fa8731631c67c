"""Benchmark: the operator against a raw libvirt migration of the same guest, in one run.

On a local control plane (etcd + kube-apiserver) and two sandbox libvirt hosts,
with the operator running as its own process under its ServiceAccount:

1. Reaction latency: from the VMMigration's creation (the API server accepted
   it) to the moment libvirt reports the migration job running on the source.
2. ``kubectl apply`` → ``phase: Placed`` against a bare ``migrateToURI3`` with
   the same flags, on the same guest. The two take turns and swap directions
   each round, so each sees both hosts as source.
3. The same with ``mode: Auto``: what measuring and planning add to a move
   (the first measures the guest; later ones within five minutes reuse it).

Prints medians and ratios. A script, not a test: nothing here asserts speed.

    .venv/bin/python bench/operator_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from pathlib import Path

# The baseline is libvirt itself, so this script (unlike the package) calls it directly.
import kubernetes
import libvirt

from vmmigration.core.config import CACHE
from vmtestbed import guest
from vmtestbed.controlplane import ControlPlane, binaries
from vmtestbed.operator_process import OperatorProcess
from vmtestbed.testbed import Sandbox
from vmtestbed.hosts import Host

REPO = Path(__file__).resolve().parents[1]
RAW_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
             | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
NAMES = ("kvm-a", "kvm-b")
PROBE_SECONDS = 1.0


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def hypervisors(box: Sandbox) -> str:
    docs = [{"apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
             "metadata": {"name": name}, "spec": {"uri": host.uri}}
            for name, host in zip(NAMES, box.hosts)]
    return "\n---\n".join(json.dumps(d) for d in docs)


def by_operator(plane: ControlPlane, api: kubernetes.client.CustomObjectsApi, *, domain: str,
                source_uri: str, target: str, round_no: int, mode: str = "Live") -> tuple[float, float]:
    """(reaction seconds, apply → Placed seconds)."""
    name = f"bench-{mode.lower()}-{round_no}"
    manifest = {"apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"domain": domain, "targetHypervisor": target, "mode": mode}}
    with Host(source_uri) as source:
        started = time.monotonic()
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        reaction = float("nan")
        while time.monotonic() - started < 120:
            if reaction != reaction and source.job(domain) is not None:  # nan: not seen yet
                reaction = time.monotonic() - started
            body = api.get_namespaced_custom_object("vmmigration.dev", "v1alpha1", "default",
                                                    "vmmigrations", name)
            if (body.get("status") or {}).get("phase") == "Placed":
                placed = time.monotonic() - started
                break
            time.sleep(0.01)
        else:
            raise RuntimeError(f"{name} was not placed in 120 s: {body.get('status')}")
    plane.kubectl("delete", "vmmigration", name, "-n", "default", "--wait=true")
    return reaction, placed


def api_writes(plane: ControlPlane) -> dict[str, float]:
    """The API server's own count of the operator's writes, by resource (from its /metrics)."""
    counts: dict[str, float] = {}
    for line in plane.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{") or 'group="vmmigration.dev"' not in line:
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
        verb = labels.get("verb", "").strip('"')
        if verb not in ("PATCH", "UPDATE", "CREATE"):
            continue
        key = f'{verb} {labels.get("resource", "").strip(chr(34))}/{labels.get("subresource", "").strip(chr(34))}'
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def by_raw_libvirt(*, domain: str, source_uri: str, target_uri: str) -> float:
    conn = libvirt.open(source_uri)
    try:
        dom = conn.lookupByName(domain)
        started = time.monotonic()
        dom.migrateToURI3(target_uri, {}, RAW_FLAGS)
        return time.monotonic() - started
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    box = Sandbox(root=CACHE / "bench-sandbox", count=2, subnet=2)
    box.up()
    plane = ControlPlane(root=CACHE / "bench-controlplane", address="127.0.15.1",
                         port=free_port("127.0.15.1"), bin_dir=binaries())
    plane.up()
    operator = None
    try:
        plane.install_operator_manifests(REPO)
        plane.kubectl("apply", "-f", "-", input=hypervisors(box))
        logs = CACHE / "bench-operator"
        operator = OperatorProcess(
            kubeconfig=plane.service_account_kubeconfig(
                namespace="vmmigration-system", name="vmmigration-operator",
                path=logs / "operator.kubeconfig"),
            log_dir=logs, verbose=False,
            env={"VMMIGRATION_PROBE_INTERVAL_SECONDS": str(PROBE_SECONDS)})
        operator.start()
        kubernetes.config.load_kube_config(config_file=str(plane.admin_kubeconfig))
        api = kubernetes.client.CustomObjectsApi()

        domain = "bench-op"
        with Host(box.hosts[0].uri) as first:
            if first.find(domain) is None:
                for host in box.hosts[1:]:
                    with Host(host.uri) as other:
                        other.remove_everywhere(domain)
        log = box.boot(box.guest_spec(domain, dirty_mib=16, dirty_rate_mib=4), host=box.hosts[0])
        writes_before = api_writes(plane)
        wall_started = time.monotonic()
        reactions: list[float] = []
        placed: list[float] = []
        raw: list[float] = []
        auto: list[float] = []
        here = 0  # index of the host the guest is on
        for round_no in range(args.rounds):
            for turn in (("operator", "raw", "auto") if round_no % 2 == 0 else ("raw", "operator", "auto")):
                there = 1 - here
                # The operator must see where the guest is before it is asked to move it.
                time.sleep(PROBE_SECONDS * 2.5)
                if turn == "operator":
                    reaction, wall = by_operator(plane, api, domain=domain,
                                                 source_uri=box.hosts[here].uri,
                                                 target=NAMES[there], round_no=round_no)
                    reactions.append(reaction)
                    placed.append(wall)
                elif turn == "auto":
                    auto.append(by_operator(plane, api, domain=domain, source_uri=box.hosts[here].uri,
                                            target=NAMES[there], round_no=round_no, mode="Auto")[1])
                else:
                    raw.append(by_raw_libvirt(domain=domain, source_uri=box.hosts[here].uri,
                                              target_uri=box.hosts[there].uri))
                here = there
            print(f"round {round_no + 1}/{args.rounds} done", flush=True)
        writes = {k: v - writes_before.get(k, 0.0) for k, v in api_writes(plane).items()}
        wall = time.monotonic() - wall_started
        beats = guest.heartbeats(log)
        health = (f"{len(beats)} heartbeats, {len({b.boot for b in beats})} boot(s), "
                  f"{'no corruption' if not guest.failures(log) else 'CORRUPTION'}")
    finally:
        if operator is not None:
            operator.stop()
        plane.down()
        box.down()

    med = statistics.median
    print()
    print(f"Operator vs raw libvirt: live migration of a 128 MiB TCG guest, median of {args.rounds}")
    print(f"{'measure':<44}{'median s':>10}{'min s':>8}{'max s':>8}")
    print(f"{'reaction: created -> libvirt job running':<44}{med(reactions):>10.2f}"
          f"{min(reactions):>8.2f}{max(reactions):>8.2f}")
    print(f"{'kubectl apply -> Placed':<44}{med(placed):>10.2f}{min(placed):>8.2f}{max(placed):>8.2f}")
    print(f"{'raw migrateToURI3 (same flags)':<44}{med(raw):>10.2f}{min(raw):>8.2f}{max(raw):>8.2f}")
    print(f"apply -> Placed / raw: {med(placed) / med(raw):.2f}x "
          f"(+{med(placed) - med(raw):.2f} s per migration)")
    print(f"{'mode Auto: kubectl apply -> Placed':<44}{med(auto):>10.2f}{min(auto):>8.2f}{max(auto):>8.2f}")
    print(f"what Auto's planning adds to a Live move: median +{med(auto) - med(placed):.2f} s, "
          f"first (measuring) +{auto[0] - med(placed):.2f} s")
    print(f"guest: {health}")
    print()
    print(f"API writes during the run ({wall:.0f} s, {args.rounds} operator migrations, "
          f"2 Hypervisors probed every {PROBE_SECONDS:.0f} s), from kube-apiserver's /metrics:")
    for key, count in sorted(writes.items()):
        print(f"  {key:<44}{count:>6.0f}")


if __name__ == "__main__":
    main()
