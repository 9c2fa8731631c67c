"""Benchmark: a probe on a kept libvirt connection against one on a new connection each time.

The operator probes every Hypervisor every 10 s (versions, CPU, memory and all
domains). This measures one probe's CPU (this process; for the real hosts the
libvirtd's too, read from /proc) and wall time, both ways, on:

- a libvirt test-driver host of 20 domains (``test:///<file>``, what the
  scale benchmark's 50 simulated hosts are);
- a real sandbox libvirtd over TCP (``qemu+tcp://``);
- the same libvirtd over TLS (``qemu+tls://``, with a client certificate),
  as production hosts are reached.

Prints medians and ratios. A script, not a test: nothing here asserts speed.

    .venv/bin/python bench/probe_bench.py [--probes 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vmmigration.core.config import CACHE
from vmmigration.core.model import HostReport
from vmtestbed.daemons import CA_CERT, CLIENT_CERT, CLIENT_KEY, daemon_pid
from vmtestbed.testbed import Sandbox
from vmmigration.adapters import libvirt as virt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_bench import write_test_hosts  # noqa: E402  (the scale bench's simulated hosts)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """A process's user + system CPU time (0 for none)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(probe: Callable[[str], HostReport], uri: str, *, probes: int,
            daemon: int | None) -> tuple[float, float, float]:
    """Median wall ms per probe, and mean CPU ms per probe here and in the daemon."""
    walls = []
    own, theirs = time.process_time(), cpu_seconds(daemon)
    for _ in range(probes):
        began = time.perf_counter()
        report = probe(uri)
        walls.append(time.perf_counter() - began)
        if not report.reachable:
            sys.exit(f"{uri} unreachable: {report.error}")
    own = (time.process_time() - own) / probes
    theirs = (cpu_seconds(daemon) - theirs) / probes
    return statistics.median(walls) * 1000, own * 1000, theirs * 1000


def client_pki(box: Sandbox) -> Path:
    """A pkipath directory with the CA and a host's client certificate, as the operator writes."""
    host_pki = box.hosts[0].root / "pki"
    pki = Path(tempfile.mkdtemp(prefix="probe-bench-pki-"))
    for source, name in ((CA_CERT, "cacert.pem"), (CLIENT_CERT, "clientcert.pem"),
                         (CLIENT_KEY, "clientkey.pem")):
        shutil.copyfile(host_pki / source, pki / name)
    return pki


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    (_, test_uri, _), = write_test_hosts(scratch, hosts=1, per_host=20, vm_mib=96)
    box = Sandbox(root=CACHE / "bench-probe", count=1, subnet=2)
    box.up()
    try:
        host = box.hosts[0]
        pki = client_pki(box)
        targets = [("test driver, 20 domains", test_uri, None),
                   ("qemu+tcp (sandbox libvirtd)", host.uri, daemon_pid(host)),
                   ("qemu+tls (sandbox libvirtd)", f"{host.tls_uri}?pkipath={pki}", daemon_pid(host))]
        print(f"\none probe (versions, CPU, memory, all domains), {args.probes} of each\n")
        print(f"{'host':30}{'way':8}{'wall ms':>10}{'our CPU ms':>12}{'libvirtd CPU ms':>17}")
        ratios = []
        for label, uri, pid in targets:
            fresh = measure(virt.probe_once, uri, probes=args.probes, daemon=pid)
            prober = virt.prober()
            try:
                kept = measure(prober, uri, probes=args.probes, daemon=pid)
            finally:
                prober.close()
            for way, row in (("new", fresh), ("kept", kept)):
                print(f"{label:30}{way:8}{row[0]:>10.2f}{row[1]:>12.2f}"
                      + (f"{row[2]:>17.2f}" if pid else f"{'-':>17}"))
            ratios.append((label, fresh[1] + fresh[2], kept[1] + kept[2]))
        print("\nCPU per probe, both ends, new connection / kept one:")
        for label, fresh_cpu, kept_cpu in ratios:
            print(f"  {label:30}{fresh_cpu / kept_cpu:>6.1f}x")
    finally:
        box.down()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
