"""A nemesis campaign: a seeded generator of what users do and a nemesis of faults, on the
real test bed, recorded into a history that :mod:`tests.nemesis.checker` judges.

The world (three libvirt hosts, a control plane, the operator as its own process
under its ServiceAccount, seven guests) is made once and can carry several
campaigns; each campaign ends by healing every fault, ending every maintenance
and waiting, within a stated bound, for the fleet to settle.

``python -m tests.nemesis.campaign --seed N --minutes M`` (``make soak``) runs one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

from vmmigration.core.config import Settings
from vmtestbed import daemons
from vmtestbed.controlplane import ControlPlane, binaries
from vmtestbed.testbed import LOCAL_POOL, Sandbox

from ..e2e.conftest import OPERATOR_ENV, Kubectl, Operator, _free_port, start_operator
from . import checker, observer
from .schedule import COLD, GUESTS, HOME, HOSTS, MID_MOVE, POOL, Step, plan

REPO = Path(__file__).resolve().parents[2]
# Subnets in use elsewhere: 0 the demo, 1 e2e and integration, 2 benches, 3 the test
# bed's recovery test, 6 the fault tier. A soak beside CI takes another.
SUBNET = int(os.environ.get("VMMIGRATION_NEMESIS_SUBNET", "7"))
ADDRESS = os.environ.get("VMMIGRATION_NEMESIS_ADDRESS", f"127.0.{10 + SUBNET}.1")
SETTLE_SECONDS = 300.0
# Each host's migration link, as a data centre's is: a cap the moves share, so a NonLive
# copy or a hybrid's suspended rest lasts seconds (the window a drain must not miss).
LINK_MBIT = 160.0
RATES = {name: float(dirty["dirty_rate_mib"]) for name, dirty in GUESTS.items()}  # liveness: the bound, after healing, for every spec to be met
NAMESPACE = "default"


def _now() -> float:
    return time.time()


class History:
    """Every record, in memory and appended to a JSON-lines file as it comes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        record.setdefault("t", _now())
        with self._lock:
            self.records.append(record)
            self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def sorted(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self.records, key=lambda r: r["t"])


# ---- the world -----------------------------------------------------------------

@dataclasses.dataclass
class World:
    sandbox: Sandbox
    plane: ControlPlane
    kubectl: Kubectl
    operator: Operator
    logs: Path

    @property
    def daemons(self) -> dict[str, daemons.Daemon]:
        return dict(zip(HOSTS, self.sandbox.hosts, strict=True))

    @property
    def uris(self) -> dict[str, str]:
        return {name: d.uri for name, d in self.daemons.items()}

    def kubectl_command(self) -> list[str]:
        return [str(self.plane.bin_dir / "kubectl"), f"--kubeconfig={self.plane.admin_kubeconfig}",
                f"--cache-dir={self.plane.root / 'kubectl-cache'}"]


def _hypervisors(sandbox: Sandbox) -> str:
    return "\n---\n".join(json.dumps({
        "apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": name, "labels": {"vmmigration.dev/pool": POOL}},
        "spec": {"uri": host.uri, "migrationAddress": host.migration_host,
                 "maxInboundMigrations": 2, "maxOutboundMigrations": 2,
                 "capacity": {"memoryBytes": 1536 * 2**20}}})
        for name, host in zip(HOSTS, sandbox.hosts, strict=True))


def _cold_disk(sandbox: Sandbox) -> Path:
    """nm-cold's disk, on its home's local pool only: an offline move must carry it."""
    home = sandbox.hosts[HOME[COLD]]
    image = home.root / "lib" / "images" / f"{COLD}.img"
    for daemon in sandbox.hosts:
        for left in (daemon.root / "lib" / "images").glob(f"{COLD}.*"):
            left.unlink()
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x63 0 8M", str(image)], check=True,
                   capture_output=True)
    return Path(f"/var/lib/libvirt/images/{COLD}.img")


