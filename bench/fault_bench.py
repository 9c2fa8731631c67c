"""Benchmark: kill -9 of the operator at random points, against the same moves with no kill.

Runs the fault tier's kill -9 scenario (``tests/faults/test_operator_faults.py``)
twice on its own control plane, libvirt hosts and operator: once killing the
operator at a seeded random point of every move and restarting it, once with
no kill as the baseline. Each round moves one running guest (Live, 4 MiB/s)
between two hosts and counts, from libvirt, where it ends up and how many
migration jobs were started for it.

Prints migrations, kills, double moves and lost VMs, and the median time from
the spec change to Placed with and without the kill. A script, not a test:
the scenario's own assertions still fail the run on a double move or a lost VM.

    .venv/bin/python bench/fault_bench.py [--rounds 20] [--seed 20261130]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run(*, rounds: int, seed: int, kill: bool) -> tuple[list[dict[str, Any]], float, bool]:
    """One pytest session of the scenario: its rounds, its wall time, and whether it passed."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rounds.json"
        env = {**os.environ, "VMMIGRATION_FAULT_ROUNDS": str(rounds), "VMMIGRATION_FAULT_SEED": str(seed),
               "VMMIGRATION_FAULT_KILL": "1" if kill else "0", "VMMIGRATION_FAULT_REPORT": str(report)}
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "pytest", "tests/faults/test_operator_faults.py",
                               "-k", "kill_9", "-q", "-p", "no:cacheprovider"],
                              cwd=REPO, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - began
        if not report.exists():
            sys.exit(f"the scenario wrote no report (pytest exit {done.returncode}):\n{done.stdout[-4000:]}")
        rows: list[dict[str, Any]] = json.loads(report.read_text())["rounds"]
        return rows, wall, done.returncode == 0


def seconds(text: str) -> float:
    return float(text.split()[0])


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    placed = [seconds(r["placed after"]) for r in rows]
    return {
        "migrations": len(rows),
        "double moves": sum(1 for r in rows if r["libvirt jobs"] > 1),
        "lost VMs": sum(1 for r in rows if len(r["running on"]) != 1),
        "wrong status": sum(1 for r in rows if r["running on"] != [r["status says"]]),
        "libvirt jobs": sum(r["libvirt jobs"] for r in rows),
        "start events": sum(r["started events"] for r in rows),
        "placed median": statistics.median(placed),
        "placed max": max(placed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args()

    killed_rows, killed_wall, killed_ok = run(rounds=args.rounds, seed=args.seed, kill=True)
    base_rows, base_wall, base_ok = run(rounds=args.rounds, seed=args.seed, kill=False)
    killed, base = summary(killed_rows), summary(base_rows)

    print(f"\nkill -9 of the operator at random points, seed {args.seed}, {args.rounds} rounds each\n")
    print(f"{'':28}{'kill -9':>12}{'no kill':>12}")
    print(f"{'kills':28}{args.rounds:>12}{0:>12}")
    for key in ("migrations", "libvirt jobs", "start events", "double moves", "lost VMs", "wrong status"):
        print(f"{key:28}{killed[key]:>12}{base[key]:>12}")
    print(f"{'change to Placed, median':28}{killed['placed median']:>11.1f}s{base['placed median']:>11.1f}s")
    print(f"{'change to Placed, max':28}{killed['placed max']:>11.1f}s{base['placed max']:>11.1f}s")
    print(f"{'session wall time':28}{killed_wall:>11.0f}s{base_wall:>11.0f}s")
    print(f"\nmedian change-to-Placed with a kill / without: "
          f"{killed['placed median'] / base['placed median']:.2f}x")
    kills = sorted(seconds(r["killed after"]) for r in killed_rows)
    phases: dict[str, int] = {}
    for r in killed_rows:
        phases[str(r["phase at kill"])] = phases.get(str(r["phase at kill"]), 0) + 1
    print(f"kills landed {kills[0]:.2f}–{kills[-1]:.2f} s after the spec change; phase last written "
          "before the kill: " + ", ".join(f"{k} {v}" for k, v in sorted(phases.items())))
    if not (killed_ok and base_ok):
        sys.exit("a scenario failed: see the rows above")


if __name__ == "__main__":
    main()
