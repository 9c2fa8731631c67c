"""Benchmark: the engine against raw libvirt and virsh, and the hybrid against non-live.

Runs everything in one go on the sandbox, on the same guests:

1. A live migration by the engine, by a bare ``migrateToURI3`` call with the
   same flags, and by ``virsh migrate --live --p2p``: wall time and downtime.
   The guest moves back and forth, and the three methods take turns, so each
   sees both directions.
2. For a guest that dirties memory faster than the link: downtime of the
   hybrid (live, then suspend on stall) against a non-live migration.

Every host is in its own network namespace, and the migration link is shaped
with tbf (``--link-mbit``, both ways): the link is the only limit, no libvirt
bandwidth cap. Each row also shows the physical floor: the bytes that had to
cross (libvirt's own count) divided by the link's rate.

Prints medians and ratios. A script, not a test: nothing here asserts speed.

    .venv/bin/python bench/migration_bench.py [--rounds 5] [--hot-rounds 3] [--link-mbit 80]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# The baseline is libvirt itself, so this script (unlike the package) calls it directly.
import libvirt

from vmmigration.core.config import CACHE
from vmmigration.core.model import MigrationRequest, Mode, OnTimeout, Policy
from vmtestbed import guest
from vmtestbed.testbed import Sandbox
from vmmigration.adapters.libvirt import engine
from vmtestbed.hosts import Host

Sample = tuple[float, float, float]  # wall seconds, downtime ms, bytes that crossed
RAW_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
             | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)


def downtime_on(uri: str, name: str) -> tuple[float, float]:
    """Downtime (ms) and bytes sent of the job that just brought ``name`` to ``uri``."""
    with Host(uri) as host:
        final = host.completed_job(name)
    if final is None:
        return float("nan"), float("nan")
    down = float(final.downtime_ms) if final.downtime_ms is not None else float("nan")
    return down, float(final.data_processed)


def by_engine(name: str, src: str, dst: str, policy: Policy = Policy(), mode: Mode = Mode.LIVE) -> Sample:
    started = time.monotonic()
    result = engine().migrate(MigrationRequest(domain=name, source_uri=src, target_uri=dst,
                                               mode=mode, policy=policy))
    wall = time.monotonic() - started
    down = float(result.downtime_ms) if result.downtime_ms is not None else float("nan")
    return wall, down, float(result.bytes_transferred)


def by_raw_libvirt(name: str, src: str, dst: str) -> Sample:
    conn = libvirt.open(src)
    try:
        dom = conn.lookupByName(name)
        started = time.monotonic()
        dom.migrateToURI3(dst, {}, RAW_FLAGS)
        wall = time.monotonic() - started
    finally:
        conn.close()
    return (wall, *downtime_on(dst, name))


def by_virsh(name: str, src: str, dst: str) -> Sample:
    started = time.monotonic()
    subprocess.run(["virsh", "-q", "-c", src, "migrate", "--live", "--p2p", "--persistent",
                    "--undefinesource", name, dst], check=True, capture_output=True)
    wall = time.monotonic() - started
    return (wall, *downtime_on(dst, name))


def median(samples: list[Sample], index: int) -> float:
    return statistics.median(s[index] for s in samples)


def check_guest(log: Path) -> str:
    beats = guest.heartbeats(log)
    boots = {b.boot for b in beats}
    bad = guest.failures(log)
    return f"{len(beats)} heartbeats, {len(boots)} boot(s), {'no corruption' if not bad else bad[:2]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hot-rounds", type=int, default=3)
    parser.add_argument("--link-mbit", type=float, default=80.0,
                        help="rate of each host's migration link, each way")
    args = parser.parse_args()

    box = Sandbox(root=CACHE / "bench-sandbox", count=2, subnet=2)
    box.up()
    a, b = (h.uri for h in box.hosts)
    for host in box.hosts:
        box.shape(host, rate_mbit=args.link_mbit)
    link_bytes_per_s = args.link_mbit * 1e6 / 8

    def floor(samples: list[Sample]) -> float:
        return median(samples, 2) / link_bytes_per_s
    try:
        # ---- part 1: engine vs raw libvirt vs virsh -----------------------------
        name = "bench-live"
        log = box.boot(box.guest_spec(name, dirty_mib=16, dirty_rate_mib=4), host=box.hosts[0])
        methods: dict[str, Callable[[str, str, str], Sample]] = {
            "engine (vmmigration)": by_engine,
            "libvirt migrateToURI3": by_raw_libvirt,
            "virsh migrate --live": by_virsh,
        }
        results: dict[str, list[Sample]] = {m: [] for m in methods}
        here, there = a, b
        for round_no in range(args.rounds):
            for label, run in methods.items():
                results[label].append(run(name, here, there))
                here, there = there, here
            print(f"round {round_no + 1}/{args.rounds} done", flush=True)
        part1_guest = check_guest(log)

        # ---- part 2: hybrid vs non-live on a guest dirtier than the link ----------
        hot = "bench-hot"
        hot_log = box.boot(box.guest_spec(hot, dirty_mib=48, dirty_rate_mib=48), host=box.hosts[0])
        # No libvirt bandwidth cap: the shaped link is the only limit.
        hybrid_policy = Policy(on_timeout=OnTimeout.SUSPEND, progress_timeout_seconds=3)
        capped = Policy()
        hybrid: list[Sample] = []
        nonlive: list[Sample] = []
        here, there = a, b
        for round_no in range(args.hot_rounds):
            hybrid.append(by_engine(hot, here, there, hybrid_policy, Mode.LIVE))
            here, there = there, here
            nonlive.append(by_engine(hot, here, there, capped, Mode.NON_LIVE))
            here, there = there, here
            print(f"hot round {round_no + 1}/{args.hot_rounds} done", flush=True)
        part2_guest = check_guest(hot_log)
    finally:
        box.down()

    base_wall = median(results["libvirt migrateToURI3"], 0)
    print()
    link = f"a {args.link_mbit:g} Mbit/s link ({link_bytes_per_s / 2**20:.1f} MiB/s)"
    print(f"Live migration of a 128 MiB TCG guest rewriting 16 MiB at 4 MiB/s over {link}, "
          f"median of {args.rounds}")
    print(f"{'method':<24}{'wall s':>9}{'downtime ms':>13}{'wall vs raw':>13}"
          f"{'MiB sent':>10}{'floor s':>9}{'wall vs floor':>15}")
    for label, samples in results.items():
        wall, down = median(samples, 0), median(samples, 1)
        print(f"{label:<24}{wall:>9.2f}{down:>13.0f}{wall / base_wall:>12.2f}x"
              f"{median(samples, 2) / 2**20:>10.1f}{floor(samples):>9.2f}{wall / floor(samples):>14.2f}x")
    print(f"guest: {part1_guest}")
    print()
    print(f"Guest rewriting 48 MiB at 48 MiB/s over {link}, no libvirt cap, "
          f"median of {args.hot_rounds}")
    print(f"{'method':<24}{'wall s':>9}{'downtime ms':>13}{'downtime vs non-live':>22}"
          f"{'MiB sent':>10}{'floor s':>9}")
    nl_down = median(nonlive, 1)
    for label, samples in (("hybrid (live→suspend)", hybrid), ("non-live", nonlive)):
        wall, down = median(samples, 0), median(samples, 1)
        print(f"{label:<24}{wall:>9.2f}{down:>13.0f}{down / nl_down:>21.2f}x"
              f"{median(samples, 2) / 2**20:>10.1f}{floor(samples):>9.2f}")
    print("floor: the bytes libvirt sent divided by the link's rate (no latency exists here:"
          " this kernel has no netem)")
    print(f"guest: {part2_guest}")


if __name__ == "__main__":
    main()