@contextlib.contextmanager
def world(*, subnet: int = SUBNET, address: str = ADDRESS) -> Iterator[World]:
    settings = Settings.from_env()
    root = settings.test_sandbox_dir / f"nemesis-{subnet}"
    sandbox = Sandbox(root=root / "hosts", count=3, subnet=subnet)
    sandbox.up()
    plane = ControlPlane(root=root / "controlplane", address=address,
                         port=_free_port(address), bin_dir=binaries())
    operator: Operator | None = None
    try:
        plane.up()
        plane.install_operator_manifests(REPO)
        kubectl = Kubectl(plane)
        kubectl.apply(_hypervisors(sandbox))
        kubectl.apply(json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "HypervisorPool",
            "metadata": {"name": POOL},
            "spec": {"rebalance": {"enabled": False, "thresholdPercent": 20, "targetPercent": 10,
                                   "cooldownSeconds": 60, "maxMovesPerHour": 30}}}))
        for name, dirty in GUESTS.items():
            sandbox.boot(sandbox.guest_spec(name, heartbeat_ms=500, **dirty),
                         host=sandbox.hosts[HOME[name]], timeout_seconds=120)
        sandbox.define(sandbox.guest_spec(COLD, memory_mib=64, disks=(_cold_disk(sandbox),),
                                          disk_format="raw"), host=sandbox.hosts[HOME[COLD]])
        shape_links(sandbox)
        logs = root / "operator"
        env = {**OPERATOR_ENV, "VMMIGRATION_METRICS_ADDRESS": address,
               "VMMIGRATION_METRICS_PORT": str(_free_port(address)),
               "VMMIGRATION_HEALTH_ADDRESS": address,
               "VMMIGRATION_HEALTH_PORT": str(_free_port(address)),
               "VMMIGRATION_PROBE_TIMEOUT_SECONDS": "5"}
        operator = start_operator(control_plane=plane, kubectl=kubectl, logs=logs, env=env)
        yield World(sandbox=sandbox, plane=plane, kubectl=kubectl, operator=operator, logs=logs)
    finally:
        if operator is not None:
            operator.stop()
        plane.down()
        sandbox.down()


def shape_links(sandbox: Sandbox) -> None:
    """Every host's migration link back at its cap (a heal lifts every shaping)."""
    for daemon in sandbox.hosts:
        sandbox.shape(daemon, rate_mbit=LINK_MBIT)


# ---- the generator and the nemesis --------------------------------------------------

def _where(uris: dict[str, str], domain: str) -> dict[str, str]:
    """Where libvirt has ``domain`` now, by host (a quick read of each)."""
    found = {}
    for name, uri in uris.items():
        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(uri)
            try:
                dom = conn.lookupByName(domain)
                found[name] = observer.state_name(*dom.state())
            except libvirt.libvirtError:
                pass
            finally:
                conn.close()
    return found


def _in_flight(uris: dict[str, str]) -> list[tuple[str, str]]:
    """(domain, target host) of every migration whose copy is still arriving: libvirt
    refuses job statistics on the receiving end only."""
    found = []
    for name, uri in uris.items():
        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(uri)
            try:
                for dom in conn.listAllDomains():
                    state, reason = dom.state()
                    if state != libvirt.VIR_DOMAIN_PAUSED:
                        continue
                    try:
                        dom.jobStats()
                    except libvirt.libvirtError as error:
                        if error.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED:
                            found.append((dom.name(), name))
            finally:
                conn.close()
    return found


