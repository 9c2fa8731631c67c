"""Benchmark: the operator at scale — 50 Hypervisors, 1,000 placed VMs, and a burst of moves.

On a local control plane (etcd + kube-apiserver), with the operator running as
its own process under its ServiceAccount:

* ``--hypervisors`` (50) hosts that are libvirt *test-driver* connections
  (``test:///<file>``), each a generated ``<node>`` with ``--vms-per-host`` (20)
  running domains, so 1,000 VMs need no QEMU. One VMMigration per domain
  targets the host it already runs on: the steady state is all Placed.
* ``--real-hosts`` (3) sandbox libvirt daemons with ``--real-guests`` tiny TCG
  guests, the VMs of the burst: their VMMigrations' targetHypervisor is
  patched all at once, and the operator works through the moves under
  ``VMMIGRATION_MAX_CONCURRENT_MIGRATIONS`` and the per-host limits.

Measured: the operator's RSS and CPU (from /proc) idle with only the
Hypervisors, over the steady-state window and during the burst; API requests
per minute by verb and resource (kube-apiserver's own apiserver_request_total,
minus this script's own requests); reconcile latency (spec change ->
status.observedGeneration caught up) sampled during the steady window; and the
burst's wall time and the most migrations seen in flight, against one move
alone. A script, not a test: nothing here asserts speed.

    .venv/bin/python bench/scale_bench.py [--steady-seconds 600] [--real-guests 10] [--offline-guests 40]
    .venv/bin/python bench/scale_bench.py --no-burst --hypervisors 500 --vms-per-host 20 [--shards 2]

Uses 127.0.15.1 and sandbox subnet 2, like operator_bench.py: do not run both at once.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import math
import os
import random
import socket
import statistics
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kubernetes

from vmmigration.core.config import CACHE, SHARD_LABEL
from vmtestbed.controlplane import ControlPlane, binaries
from vmtestbed.operator_process import OperatorProcess
from vmtestbed.testbed import Sandbox

REPO = Path(__file__).resolve().parents[1]
ROOT = CACHE / "bench-scale"
ADDRESS = "127.0.15.1"
SUBNET = 2
NAMESPACE = "scale"
GROUP, VERSION = "vmmigration.dev", "v1alpha1"
# What the operator touches; the API server's own housekeeping (leases, its
# CRD and APIService controllers) is left out of the request table.
OPERATOR_RESOURCES = ("vmmigrations", "hypervisors", "clusterkopfpeerings", "events", "secrets",
                      "customresourcedefinitions", "namespaces")

Key = tuple[str, str]  # (verb, resource[/subresource])


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


# ---- test-driver hosts ------------------------------------------------------------

def test_host_xml(*, index: int, domains: list[tuple[str, str]], vm_mib: int) -> str:
    """A libvirt test-driver node: 64 cores, 256 GiB, and ``domains`` (name, uuid) running.

    UUIDs are fixed: the test driver re-reads the file on every connection, and a
    generated UUID would differ from one probe to the next.
    """
    kib = vm_mib * 1024
    doms = "".join(
        f"<domain type='test'><name>{name}</name><uuid>{uid}</uuid>"
        f"<memory>{kib}</memory><currentMemory>{kib}</currentMemory><vcpu>1</vcpu>"
        "<os><type>hvm</type></os></domain>\n" for name, uid in domains)
    return (f"<node>\n<cpu><mhz>2400</mhz><model>x86_64</model><active>64</active><nodes>1</nodes>"
            f"<sockets>2</sockets><cores>32</cores><threads>1</threads></cpu>\n"
            f"<memory>{256 * 1024 * 1024}</memory>\n{doms}</node>\n")


def write_test_hosts(directory: Path, *, hosts: int, per_host: int,
                     vm_mib: int) -> list[tuple[str, str, list[str]]]:
    """(Hypervisor name, uri, domain names) of each generated host."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for h in range(hosts):
        name = f"sim-{h:03d}"
        domains = [(f"vm-{h:03d}-{d:02d}",
                    str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmmigration-scale:{h}:{d}")))
                   for d in range(per_host)]
        path = directory / f"{name}.xml"
        path.write_text(test_host_xml(index=h, domains=domains, vm_mib=vm_mib))
        made.append((name, f"test://{path.resolve()}", [d for d, _ in domains]))
    return made


# ---- measurements -----------------------------------------------------------------

class Requests:
    """This script's own API requests, by the API server's (verb, resource) key, to subtract."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[Key] = collections.Counter()

    def add(self, verb: str, resource: str, n: int = 1) -> None:
        with self._lock:
            self.counts[(verb, resource)] += n

    def snapshot(self) -> collections.Counter[Key]:
        with self._lock:
            return collections.Counter(self.counts)


def api_requests(plane: ControlPlane) -> collections.Counter[Key]:
    """kube-apiserver's apiserver_request_total, by (verb, resource/subresource)."""
    counts: collections.Counter[Key] = collections.Counter()
    for line in plane.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
        label = {k: v.strip('"') for k, v in labels.items()}
        if label.get("resource") not in OPERATOR_RESOURCES:
            continue
        sub = label.get("subresource", "")
        counts[(label.get("verb", ""), label["resource"] + (f"/{sub}" if sub else ""))] += \
            float(line.rsplit(" ", 1)[1])
    return counts


def operator_requests(plane: ControlPlane, before: collections.Counter[Key],
                      mine_before: collections.Counter[Key], mine: Requests) -> dict[Key, float]:
    after = api_requests(plane)
    own = mine.snapshot()
    out: dict[Key, float] = {}
    for key in set(after) | set(before):
        n = after[key] - before[key] - (own[key] - mine_before[key])
        if n > 0.5:
            out[key] = n
    return out


def proc_sample(pid: int) -> tuple[int, float]:
    """(resident bytes, user+system CPU seconds) of one process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


class Sampler:
    """RSS every ``every`` seconds in a thread, while a window is open; CPU over it.
    Several processes (shards) are summed, and each is kept apart too."""

    def __init__(self, pids: list[int], every: float = 2.0) -> None:
        self.pids = pids
        self.every = every
        self.rss: list[int] = []
        self.rss_each: list[list[int]] = [[] for _ in pids]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            each = [proc_sample(pid)[0] for pid in self.pids]
            for mine, rss in zip(self.rss_each, each):
                mine.append(rss)
            self.rss.append(sum(each))
            self._stop.wait(self.every)

    def __enter__(self) -> Sampler:
        self.cpu0 = [proc_sample(pid)[1] for pid in self.pids]
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_each = [proc_sample(pid)[1] - c0 for pid, c0 in zip(self.pids, self.cpu0)]
        self.cpu = sum(self.cpu_each)
        self.seconds = time.monotonic() - self.t0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu / self.seconds if self.seconds else 0.0


def shard_labels(shard: str) -> dict[str, str]:
    return {SHARD_LABEL: shard} if shard else {}


def operator_gauges(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(("vmmigration_migrations_in_progress ", "vmmigration_migrations_queued ")):
            name, value = line.split()
            values[name] = float(value)
    return values


# ---- the cluster ------------------------------------------------------------------

class Cluster:
    def __init__(self, plane: ControlPlane, mine: Requests) -> None:
        kubernetes.config.load_kube_config(config_file=str(plane.admin_kubeconfig))
        config = kubernetes.client.Configuration.get_default_copy()
        config.connection_pool_maxsize = 32
        self.api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
        self.mine = mine

    def create(self, body: dict[str, Any]) -> None:
        self.mine.add("POST", "vmmigrations")
        self.api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "vmmigrations", body)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> int:
        self.mine.add("PATCH", "vmmigrations")
        done = self.api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "vmmigrations",
                                                       name, {"spec": spec})
        return int(done["metadata"]["generation"])

    def get(self, name: str) -> dict[str, Any]:
        self.mine.add("GET", "vmmigrations")
        body: dict[str, Any] = self.api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                                     "vmmigrations", name)
        return body

    def list(self, selector: str = "") -> list[dict[str, Any]]:
        # resourceVersion 0: served from the API server's watch cache, the cheap read.
        for attempt in range(5):
            self.mine.add("LIST", "vmmigrations")
            try:
                items: list[dict[str, Any]] = self.api.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "vmmigrations", label_selector=selector,
                    resource_version="0")["items"]
                return items
            except kubernetes.client.ApiException as error:
                if error.status not in (429, 500, 503, 504) or attempt == 4:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")


def vmmigration(name: str, *, domain: str, target: str, kind: str,
                mode: str = "Live", shard: str = "") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VMMigration",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"bench": kind, **shard_labels(shard)}},
            "spec": {"domain": domain, "targetHypervisor": target, "mode": mode}}


def placed(item: dict[str, Any], target: str | None = None) -> bool:
    st = item.get("status") or {}
    return (st.get("phase") == "Placed"
            and st.get("observedGeneration") == item["metadata"].get("generation")
            and (target is None or st.get("currentHypervisor") == target))


def wait_all_placed(cluster: Cluster, *, selector: str, want: int, timeout: float,
                    targets: dict[str, str] | None = None, every: float = 2.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        items = cluster.list(selector)
        done = sum(1 for i in items
                   if placed(i, (targets or {}).get(i["metadata"]["name"])))
        if done >= want:
            return time.monotonic() - started
        time.sleep(every)
    raise RuntimeError(f"only {done}/{want} {selector} VMMigrations placed in {timeout:.0f} s")


def latency_probe(cluster: Cluster, name: str, value: str, timeout: float = 120.0) -> float:
    """Spec change (a no-op for placement) -> status.observedGeneration caught up."""
    started = time.monotonic()
    generation = cluster.patch_spec(name, {"driftAction": value})
    while time.monotonic() - started < timeout:
        st = cluster.get(name).get("status") or {}
        if int(st.get("observedGeneration") or 0) >= generation:
            return time.monotonic() - started
        time.sleep(0.05)
    print(f"  {name}: observedGeneration {st.get('observedGeneration')} did not reach "
          f"{generation} in {timeout:.0f} s (phase {st.get('phase')})", flush=True)
    return math.inf


# ---- the run ----------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hypervisors", type=int, default=50)
    parser.add_argument("--vms-per-host", type=int, default=20)
    parser.add_argument("--steady-seconds", type=float, default=600.0)
    parser.add_argument("--latency-probes", type=int, default=30)
    parser.add_argument("--real-hosts", type=int, default=3)
    parser.add_argument("--real-guests", type=int, default=10,
                        help="tiny TCG guests that move in the burst (50 is too many for 2 cores)")
    parser.add_argument("--offline-guests", type=int, default=40,
                        help="shut-off VMs that also move in the burst (Offline: only the "
                             "definition moves, so no QEMU), to make up a burst of 50 changes")
    parser.add_argument("--guest-mib", type=int, default=96)
    parser.add_argument("--max-concurrent", type=int, default=4,
                        help="VMMIGRATION_MAX_CONCURRENT_MIGRATIONS (the operator's default is 4)")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="the baseline window: operator with only the Hypervisors")
    parser.add_argument("--settle-seconds", type=float, default=60.0,
                        help="pause between all Placed and the steady window")
    parser.add_argument("--no-burst", dest="burst", action="store_false",
                        help="test-driver hosts only: no real hosts, guests or burst of moves")
    parser.add_argument("--shards", type=int, default=1,
                        help="operator processes sharing the test-driver fleet by the "
                             f"{SHARD_LABEL} label, each with its own peering (needs --no-burst)")
    args = parser.parse_args()
    if args.shards > 1 and args.burst:
        parser.error("--shards needs --no-burst: the burst's real hosts belong to no shard")

    mine = Requests()
    box = Sandbox(root=ROOT / "sandbox", count=args.real_hosts, subnet=SUBNET)
    plane = ControlPlane(root=ROOT / "controlplane", address=ADDRESS, port=free_port(ADDRESS),
                         bin_dir=binaries())
    operators: list[OperatorProcess] = []
    results: dict[str, Any] = {}
    shards = [f"s{i}" for i in range(args.shards)] if args.shards > 1 else [""]
    try:
        if args.burst:
            box.up()
        plane.up()
        plane.install_operator_manifests(REPO)
        plane.kubectl("create", "namespace", NAMESPACE)

        # Hosts: generated test-driver nodes, and the real sandbox daemons.
        sims = write_test_hosts(ROOT / "test-hosts", hosts=args.hypervisors,
                                per_host=args.vms_per_host, vm_mib=512)
        reals = [(f"real-{i + 1}", d.uri) for i, d in enumerate(box.hosts)] if args.burst else []
        shard_of = {name: shards[h % len(shards)] for h, (name, _, _) in enumerate(sims)}
        docs = [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "Hypervisor",
                 "metadata": {"name": name, "labels": shard_labels(shard_of.get(name, ""))},
                 "spec": {"uri": uri}}
                for name, uri in [(n, u) for n, u, _ in sims] + reals]
        plane.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))

        # The burst's guests, spread over the real hosts.
        guests: list[tuple[str, int]] = []  # (domain, index of its host)
        if args.burst:
            print(f"booting {args.real_guests} guests of {args.guest_mib} MiB ...", flush=True)
        for g in range(args.real_guests if args.burst else 0):
            name = f"burst-{g:02d}"
            home = g % args.real_hosts
            box.boot(box.guest_spec(name, memory_mib=args.guest_mib, dirty_mib=4,
                                    heartbeat_ms=1000), host=box.hosts[home],
                     timeout_seconds=120.0)
            guests.append((name, home))
        # Shut-off VMs of the burst: defined only, moved with mode Offline.
        offline = {f"off-{g:02d}" for g in range(args.offline_guests)}
        for g, name in enumerate(sorted(offline) if args.burst else ()):
            home = g % args.real_hosts
            box.define(box.guest_spec(name, memory_mib=args.guest_mib), host=box.hosts[home])
            guests.append((name, home))

        metrics_port = free_port(ADDRESS)
        metrics_url = f"http://{ADDRESS}:{metrics_port}/metrics"
        for shard in shards:
            logs = ROOT / f"operator{'-' + shard if shard else ''}"
            if shard:
                plane.kubectl("apply", "-f", "-", input=json.dumps({
                    "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                    "metadata": {"name": f"vmmigration-{shard}"}}))
            operators.append(OperatorProcess(
                kubeconfig=plane.service_account_kubeconfig(
                    namespace="vmmigration-system", name="vmmigration-operator",
                    path=logs / "operator.kubeconfig"),
                log_dir=logs, verbose=bool(os.environ.get("VMMIGRATION_BENCH_VERBOSE")),
                env={"VMMIGRATION_MAX_CONCURRENT_MIGRATIONS": str(args.max_concurrent),
                     "VMMIGRATION_METRICS_ADDRESS": ADDRESS, "VMMIGRATION_SHARD": shard,
                     # one endpoint is enough: the burst (unsharded only) reads its gauges
                     "VMMIGRATION_METRICS_PORT": str(metrics_port) if not shard else "0"}))
            operators[-1].start()
        pids = [o.process.pid for o in operators if o.process is not None]
        cluster = Cluster(plane, mine)

        # 1. Idle baseline: Hypervisors only, no VMMigration.
        print(f"idle window ({args.idle_seconds:.0f} s) ...", flush=True)
        before, mine_before = api_requests(plane), mine.snapshot()
        with Sampler(pids) as idle:
            time.sleep(args.idle_seconds)
        results["idle"] = (idle, operator_requests(plane, before, mine_before, mine))

        # 2. Create every VMMigration at once; time until all are Placed.
        specs = [vmmigration(d.replace("vm-", "vmm-"), domain=d, target=hv, kind="sim",
                             shard=shard_of[hv])
                 for hv, _, domains in sims for d in domains]
        specs += [vmmigration(f"vmm-{d}", domain=d, target=reals[h][0], kind="burst",
                              mode="Offline" if d in offline else "Live")
                  for d, h in guests]
        print(f"creating {len(specs)} VMMigrations ...", flush=True)
        before, mine_before = api_requests(plane), mine.snapshot()
        with Sampler(pids) as converge:
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(cluster.create, specs))
            created = converge_created = time.monotonic() - converge.t0
            wait_all_placed(cluster, selector="", want=len(specs), timeout=1800)
        results["converge"] = (converge, operator_requests(plane, before, mine_before, mine))
        results["created_seconds"] = converge_created
        print(f"all {len(specs)} Placed in {converge.seconds:.1f} s "
              f"(creates took {created:.1f} s)", flush=True)
        time.sleep(args.settle_seconds)

        # 3. Steady state, with reconcile-latency probes spread over the window.
        print(f"steady window ({args.steady_seconds:.0f} s, {args.latency_probes} probes) ...",
              flush=True)
        rng = random.Random(5)
        sim_names = [s["metadata"]["name"] for s in specs if s["metadata"]["labels"]["bench"] == "sim"]
        probe_names = rng.sample(sim_names, min(args.latency_probes, len(sim_names)))
        latencies: list[float] = []
        before, mine_before = api_requests(plane), mine.snapshot()
        with Sampler(pids) as steady:
            gap = args.steady_seconds / max(1, len(probe_names))
            for i, name in enumerate(probe_names):
                due = steady.t0 + gap * (i + 0.5)
                time.sleep(max(0.0, due - time.monotonic()))
                latencies.append(latency_probe(cluster, name, "Report"))
            time.sleep(max(0.0, steady.t0 + args.steady_seconds - time.monotonic()))
        results["steady"] = (steady, operator_requests(plane, before, mine_before, mine))
        results["latency"] = latencies

        results["tracebacks"] = sum(o.logs().count("Traceback") for o in operators)
        if not args.burst:
            return
        # 4. One move alone (the baseline), then the burst.
        solo_name, solo_home = guests[0]
        solo_target = (solo_home + 1) % args.real_hosts
        started = time.monotonic()
        cluster.patch_spec(f"vmm-{solo_name}", {"targetHypervisor": reals[solo_target][0]})
        wait_all_placed(cluster, selector="bench=burst", want=len(guests), timeout=600,
                        targets={f"vmm-{solo_name}": reals[solo_target][0]}, every=0.2)
        results["solo"] = time.monotonic() - started
        results["solo_move"] = float(cluster.get(f"vmm-{solo_name}")["status"].get("durationSeconds") or 0.0)
        guests[0] = (solo_name, solo_target)
        time.sleep(5)

        targets = {f"vmm-{d}": reals[(h + 1) % args.real_hosts][0] for d, h in guests}
        print(f"burst: {len(targets)} placement changes ...", flush=True)
        in_flight: list[float] = []
        queued: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                try:
                    gauges = operator_gauges(metrics_url)
                except OSError:
                    gauges = {}
                in_flight.append(gauges.get("vmmigration_migrations_in_progress", 0.0))
                queued.append(gauges.get("vmmigration_migrations_queued", 0.0))
                stop.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        before, mine_before = api_requests(plane), mine.snapshot()
        with Sampler(pids, every=0.5) as burst:
            watcher.start()
            with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
                list(pool.map(lambda item: cluster.patch_spec(item[0], {"targetHypervisor": item[1]}),
                              targets.items()))
            wait_all_placed(cluster, selector="bench=burst", want=len(guests), timeout=1800,
                            targets=targets, every=0.5)
            stop.set()
            watcher.join()
        results["burst"] = (burst, operator_requests(plane, before, mine_before, mine))
        # libvirt's own time for each move (status.durationSeconds): the rest is waiting
        # for a slot and the operator's overhead.
        results["move_seconds"] = collections.defaultdict(list)
        for item in cluster.list("bench=burst"):
            results["move_seconds"][item["spec"]["mode"]].append(
                float((item.get("status") or {}).get("durationSeconds") or 0.0))
        results["in_flight"] = max(in_flight or [0.0])
        results["queued"] = max(queued or [0.0])
        results["tracebacks"] = sum(o.logs().count("Traceback") for o in operators)
    finally:
        for process in operators:
            process.stop()
        plane.down()
        if args.burst:
            box.down()
        if "steady" in results:
            report(args, results, vms=args.hypervisors * args.vms_per_host, shards=shards)


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (nearest rank); every value counts, a lost probe (inf) too."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def report(args: argparse.Namespace, results: dict[str, Any], *, vms: int, shards: list[str]) -> None:
    med = statistics.median
    mib = 2 ** 20
    windows = [("idle", results["idle"]), ("converge", results["converge"]),
               ("steady", results["steady"])]
    if "burst" in results:
        windows.append(("burst", results["burst"]))
    samplers = [w for _, (w, _) in windows]
    lat = results["latency"]
    print()
    print(f"Scale: {args.hypervisors} test-driver Hypervisors x {args.vms_per_host} VMs = {vms} "
          f"placed VMMigrations" + (
              f", + {args.real_hosts} real hosts with {args.real_guests} running TCG guests of "
              f"{args.guest_mib} MiB (Live) and {args.offline_guests} shut-off ones (Offline)"
              if args.burst else "") +
          (f"; {len(shards)} shards, one operator process each" if len(shards) > 1 else
           "; one operator process"))
    print(f"{'operator process' + ('es (sum)' if len(shards) > 1 else ''):<40}"
          + "".join(f"{name:>10}" for name, _ in windows))
    print(f"{'  window s':<40}" + "".join(f"{w.seconds:>10.0f}" for w in samplers))
    print(f"{'  RSS median MiB':<40}" + "".join(f"{med(w.rss) / mib:>10.1f}" for w in samplers))
    print(f"{'  RSS max MiB':<40}" + "".join(f"{max(w.rss) / mib:>10.1f}" for w in samplers))
    print(f"{'  CPU seconds':<40}" + "".join(f"{w.cpu:>10.1f}" for w in samplers))
    print(f"{'  CPU % of one core':<40}" + "".join(f"{w.cpu_percent:>10.1f}" for w in samplers))
    if len(shards) > 1:
        steady = results["steady"][0]
        for i, shard in enumerate(shards):
            print(f"{f'  shard {shard}: steady CPU % / RSS MiB':<40}"
                  f"{100 * steady.cpu_each[i] / steady.seconds:>10.1f}"
                  f"{med(steady.rss_each[i]) / mib:>10.1f}")
    idle, steady = results["idle"][0], results["steady"][0]
    print(f"steady RSS / idle RSS: {med(steady.rss) / med(idle.rss):.2f}x "
          f"(+{(med(steady.rss) - med(idle.rss)) / vms / 1024:.1f} KiB per VMMigration)")
    print()
    print("API requests per minute by verb and resource (kube-apiserver /metrics, "
          "this script's own requests subtracted)")
    keys = sorted(set().union(*(req for _, (_, req) in windows)))
    print(f"{'  verb resource':<40}" + "".join(f"{name:>10}" for name, _ in windows))
    for key in keys:
        row = "".join(f"{req.get(key, 0.0) * 60 / w.seconds:>10.1f}" for _, (w, req) in windows)
        print(f"  {key[0] + ' ' + key[1]:<38}{row}")
    totals = "".join(f"{sum(req.values()) * 60 / w.seconds:>10.1f}" for _, (w, req) in windows)
    print(f"  {'all':<38}{totals}")
    steady_req = results["steady"][1]
    steady_writes = sum(v for (verb, _), v in steady_req.items()
                        if verb in ("PATCH", "UPDATE", "CREATE", "DELETE", "POST", "PUT"))
    print(f"steady writes per VMMigration per hour: {steady_writes * 3600 / steady.seconds / vms:.2f}")
    print()
    print(f"{'measure':<52}{'p50 s':>10}{'p99 s':>8}{'min s':>8}{'max s':>8}")
    print(f"{f'reconcile latency, spec -> observedGeneration (n={len(lat)})':<52}"
          f"{percentile(lat, 50):>10.3f}{percentile(lat, 99):>8.3f}{min(lat):>8.3f}{max(lat):>8.3f}")
    lost = sum(1 for x in lat if x == math.inf)
    if lost:
        print(f"  {lost} of {len(lat)} probes never caught up (120 s)")
    converge = results["converge"][0]
    print(f"{'all VMMigrations created -> all Placed':<52}{converge.seconds:>10.1f}")
    print(f"{'  of which creating them (16 client threads)':<52}{results['created_seconds']:>10.1f}")
    print(f"tracebacks in the operator log: {results.get('tracebacks', 0)}")
    if "burst" not in results:
        return
    burst = results["burst"][0]
    effective = min(args.max_concurrent, 2 * args.real_hosts)  # per-host default limits are 2/2
    moved = args.real_guests + args.offline_guests
    ideal = math.ceil(moved / effective) * results["solo"]
    print(f"{'one move alone (patch -> Placed)':<52}{results['solo']:>10.1f}")
    print(f"{'  its libvirt migration (status.durationSeconds)':<52}{results['solo_move']:>10.1f}")
    print(f"{f'burst of {moved} moves (patch -> all Placed)':<52}{burst.seconds:>10.1f}")
    for mode, moves in sorted(results["move_seconds"].items()):
        print(f"{f'  each {mode} migration, n={len(moves)} (durationSeconds)':<52}{med(moves):>10.1f}"
              f"{min(moves):>8.1f}{max(moves):>8.1f}")
    print(f"burst / ideal ({math.ceil(moved / effective)} waves of {effective} x one live move): "
          f"{burst.seconds / ideal:.2f}x; most in flight {results['in_flight']:.0f} "
          f"(limit {effective}), most queued {results['queued']:.0f}")


if __name__ == "__main__":
    main()
