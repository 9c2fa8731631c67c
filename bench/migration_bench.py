"""Benchmark: the engine against raw libvirt and virsh, and the hybrid against non-live.

Runs everything in one go on the sandbox, on the same guests:

1. A live migration by the engine, by a bare ``migrateToURI3`` call with the
   same flags, and by ``virsh migrate --live --p2p``: wall time and downtime.
   The guest moves back and forth, and the three methods take turns, so each
   sees both directions.
2. For a guest that dirties memory faster than the link: downtime of the
   hybrid (live, then suspend on stall) against a non-live migration and
   post-copy (switched at the start, switched on a stall, and, where QEMU and
   libvirt take it, with 4 connections). Each row shows libvirt's downtime
   beside the downtime the guest felt: the longest silence of its 10 ms
   heartbeat, timed by the host as the serial log grows (vmtestbed.felt), and
   for post-copy the degraded time: from the switch to the end of the move, the
   guest runs on the target while fetching its pages over the link.

Every host is in its own network namespace, and the migration link is shaped
with tbf (``--link-mbit``, both ways): the link is the only limit, no libvirt
bandwidth cap. Each row also shows the physical floor: the bytes that had to
cross (libvirt's own count) divided by the link's rate.

Prints medians and ratios. A script, not a test: nothing here asserts speed.

    .venv/bin/python bench/migration_bench.py [--rounds 5] [--hot-rounds 3] [--link-mbit 80]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# The baseline is libvirt itself, so this script (unlike the package) calls it directly.
import libvirt

from vmmigration.core.config import CACHE
from vmmigration.core.forecast import Strategy
from vmmigration.core.model import (EffectiveMode, MigrationRequest, MigrationResult, Mode, OnTimeout,
                                    OverBudget, Policy, Update)
from vmtestbed import guest
from vmtestbed.felt import HeartbeatTail
from vmtestbed.testbed import Sandbox
from vmmigration.adapters.libvirt import engine
from vmtestbed.hosts import Host

Sample = tuple[float, float, float]  # wall seconds, downtime ms, bytes that crossed
# wall s, libvirt downtime ms, bytes, felt downtime ms, degraded s (switch → end), slow-writing s
HotSample = tuple[float, float, float, float, float, float]
HEARTBEAT_MS = 10
NAN = float("nan")
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


def engine_move(name: str, src: str, dst: str, policy: Policy = Policy(), mode: Mode = Mode.LIVE,
                on_update: Callable[[Update], None] | None = None,
                strategy: Strategy | None = None) -> tuple[float, MigrationResult]:
    """One move by the engine. ``strategy`` (with Mode.AUTO) overrides Auto's choice in the
    engine's own plan: a fresh engine knows no link rate, so Auto would always start Live."""
    started = time.monotonic()
    mover = engine()
    request = MigrationRequest(domain=name, source_uri=src, target_uri=dst, mode=mode, policy=policy)
    planned = None
    if strategy is not None:
        planned = dataclasses.replace(mover.check(request), strategy=strategy)
    result = mover.migrate(request, on_update=on_update, planned=planned)
    return time.monotonic() - started, result


def by_engine(name: str, src: str, dst: str, policy: Policy = Policy(), mode: Mode = Mode.LIVE) -> Sample:
    wall, result = engine_move(name, src, dst, policy, mode)
    down = float(result.downtime_ms) if result.downtime_ms is not None else float("nan")
    return wall, down, float(result.bytes_transferred)


CAPABILITIES = ("postcopy-ram", "postcopy-preempt", "multifd", "return-path")


