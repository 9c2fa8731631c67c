"""Benchmark: the forecast against what each strategy really took, and Auto's choice against all.

On the sandbox, in one run, over a matrix of guests (idle; a small hot set; a
hot set dirtied faster than the link; a large hot set) and two link rates
(the policy's bandwidth cap, which the plan knows):

1. each guest is measured and planned once per link (Auto), then moved once
   with every strategy whose forecast converges, the same measurement
   driving each: forecast against measured duration and downtime, with the
   error per case, the median and the worst;
2. Auto's choice against every fixed strategy on the same guest: did it pick
   the least duration among those within the downtime budget (or, with none
   within it, the least downtime)?
3. the busy guest (48 MiB rewritten at 48 MiB/s over an 8 MiB/s cap): the
   hybrid escalated by the forecast against the hybrid escalated by the
   timer and against non-live, beside the floor: the first pass of every
   page in use plus the hot set, at the rate the link achieved.

Each guest's first move (a warm-up, non-live and uncapped) teaches the engine
its memory in use and the wire's rate, as any move does in production; the
plans use the reading the operator's background renewal takes. A script, not a test: it prints
medians and ratios, and asserts nothing.

    .venv/bin/python bench/forecast_bench.py [--links 8,32] [--hybrid-rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from vmmigration.adapters.libvirt import engine
from vmmigration.core.config import CACHE
from vmmigration.core import strategy as strategies
from vmmigration.core.forecast import Strategy
from vmmigration.core.model import MIB, Escalation, MigrationRequest, MigrationResult, Mode, OnTimeout, \
    OverBudget, Policy
from vmmigration.core.plans import MovePlan
from vmmigration.service import renewal
from vmmigration.service.engine import Engine
from vmtestbed import guest
from vmtestbed.testbed import Sandbox

GUESTS = {  # name: (hot set MiB, rate MiB/s, memory MiB)
    "idle": (16, 0, 128),
    "small-hot": (4, 32, 128),
    "hot-faster-than-link": (48, 48, 128),
    # 96 MiB cannot be allocated beside the kernel and initramfs in 128 MiB.
    "large-hot": (96, 12, 256),
}
RUN = (Strategy.LIVE, Strategy.POST_COPY, Strategy.HYBRID, Strategy.NON_LIVE)


@dataclasses.dataclass
class Case:
    guest: str
    link: int
    strategy: Strategy
    forecast_s: float
    forecast_ms: float
    actual_s: float
    actual_ms: float
    # Post-copy: the time the VM runs on the target fetching pages, forecast and measured.
    forecast_degraded_s: float | None = None
    actual_degraded_s: float | None = None

    @property
    def duration_error(self) -> float:
        return self.actual_s / self.forecast_s - 1

    @property
    def downtime_error(self) -> float:
        # Downtimes of tens of ms are noise against a 30 ms switch-over guess:
        # compare them as absolute errors under 100 ms.
        if max(self.actual_ms, self.forecast_ms) < 100:
            return 0.0
        return self.actual_ms / max(self.forecast_ms, 1.0) - 1


def best_measured(measured: dict[Strategy, tuple[float, float]], pol: Policy) -> Strategy | None:
    """What Auto should have chosen, judged by what each strategy really took: among those
    its policy allows, Live if within the budget, else the quickest fallback within it (near
    ties to the preferred), else the least downtime. Post-copy reports no downtime."""
    allowed = [s for s in strategies.allowed(policy=pol, running=True) if s in measured]
    budget_ms = strategies.budget_seconds(pol) * 1000
    fitting = [s for s in allowed if measured[s][1] <= budget_ms]
    if fitting and fitting[0] is allowed[0] and allowed[0] is Strategy.LIVE:
        return Strategy.LIVE
    if fitting:
        fastest = min(measured[s][0] for s in fitting)
        near = [s for s in fitting if measured[s][0] <= fastest * (1 + strategies.TIE_SHARE) + 0.1]
        return min(near, key=strategies.PREFERENCE.index)
    return min(allowed, key=lambda s: measured[s][1]) if allowed else None


def policy(link: int, **changes: object) -> Policy:
    base = Policy(bandwidth_mib_per_s=link, on_timeout=OnTimeout.SUSPEND,
                  over_downtime_budget=OverBudget.LEAST_DOWNTIME, progress_timeout_seconds=300,
                  completion_timeout_seconds_per_gib=0, hard_timeout_seconds=600)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class Mover:
    """One guest moving back and forth between the two hosts with one engine (and its memory)."""

    def __init__(self, box: Sandbox, moving: Engine, name: str) -> None:
        self.box, self.engine, self.name = box, moving, name
        self.here, self.there = (h.uri for h in box.hosts)

    def request(self, mode: Mode, pol: Policy) -> MigrationRequest:
        return MigrationRequest(domain=self.name, source_uri=self.here, target_uri=self.there,
                                mode=mode, policy=pol)

    def move(self, mode: Mode, pol: Policy, planned: MovePlan | None = None) -> tuple[MigrationResult, float]:
        started = time.monotonic()
        result = self.engine.migrate(self.request(mode, pol), planned=planned)
        wall = time.monotonic() - started
        self.here, self.there = self.there, self.here
        return result, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", default="8,32", help="bandwidth caps in MiB/s, comma-separated")
    parser.add_argument("--hybrid-rounds", type=int, default=3)
    args = parser.parse_args()
    links = [int(x) for x in args.links.split(",")]

    box = Sandbox(root=CACHE / "forecast-bench-sandbox", count=2, subnet=5)
    box.up()
    moving = engine()
    cases: list[Case] = []
    choices: list[tuple[str, int, Strategy | None, Strategy | None, str]] = []
    hybrid_rows: dict[str, list[tuple[float, float]]] = {"hybrid, forecast": [], "hybrid, timer": [],
                                                         "non-live": []}
    floors: list[float] = []
    logs = {}
    try:
        for name, (hot, rate, memory) in GUESTS.items():
            vm = f"fb-{name}"
            logs[vm] = box.boot(box.guest_spec(vm, dirty_mib=hot, dirty_rate_mib=rate, memory_mib=memory),
                                host=box.hosts[0])
            mover = Mover(box, moving, vm)
            # Let the guest write its whole region once (it starts from nothing), then a
            # warm-up move, uncapped, teaches the engine its memory in use and the wire's
            # own rate, as any move does.
            time.sleep(hot / rate + 2 if rate else 2)
            mover.move(Mode.NON_LIVE, policy(max(links), bandwidth_mib_per_s=0))
            for link in links:
                # The reading an Auto VMMigration's plan finds: the operator's Hypervisor
                # timer renews it in the background (1, 3 and, if need be, 15 s periods).
                renewal.renew(moving, mover.here, vm)
                auto = moving.check(mover.request(Mode.AUTO, policy(link)))
                forecasts = {f.strategy: f for f in auto.forecasts}
                measured: dict[Strategy, tuple[float, float]] = {}
                for strategy in RUN:
                    f = forecasts.get(strategy)
                    if f is None or not f.converges or f.duration_seconds is None:
                        continue
                    fixed = dataclasses.replace(auto, strategy=strategy)
                    result, _ = mover.move(Mode.AUTO, policy(link), planned=fixed)
                    actual = (result.duration_seconds, float(result.downtime_ms or 0))
                    measured[strategy] = actual
                    cases.append(Case(name, link, strategy, f.duration_seconds,
                                      (f.downtime_seconds or 0) * 1000, *actual,
                                      forecast_degraded_s=f.degraded_seconds or None,
                                      actual_degraded_s=result.degraded_seconds))
                    print(f"{name} @ {link} MiB/s {strategy.value}: forecast "
                          f"{f.duration_seconds:.1f} s/{(f.downtime_seconds or 0) * 1000:.0f} ms, took "
                          f"{actual[0]:.1f} s/{actual[1]:.0f} ms", flush=True)
                choices.append((name, link, auto.strategy, best_measured(measured, policy(link)),
                                auto.why))
            if name == "hot-faster-than-link":
                slow = min(links)
                for _ in range(args.hybrid_rounds):
                    planned = moving.check(mover.request(Mode.AUTO, policy(slow)))
                    result, _ = mover.move(Mode.AUTO, policy(slow), planned=planned)
                    hybrid_rows["hybrid, forecast"].append((result.duration_seconds, result.downtime_ms or 0))
                    achieved = (result.final.transfer_rate_bytes_per_s if result.final else 0) or slow * MIB
                    in_use = moving.measurer.in_use(box_domain(mover)).bytes
                    floors.append((in_use + hot * MIB) / achieved)
                    result, _ = mover.move(Mode.LIVE, policy(slow, escalation=Escalation.TIMEOUT,
                                                             progress_timeout_seconds=3))
                    hybrid_rows["hybrid, timer"].append((result.duration_seconds, result.downtime_ms or 0))
                    result, _ = mover.move(Mode.NON_LIVE, policy(slow))
                    hybrid_rows["non-live"].append((result.duration_seconds, result.downtime_ms or 0))
                    print("hybrid round done", flush=True)
    finally:
        guests = {vm: _healthy(log) for vm, log in logs.items()}
        box.down()
        # Whatever was measured is shown, even if a later case failed.
        report(cases, choices, hybrid_rows, floors, guests, links=links, rounds=args.hybrid_rounds)


def report(cases: list[Case], choices: list[tuple[str, int, Strategy | None, Strategy | None, str]],
           hybrid_rows: dict[str, list[tuple[float, float]]], floors: list[float],
           guests: dict[str, str], *, links: list[int], rounds: int) -> None:
    if not cases:
        return
    print()
    print("Forecast against measured, one move per case (TCG guests of 128 MiB, large-hot 256 MiB; "
          "the policy's cap as the link)")
    print(f"{'guest':<22}{'link':>6}{'strategy':>10}{'forecast s':>12}{'took s':>9}{'err':>7}"
          f"{'forecast ms':>13}{'took ms':>9}{'err':>7}{'degraded s (forecast/took)':>28}")
    for c in cases:
        degraded = ("" if c.actual_degraded_s is None else
                    f"{c.forecast_degraded_s or 0:.1f} / {c.actual_degraded_s:.1f}")
        print(f"{c.guest:<22}{c.link:>6}{c.strategy.value:>10}{c.forecast_s:>12.1f}{c.actual_s:>9.1f}"
              f"{c.duration_error:>+7.0%}{c.forecast_ms:>13.0f}{c.actual_ms:>9.0f}{c.downtime_error:>+7.0%}"
              f"{degraded:>28}")
    duration = [abs(c.duration_error) for c in cases]
    downtime = [abs(c.downtime_error) for c in cases]
    within = sum(1 for c in cases if abs(c.duration_error) <= 0.25 and abs(c.downtime_error) <= 0.25)
    print(f"duration error: median {statistics.median(duration):.0%}, worst {max(duration):.0%}; "
          f"downtime error: median {statistics.median(downtime):.0%}, worst {max(downtime):.0%}; "
          f"both within ±25 %: {within} of {len(cases)} ({within / len(cases):.0%})")
    print()
    print("Auto's choice against every fixed strategy it may choose (budget 300 ms; onTimeout Suspend, "
          "so Live, Hybrid, NonLive; LeastDowntime)")
    print(f"{'guest':<22}{'link':>6}{'Auto chose':>12}{'best measured':>15}  right?")
    for name, link, chose, best, _why in choices:
        chosen = chose.value if chose else "blocked"
        print(f"{name:<22}{link:>6}{chosen:>12}{best.value if best else '-':>15}  "
              f"{'yes' if chose == best else 'no'}")
    print()
    floor = statistics.median(floors) if floors else float("nan")
    print(f"The busy guest (48 MiB at 48 MiB/s) over a {min(links)} MiB/s cap, median of {rounds};"
          f" floor {floor:.1f} s total (first pass + hot set at the achieved rate)")
    print(f"{'method':<20}{'total s':>9}{'vs floor':>10}{'downtime ms':>13}")
    for label, rows in hybrid_rows.items():
        if not rows:
            continue
        total = statistics.median(r[0] for r in rows)
        down = statistics.median(r[1] for r in rows)
        print(f"{label:<20}{total:>9.1f}{total / floor:>9.2f}x{down:>13.0f}")
    print(f"guests: {guests}")


def box_domain(mover: Mover):  # type: ignore[no-untyped-def]
    from vmtestbed.hosts import Host
    with Host(mover.here) as host:
        return host.summary(mover.name)


def _healthy(log) -> str:  # type: ignore[no-untyped-def]
    beats = guest.heartbeats(log)
    return f"{len({b.boot for b in beats})} boot, {'no corruption' if not guest.failures(log) else 'CORRUPTION'}"


if __name__ == "__main__":
    main()