class Actors:
    """Carries the plan out: each operation as a user types it, each fault and its heal."""

    def __init__(self, world: World, history: History, seed: int) -> None:
        self.world, self.record = world, history
        self.kubectl = world.kubectl
        self.rng = random.Random(seed ^ 0x5EED)  # choices made at run time (which move to hit)
        self.vmms: dict[str, dict[str, Any]] = {}
        self.maintenance: set[str] = set()
        self.outside: dict[str, threading.Thread] = {}
        self.outside_targets: set[str] = set()
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.fault_ids = iter(range(1, 1_000_000))
        self.faults: Counter[str] = Counter()
        self.healers: list[threading.Thread] = []
        self._lock = threading.Lock()

    # ---- operations ------------------------------------------------------------

    def operate(self, step: Step) -> None:
        what, params = step.what, step.params
        domain = params.get("domain")
        try:
            done = getattr(self, "_op_" + what.replace("-", "_"))(**params)
        except Exception as error:  # a refused request is part of the story, not the end
            self.record({"k": "op", "what": what, "domain": domain, "error": str(error)[:300],
                         "params": params})
            self.skipped[what] += 1
            return
        if done is None:
            self.skipped[what] += 1
            return
        self.done[what] += 1
        self.record({"k": "op", "what": what, "domain": domain, "params": params, **done})

    def _apply(self, name: str, spec: dict[str, Any]) -> None:
        self.kubectl.apply(json.dumps({"apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
                                       "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}))

    def _op_place(self, *, domain: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        if domain in self.outside:
            return None
        self._apply(domain, spec)  # apply drops the fields the last one had and this one lacks
        self.vmms[domain] = spec
        return {}

    def _patch(self, domain: str, patch: dict[str, Any]) -> None:
        self.kubectl.patch("vmmigration", domain, {"spec": patch}, NAMESPACE)

    def _op_retarget(self, *, domain: str, target: str) -> dict[str, Any] | None:
        spec = self.vmms.get(domain)
        if spec is None:
            return None
        if "targetHypervisor" in spec:
            self._patch(domain, {"targetHypervisor": target})
        else:  # from a selector to one host: the whole spec, as a user edits the file
            spec = {k: v for k, v in spec.items() if k != "targetSelector"}
            self._apply(domain, {**spec, "targetHypervisor": target})
        self.vmms[domain] = {**spec, "targetHypervisor": target}
        return {}

    def _op_policy(self, *, domain: str, bandwidth: int) -> dict[str, Any] | None:
        if domain not in self.vmms:
            return None
        self._patch(domain, {"policy": {"bandwidthMiBPerSecond": bandwidth}})
        return {}

    def _op_abort(self, *, domain: str) -> dict[str, Any] | None:
        if domain not in self.vmms:
            return None
        self._patch(domain, {"abort": True})
        self.vmms[domain]["abort"] = True
        return {}

    def _op_unabort(self, *, domain: str) -> dict[str, Any] | None:
        if not self.vmms.get(domain, {}).get("abort"):
            return None
        self._patch(domain, {"abort": False})
        self.vmms[domain]["abort"] = False
        return {}

    def _op_delete(self, *, domain: str) -> dict[str, Any] | None:
        if domain not in self.vmms:
            return None
        self.kubectl("delete", "vmmigration", domain, "-n", NAMESPACE, "--wait=false")
        del self.vmms[domain]
        return {}

    def _op_drain(self, *, host: str, whenCancelled: str, mode: str) -> dict[str, Any] | None:
        with self._lock:
            if self.maintenance or host in self.outside_targets:
                return None  # one host at a time; never under an outside move towards it
            self.maintenance.add(host)
        self.kubectl.patch("hypervisor", host, {"spec": {"maintenance": True, "drain": {
            "whenCancelled": whenCancelled, "mode": mode}}}, None)
        return {"hosts": [host]}

    def _op_undrain(self, *, host: str, whenCancelled: str = "", mode: str = "") -> dict[str, Any] | None:
        if not self.maintenance:
            return None
        host = host if host in self.maintenance else sorted(self.maintenance)[0]
        self.kubectl.patch("hypervisor", host, {"spec": {"maintenance": False}}, None)
        self.maintenance.discard(host)
        return {"hosts": [host]}

    def _op_outside(self, *, domain: str, target: str) -> dict[str, Any] | None:
        """Someone runs ``virsh migrate`` behind the operator's back."""
        with self._lock:
            if domain in self.outside or target in self.maintenance or self.outside:
                return None
            where = _where(self.world.uris, domain)
            running = [h for h, s in where.items() if s == "running"]
            if len(running) != 1 or running[0] == target or len(where) != 1:
                return None  # mid-move, or already there
            source = running[0]
            self.outside_targets.add(target)
            thread = threading.Thread(target=self._virsh_migrate, args=(domain, source, target),
                                      daemon=True)
            self.outside[domain] = thread
        thread.start()
        return {"outside": True, "hosts": [source, target]}

    def _virsh_migrate(self, domain: str, source: str, target: str) -> None:
        daemons_ = self.world.daemons
        command = ["virsh", "-c", daemons_[source].uri, "migrate", "--live", "--p2p", "--persistent",
                   "--undefinesource", "--bandwidth", "32", domain, daemons_[target].uri,
                   f"tcp://{daemons_[target].migration_host}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            outcome = "ok" if done.returncode == 0 else done.stderr.strip()[:300]
        except subprocess.TimeoutExpired:
            outcome = "timed out"
        self.record({"k": "op", "what": "outside-ended", "domain": domain, "outside": True,
                     "hosts": [source, target], "outcome": outcome})
        with self._lock:
            self.outside.pop(domain, None)
            self.outside_targets.discard(target)

    def _op_carry(self, *, domain: str, target: str) -> dict[str, Any] | None:
        if target in self.maintenance:
            return None
        if domain in self.vmms:
            self.kubectl("delete", "vmmigration", domain, "-n", NAMESPACE, "--wait=true",
                         "--timeout=60s")
        spec = {"domain": domain, "targetHypervisor": target, "mode": "Offline", "storage": "CopyAll",
                "policy": {"bandwidthMiBPerSecond": 64}, "placement": "Once",
                "volumes": {"targetPool": LOCAL_POOL}}
        self._apply(domain, spec)
        self.vmms[domain] = spec
        return {}

    def _op_rebalance(self, *, enabled: bool) -> dict[str, Any] | None:
        self.kubectl.patch("hypervisorpool", POOL, {"spec": {"rebalance": {"enabled": enabled}}}, None)
        return {}

    # ---- faults ------------------------------------------------------------------

    def strike(self, step: Step) -> None:
        """One fault, healed after its time; the next waits for this one to heal."""
        params = step.params
        what = step.what
        host, other = params["host"], params["other"]
        domain = None
        if what in MID_MOVE:
            flights = self._wait_for_a_move(seconds=12.0)
            if flights:
                domain, target = self.rng.choice(flights)
                if what == "kill-target-qemu":
                    host = target
                elif what != "kill-operator":
                    where = [h for h in _where(self.world.uris, domain) if h != target]
                    host = self.rng.choice([target, *where])
                other = next((h for h in HOSTS if h != host), other)
            elif what == "kill-target-qemu":
                self.record({"k": "note", "what": "no move in flight: no target QEMU to kill"})
                return
        fault_id = next(self.fault_ids)
        hosts = [host] if what not in ("partition",) else [host, other]
        if what in ("kill-operator", "restart-api"):
            hosts = []
        record: dict[str, Any] = {"k": "fault", "id": fault_id, "what": what, "hosts": hosts,
                                  "heal_after": params["heal_after"]}
        if domain is not None and what == "kill-target-qemu":
            record["domain"] = domain  # its VM may stop: a mover other than the operator
        sandbox, d = self.world.sandbox, self.world.daemons
        heal: Any
        if what == "kill-operator":
            self.world.operator.kill9()
            heal = self.world.operator.start
        elif what == "kill-libvirtd":
            sandbox.kill_daemon(d[host])
            heal = lambda: sandbox.start_daemon(d[host])  # noqa: E731
        elif what == "freeze-libvirtd":
            sandbox.freeze_daemon(d[host])
            heal = lambda: sandbox.freeze_daemon(d[host], frozen=False)  # noqa: E731
        elif what == "restart-api":
            self.record(record)
            self.faults[what] += 1
            self.world.plane.restart(kill=True, down_seconds=min(6.0, params["heal_after"]))
            self.record({"k": "heal", "fault": fault_id, "what": what})
            return
        elif what == "cut-link":
            sandbox.cut_link(d[host], link=params["link"])
            heal = lambda: (sandbox.heal(d[host]), shape_links(sandbox))  # noqa: E731
        elif what == "reset-link":
            sandbox.reset_link(d[host], link=params["link"])
            heal = lambda: (sandbox.heal(d[host]), shape_links(sandbox))  # noqa: E731
        elif what == "lossy-link":
            sandbox.lose(d[host], percent=30, link="migration")
            heal = lambda: (sandbox.heal(d[host]), shape_links(sandbox))  # noqa: E731
        elif what == "partition":
            sandbox.partition(d[host], d[other])
            heal = lambda: (sandbox.heal(None), shape_links(sandbox))  # noqa: E731
        elif what == "kill-target-qemu":
            states = _where(self.world.uris, domain or "")
            if not (states.get(host) or "").startswith("paused"):
                self.record({"k": "note", "what": "the copy resumed before the kill: spared",
                             "domain": domain, "states": states})
                return
            record["states"] = states
            sandbox.kill_qemu(d[host], domain or "")
            heal = None
        else:
            raise ValueError(f"unknown fault {what}")
        self.faults[what] += 1
        self.record(record)
        if heal is not None:
            time.sleep(params["heal_after"])
            heal()
        self.record({"k": "heal", "fault": fault_id, "what": what})

    def _wait_for_a_move(self, *, seconds: float) -> list[tuple[str, str]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            flights = [f for f in _in_flight(self.world.uris) if f[0] in GUESTS or f[0] == COLD]
            if flights:
                return flights
            time.sleep(0.3)
        return []

    # ---- the end ----------------------------------------------------------------

    def heal_everything(self) -> None:
        """Every fault undone, every maintenance ended, every outside move finished."""
        sandbox = self.world.sandbox
        sandbox.heal(None)
        shape_links(sandbox)
        for daemon in sandbox.hosts:
            pid = daemons.daemon_pid(daemon)
            if pid is None:
                sandbox.start_daemon(daemon)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        if self.world.operator.dead():
            self.world.operator.start()
        for host in list(self.maintenance):
            self._op_undrain(host=host)
        for thread in list(self.outside.values()):
            thread.join(timeout=150)


def _objects(kubectl: Kubectl) -> dict[str, Any]:
    vmms = json.loads(kubectl("get", "vmmigrations", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    hvs = json.loads(kubectl("get", "hypervisors", "-o", "json").stdout)["items"]
    return {"vmms": {v["metadata"]["name"]: v for v in vmms if not v["metadata"].get("deletionTimestamp")},
            "hypervisors": {h["metadata"]["name"]: h for h in hvs}}


@dataclasses.dataclass
class Outcome:
    seed: int
    seconds: float
    history: Path
    verdict: checker.Verdict
    records: list[dict[str, Any]]
    operations: Counter[str]
    skipped: Counter[str]
    faults: Counter[str]
    migrations: int
    settle_seconds: float

    def report(self) -> str:
        lines = [f"nemesis campaign seed={self.seed} minutes={self.seconds / 60:.1f} "
                 f"history={self.history}",
                 "operations: " + ", ".join(f"{k} {v}" for k, v in sorted(self.operations.items()))
                 + f" (skipped as not applicable: {sum(self.skipped.values())})",
                 "faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
                 f"migrations libvirt logged (incoming QEMU starts): {self.migrations}",
                 f"settled {self.settle_seconds:.0f} s after healing (bound {SETTLE_SECONDS:.0f} s)",
                 "invariant checks: " + ", ".join(f"{name} {self.verdict.checks[name]}"
                                                  for name in checker.INVARIANTS)
                 + "; unchecked (host silent or someone else acting): "
                 + (", ".join(f"{k} {v}" for k, v in sorted(self.verdict.unchecked.items())) or "none"),
                 f"violations: {len(self.verdict.violations)}"]
        for violation in self.verdict.violations[:10]:
            lines.append(f"  {violation.invariant}/{violation.rule} at "
                         f"{time.strftime('%H:%M:%S', time.gmtime(violation.at))}: {violation.detail}")
        if self.verdict.violations:
            first = self.verdict.violations[0]
            lines.append(f"shortest history to the first violation (replay: make soak SEED={self.seed} "
                         f"MINUTES={self.seconds / 60:g}):")
            for record in checker.shortest_history(self.records, first):
                lines.append("  " + json.dumps(record)[:300])
        return "\n".join(lines)


def run(world: World, *, seed: int, seconds: float, history_dir: Path) -> Outcome:
    """One campaign on ``world``: the plan from ``seed``, then healing, settling, judging."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    history = History(history_dir / f"nemesis-{seed}-{stamp}.jsonl")
    steps = plan(seed=seed, seconds=seconds)
    begun = _now()
    history({"k": "setup", "seed": seed, "seconds": seconds, "guests": sorted(GUESTS), "cold": [COLD],
             "dirty_rates_mib": RATES,
             "hosts": list(HOSTS), "plan": [s.as_record() for s in steps]})
    sampler = observer.Sampler(world.uris, history, interval=0.2)
    watches = [observer.Watch(kubectl=world.kubectl_command(), resource=resource, kind=kind,
                              record=history, all_namespaces=resource != "hypervisors")
               for resource, kind in (("hypervisors", "Hypervisor"), ("vmmigrations", "VMMigration"),
                                      ("events", "Event"))]
    sampler.start()
    for watch in watches:
        watch.start()
    actors = Actors(world, history, seed)

    def carry_out(kind: str) -> None:
        for step in steps:
            if step.kind != kind:
                continue
            delay = begun + step.at - _now()
            if delay > 0:
                time.sleep(delay)
            if _now() > begun + seconds:
                break
            try:
                (actors.operate if kind == "op" else actors.strike)(step)
            except Exception as error:  # a lever that failed is recorded, and the run goes on
                history({"k": "note", "what": f"{step.what} failed: {error}"[:400]})

    threads = [threading.Thread(target=carry_out, args=(kind,), name=kind) for kind in ("op", "fault")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    actors.heal_everything()
    healed = _now()
    history({"k": "note", "what": "healed"})
    unsettled: list[str] = ["not looked at yet"]
    while _now() - healed < SETTLE_SECONDS:
        try:
            reads = {r[0]: r[3] for r in sampler.round()["reads"]}
            unsettled = checker.settled(_objects(world.kubectl), reads, RATES)
        except Exception as error:  # the API server may still be coming back
            unsettled = [f"cannot read the fleet: {error}"]
        if not unsettled:
            break
        time.sleep(2.0)
    settle = _now() - healed
    history({"k": "final", "unsettled": unsettled, "bound": SETTLE_SECONDS})
    time.sleep(2.0)  # the last heartbeats after settling
    sampler.stop()
    for watch in watches:
        watch.stop()
    migrations = 0
    for name, daemon in world.daemons.items():
        for domain in [*GUESTS, COLD]:
            for start in observer.qemu_starts(host=name, log_dir=daemon.root / "log" / "qemu",
                                              domain=domain, since=begun):
                history(start)
                migrations += start["incoming"]
    for domain in GUESTS:
        history(observer.serial_facts(domain=domain, log=world.sandbox.serial_log(domain),
                                      healed_at=healed))
    history.close()
    records = history.sorted()
    return Outcome(seed=seed, seconds=seconds, history=history.path, verdict=checker.check(records),
                   records=records, operations=actors.done, skipped=actors.skipped,
                   faults=actors.faults, migrations=migrations, settle_seconds=settle)


def reset(world: World) -> None:
    """Between two campaigns on one world: no VMMigration left, every host out of maintenance."""
    world.kubectl("delete", "vmmigrations", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=120s",
                  check=False)
    for host in HOSTS:
        world.kubectl.patch("hypervisor", host, {"spec": {"maintenance": False}}, None)
    world.kubectl.patch("hypervisorpool", POOL, {"spec": {"rebalance": {"enabled": False}}}, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh one, printed")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--history-dir", type=Path,
                        default=Settings.from_env().test_sandbox_dir.parent / "nemesis")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    print(f"nemesis: seed {seed}, {args.minutes:g} minutes", flush=True)
    with world() as made:
        outcome = run(made, seed=seed, seconds=args.minutes * 60, history_dir=args.history_dir)
    print(outcome.report(), flush=True)
    return 0 if outcome.verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