def migration_capabilities(uri: str, name: str) -> str:
    """The migration capabilities QEMU has on, asked over its monitor (virsh qemu-monitor-command).

    Asked of the source while the job runs: whether libvirt turned post-copy
    preempt on is seen nowhere else (the engine never asks for it). The
    target's QEMU cannot tell: libvirt answers there only once the incoming
    job is over, and by then it has reset the capabilities."""
    try:
        done = subprocess.run(["virsh", "-q", "-c", uri, "qemu-monitor-command", name,
                               '{"execute":"query-migrate-capabilities"}'],
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "no answer in 20 s"
    if done.returncode != 0:
        return f"refused: {done.stderr.strip()}"
    caps = {c["capability"]: c["state"] for c in json.loads(done.stdout)["return"]}
    return ", ".join(f"{c}={'on' if caps.get(c) else 'off' if c in caps else '?'}" for c in CAPABILITIES)


def hot_move(tail: HeartbeatTail, name: str, src: str, dst: str, policy: Policy, mode: Mode,
             strategy: Strategy | None, probes: dict[str, str],
             label: str) -> tuple[HotSample, MigrationResult, str]:
    """One move of the busy guest: libvirt's figures and what the guest felt.

    The guest's steady page-writing rate is taken over the 2 s before the move;
    the move's window runs from the call to its return. The first switch to
    post-copy of each row has the source's QEMU asked for its migration capabilities.
    """
    steady = tail.steady_rate(time.monotonic() - 2.0, time.monotonic())
    switched: list[float] = []
    notes: list[str] = []
    probers: list[threading.Thread] = []

    def seen(update: Update) -> None:
        if update.note:
            notes.append(update.note)
        if update.mode is EffectiveMode.POST_COPY and not switched:
            switched.append(time.monotonic())
            if label not in probes:
                def probe() -> None:
                    probes[label] = f"source QEMU in post-copy: {migration_capabilities(src, name)}"
                probers.append(threading.Thread(target=probe, daemon=True))
                probers[-1].start()

    started = time.monotonic()
    wall, result = engine_move(name, src, dst, policy, mode, on_update=seen, strategy=strategy)
    ended = time.monotonic()
    for prober in probers:
        prober.join()
    time.sleep(0.5)  # the heartbeats that follow the move close its last gap
    felt = tail.largest_gap(started, ended) * 1000
    degraded = ended - switched[0] if switched else NAN
    slow = tail.slow_seconds(switched[0], ended, steady=steady) if switched else NAN
    down = float(result.downtime_ms) if result.downtime_ms is not None else NAN
    time.sleep(1.5)  # let the guest settle back to its steady rate before the next move
    return (wall, down, float(result.bytes_transferred), felt, degraded, slow), result, "; ".join(notes)


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


def median(samples: Sequence[tuple[float, ...]], index: int) -> float:
    return float(statistics.median(s[index] for s in samples))


def shown(value: float, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value != value else f"{value:>{width}.{digits}f}"


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
    link_bytes_per_s = float(args.link_mbit) * 1e6 / 8

    def floor(samples: Sequence[tuple[float, ...]]) -> float:
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

        # ---- part 2: hybrid, non-live and post-copy on a guest dirtier than the link
        hot = "bench-hot"
        hot_log = box.boot(box.guest_spec(hot, dirty_mib=48, dirty_rate_mib=48, heartbeat_ms=HEARTBEAT_MS),
                           host=box.hosts[0])
        # No libvirt bandwidth cap: the shaped link is the only limit.
        hybrid_policy = Policy(on_timeout=OnTimeout.SUSPEND, progress_timeout_seconds=3)
        capped = Policy()
        post_stall = Policy(on_timeout=OnTimeout.POST_COPY, progress_timeout_seconds=3)
        # Auto with post-copy allowed and no live move fitting: post-copy from the start.
        post_start = Policy(on_timeout=OnTimeout.POST_COPY, progress_timeout_seconds=3,
                            over_downtime_budget=OverBudget.LEAST_DOWNTIME)
        post_parallel = Policy(on_timeout=OnTimeout.POST_COPY, progress_timeout_seconds=3,
                               over_downtime_budget=OverBudget.LEAST_DOWNTIME, parallel_connections=4)
        # Post-copy at the start: Auto's post-copy strategy, chosen for it (see engine_move).
        rows: dict[str, tuple[Policy, Mode, Strategy | None]] = {
            "hybrid (live→suspend)": (hybrid_policy, Mode.LIVE, None),
            "non-live": (capped, Mode.NON_LIVE, None),
            "post-copy at start": (post_start, Mode.AUTO, Strategy.POST_COPY),
            "post-copy on stall": (post_stall, Mode.LIVE, None),
            "post-copy, 4 connections": (post_parallel, Mode.AUTO, Strategy.POST_COPY),
        }
        hot_results: dict[str, list[HotSample]] = {label: [] for label in rows}
        ran_as: dict[str, set[str]] = {label: set() for label in rows}
        notes: dict[str, str] = {}
        refused: dict[str, str] = {}
        probes: dict[str, str] = {}
        here, there = a, b
        probes["idle guest, before any move"] = f"source QEMU: {migration_capabilities(here, hot)}"
        with HeartbeatTail(hot_log) as tail:
            time.sleep(2.5)
            for round_no in range(args.hot_rounds):
                for label, (policy, mode, strategy) in rows.items():
                    if label in refused:
                        continue
                    try:
                        sample, result, note = hot_move(tail, hot, here, there, policy, mode, strategy,
                                                       probes, label)
                    except Exception as error:  # a row libvirt or QEMU refuses is dropped, and said
                        refused[label] = f"{type(error).__name__}: {error}"
                        cause = error.__cause__
                        if cause is not None:
                            refused[label] += f" (from {type(cause).__name__}: {cause})"
                        print(f"{label}: refused: {refused[label]}", flush=True)
                        time.sleep(2.0)
                        continue
                    hot_results[label].append(sample)
                    ran_as[label].add(result.mode.value)
                    notes.setdefault(label, note)
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
    print(f"{'method':<26}{'wall s':>9}{'downtime ms':>13}{'felt ms':>9}{'degraded s':>12}"
          f"{'downtime vs non-live':>22}{'MiB sent':>10}{'floor s':>9}")
    nl_down = median(hot_results["non-live"], 1) if hot_results["non-live"] else NAN
    for label, hot_samples in hot_results.items():
        if not hot_samples:
            continue
        wall, down = median(hot_samples, 0), median(hot_samples, 1)
        print(f"{label:<26}{wall:>9.2f}{shown(down, 13, 0)}{shown(median(hot_samples, 3), 9, 0)}"
              f"{shown(median(hot_samples, 4), 12, 2)}{shown(down / nl_down, 21, 2)}x"
              f"{median(hot_samples, 2) / 2**20:>10.1f}{floor(hot_samples):>9.2f}")
    print("floor: the bytes libvirt sent divided by the link's rate (no latency exists here:"
          " this kernel has no netem)")
    print(f"felt: the longest silence between the guest's heartbeats during the move, timed by the host "
          f"(heartbeat every {HEARTBEAT_MS} ms, log polled every 3 ms: an upper bound, "
          f"at most ~{HEARTBEAT_MS + 3} ms over)")
    print("degraded: from the switch to post-copy to the end of the move (the guest runs on the target, "
          "fetching missing pages over the link)")
    print("memwriter looks at its clock every 64 pages, inside a batch of writes too, so in post-copy "
          "the felt figure is the longest stall of the guest: the switch-over's pause, or the wait "
          "for the pages it touches, whichever is longer")
    if hot_results["non-live"]:
        in_use = median(hot_results["non-live"], 2)
        physical = in_use / link_bytes_per_s
        print(f"physical floor: the guest's memory in use ({in_use / 2**20:.1f} MiB, what the non-live "
              f"copy sent: every page once) / the link = {physical:.2f} s")
        for label, hot_samples in hot_results.items():
            if label.startswith("post-copy") and hot_samples:
                total = median(hot_samples, 0)
                print(f"  {label}: total {total:.2f} s = {total / physical:.2f}x the floor; wrote pages "
                      f"at under half its steady rate for {median(hot_samples, 5):.2f} s")
    for label in rows:
        if ran_as[label]:
            print(f"{label}: ran as {', '.join(sorted(ran_as[label]))}"
                  + (f" ({notes[label]})" if notes.get(label) else ""))
    for label, why in refused.items():
        print(f"{label}: no row, refused: {why}")
    for label, found in probes.items():
        print(f"{label}: {found}")
    print(f"guest: {part2_guest}")


if __name__ == "__main__":
    main()
