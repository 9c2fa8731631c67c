"""Pure: what each migration strategy would cost this guest over this link, before it runs.

The model is QEMU's own pre-copy loop. The first pass sends every page in
use; while a pass of ``t`` seconds runs, the guest dirties ``min(hot set,
dirty rate × t)`` bytes, which the next pass sends again. QEMU switches over
(pauses the guest and sends the rest) at the end of a pass whose leftover
fits in ``link rate × max downtime``. A guest that dirties its hot set
faster than the link empties it never gets there: its leftover stops
shrinking, and only suspending it (the hybrid), post-copy or a non-live copy
can finish the move.

Every figure is in bytes and seconds. Nothing here measures: the inputs come
from :mod:`vmmigration.core.dirtyrate` and the caller's history of the link.
"""

from __future__ import annotations

import dataclasses
import enum

from vmmigration.core.model import MIB

# QEMU's default downtime limit when the policy sets none.
QEMU_DEFAULT_DOWNTIME_SECONDS = 0.3
# Past this many passes a pre-copy is called non-converging (QEMU has no cap,
# but a leftover that shrinks by less than this factor per pass is no progress).
MAX_PASSES = 30
SHRINK_FACTOR = 0.95
# QEMU's auto-converge throttle: starts at 20 %, adds 10 % a pass, stops at 99 %,
# once the bytes dirtied in a pass exceed half of those sent, twice in a row.
THROTTLE_INITIAL, THROTTLE_STEP, THROTTLE_MAX = 0.20, 0.10, 0.99


class Strategy(str, enum.Enum):
    """How a move can run. The first four keep the guest running during the copy."""

    LIVE = "Live"
    AUTO_CONVERGE = "LiveAutoConverge"  # live, with QEMU throttling the vCPUs
    POST_COPY = "PostCopy"  # switch to post-copy as soon as the job runs
    HYBRID = "Hybrid"  # live, then suspend the source at the end of a pass
    NON_LIVE = "NonLive"
    OFFLINE = "Offline"


@dataclasses.dataclass(frozen=True)
class Overheads:
    """Fixed costs of a move, measured on the test bed (libvirt 11.3, QEMU 10.0 under TCG;
    see docs/planning.md) and checked by bench/forecast_bench.py."""

    # From the call to the first byte of memory: the target's QEMU started, connected
    # (0.56 s median over 34 moves; libvirt's own setup_time, a few ms, misses it).
    setup_seconds: float = 0.6
    # After QEMU is done and the guest runs on the target: libvirt's finish and
    # confirm phases, as the engine's clock sees them (1.3 s; 1.2 to 2.0 s around a
    # bare migrateToURI3). Part of the move's time, not of its downtime.
    finish_seconds: float = 1.3
    # The guest paused at the switch: device state, the last sync, the restart (16–46 ms).
    switchover_seconds: float = 0.03
    # Scanning zero pages (sent as markers, not content) runs at memory speed.
    zero_scan_bytes_per_s: float = 4096.0 * MIB
    # Defining a shut-off domain on the target.
    offline_seconds: float = 0.3


# For forecasting the rest of a job already under way.
NO_OVERHEADS = Overheads(setup_seconds=0.0, finish_seconds=0.0, switchover_seconds=0.0)


@dataclasses.dataclass(frozen=True)
class Inputs:
    memory_bytes: int  # the guest's RAM
    in_use_bytes: int  # what the first pass sends: pages that hold data
    dirty_rate_bytes_per_s: float
    hot_set_bytes: int  # the pages the guest keeps rewriting (≤ in use)
    link_bytes_per_s: float
    max_downtime_seconds: float = QEMU_DEFAULT_DOWNTIME_SECONDS
    overheads: Overheads = Overheads()
    # The link rate is a cap below what the wire carries (the policy's bandwidth).
    # In post-copy QEMU caps only the background copy: a page the guest waits for
    # is sent at once, beside the cap.
    capped: bool = False
    # Under a cap, the wire's own rate when known: QEMU lifts the cap for a live move's last
    # copy, at the switch-over (None: the link rate, an upper bound on its downtime).
    switch_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.link_bytes_per_s <= 0 or (self.switch_bytes_per_s is not None
                                          and self.switch_bytes_per_s <= 0):
            raise ValueError("a forecast needs a positive link rate")
        if min(self.memory_bytes, self.in_use_bytes, self.hot_set_bytes) < 0 \
                or self.dirty_rate_bytes_per_s < 0 or self.max_downtime_seconds < 0:
            raise ValueError("forecast inputs must not be negative")


@dataclasses.dataclass(frozen=True)
class Forecast:
    strategy: Strategy
    converges: bool  # False: this strategy cannot finish the move on its own
    duration_seconds: float | None = None
    downtime_seconds: float | None = None
    passes: int | None = None  # pre-copy passes before the switch (or the suspend)
    degraded_seconds: float = 0.0  # guest runs throttled or fetching pages over the link
    note: str = ""


@dataclasses.dataclass(frozen=True)
class _Pass:
    ends_at: float  # seconds since the job started
    leftover: float  # bytes dirtied during this pass, to send next


def _first_pass_seconds(inputs: Inputs) -> float:
    zero = max(0, inputs.memory_bytes - inputs.in_use_bytes)
    return inputs.in_use_bytes / inputs.link_bytes_per_s + zero / inputs.overheads.zero_scan_bytes_per_s


def _passes(inputs: Inputs, *, throttle: bool = False) -> tuple[list[_Pass], bool, list[float]]:
    """The pre-copy passes up to the one QEMU switches over after, and whether it does.

    Returns the passes, whether the last one converged, and the throttle in
    force during each pass (all zero without auto-converge).
    """
    link, hot = inputs.link_bytes_per_s, float(inputs.hot_set_bytes)
    threshold = link * inputs.max_downtime_seconds
    duration = _first_pass_seconds(inputs)
    at = inputs.overheads.setup_seconds + duration
    throttled = 0.0
    high = 0
    passes: list[_Pass] = []
    throttles: list[float] = []
    sent = float(inputs.in_use_bytes)
    while True:
        leftover = min(hot, inputs.dirty_rate_bytes_per_s * (1 - throttled) * duration)
        passes.append(_Pass(ends_at=at, leftover=leftover))
        throttles.append(throttled)
        if leftover <= threshold:
            return passes, True, throttles
        if throttle:
            high = high + 1 if leftover > sent / 2 else 0
            if high >= 2:
                throttled = THROTTLE_INITIAL if throttled == 0 else min(THROTTLE_MAX, throttled + THROTTLE_STEP)
        shrinking = len(passes) < 2 or leftover < passes[-2].leftover * SHRINK_FACTOR
        if len(passes) >= MAX_PASSES or (not shrinking and (not throttle or throttled >= THROTTLE_MAX)):
            return passes, False, throttles
        duration = leftover / link
        sent = leftover
        at += duration


def _paused_copy_seconds(inputs: Inputs, leftover: float) -> float:
    """Sending a live move's last ``leftover`` at the switch-over. QEMU keeps the cap until
    what is left fits its threshold (link × max downtime), then flushes that part uncapped
    (measured: 4 MiB left over a 32 MiB/s cap took 20 ms, not 115)."""
    if not inputs.capped or inputs.switch_bytes_per_s is None:
        return leftover / inputs.link_bytes_per_s
    last = min(leftover, inputs.link_bytes_per_s * inputs.max_downtime_seconds)
    return (leftover - last) / inputs.link_bytes_per_s + last / max(inputs.switch_bytes_per_s,
                                                                    inputs.link_bytes_per_s)


def live(inputs: Inputs, *, auto_converge: bool = False) -> Forecast:
    strategy = Strategy.AUTO_CONVERGE if auto_converge else Strategy.LIVE
    passes, converged, throttles = _passes(inputs, throttle=auto_converge)
    if not converged:
        return Forecast(strategy, converges=False, passes=len(passes),
                        note=_no_convergence(inputs, passes[-1].leftover))
    last = passes[-1]
    downtime = _paused_copy_seconds(inputs, last.leftover) + inputs.overheads.switchover_seconds
    degraded = sum(
        (p.ends_at - (passes[i - 1].ends_at if i else inputs.overheads.setup_seconds))
        for i, p in enumerate(passes) if throttles[i] > 0)
    return Forecast(strategy, converges=True,
                    duration_seconds=last.ends_at + downtime + inputs.overheads.finish_seconds,
                    downtime_seconds=downtime, passes=len(passes), degraded_seconds=degraded)


def hybrid(inputs: Inputs) -> Forecast:
    """Live until the pass whose leftover is smallest, then suspended for the rest.

    A guest that converges live never needs the suspend: its forecast is Live's.
    """
    passes, converged, _ = _passes(inputs)
    best = min(range(len(passes)), key=lambda i: (passes[i].leftover, i))
    chosen = passes[-1] if converged else passes[best]
    # Suspended, the rest goes at the cap: measured within 4 % of leftover ÷ cap over 8 and
    # 32 MiB/s caps, though QEMU lifts the cap once a running guest's leftover fits (Live).
    downtime = (_paused_copy_seconds(inputs, chosen.leftover) if converged
                else chosen.leftover / inputs.link_bytes_per_s) + inputs.overheads.switchover_seconds
    return Forecast(Strategy.HYBRID, converges=True,
                    duration_seconds=chosen.ends_at + downtime + inputs.overheads.finish_seconds,
                    downtime_seconds=downtime, passes=passes.index(chosen) + 1,
                    note="" if converged else f"suspend at the end of pass {passes.index(chosen) + 1}")


def post_copy(inputs: Inputs) -> Forecast:
    """Switched to post-copy as the job starts: every page crosses once, the guest runs
    on the target from the start and waits on the link for pages it touches first.

    Under a cap, the pages the guest touches come on demand beside the capped
    background copy: at the guest's dirty rate, until its hot set has all crossed.
    """
    copy = _first_pass_seconds(inputs)
    if inputs.capped and inputs.hot_set_bytes and inputs.dirty_rate_bytes_per_s:
        link, rate = inputs.link_bytes_per_s, inputs.dirty_rate_bytes_per_s
        zero = copy - inputs.in_use_bytes / link
        hot = min(inputs.hot_set_bytes, inputs.in_use_bytes)
        # The background sends what demand did not: the rest of the pages in use.
        rest = (inputs.in_use_bytes - hot) / link
        # Unless the guest touches its hot set more slowly than that takes: then both
        # streams run side by side for the whole copy.
        copy = zero + (rest if rate * rest >= hot else inputs.in_use_bytes / (link + rate))
    downtime = inputs.overheads.switchover_seconds
    return Forecast(Strategy.POST_COPY, converges=True,
                    duration_seconds=(inputs.overheads.setup_seconds + copy + downtime
                                      + inputs.overheads.finish_seconds),
                    downtime_seconds=downtime, passes=0, degraded_seconds=copy,
                    note="a link failure in post-copy leaves the VM split until it is resumed")


def non_live(inputs: Inputs) -> Forecast:
    copy = _first_pass_seconds(inputs) + inputs.overheads.switchover_seconds
    return Forecast(Strategy.NON_LIVE, converges=True,
                    duration_seconds=inputs.overheads.setup_seconds + copy + inputs.overheads.finish_seconds,
                    downtime_seconds=copy, passes=1)


def offline(inputs: Inputs) -> Forecast:
    return Forecast(Strategy.OFFLINE, converges=True, duration_seconds=inputs.overheads.offline_seconds,
                    downtime_seconds=0.0, passes=0, note="the domain is shut off")


def every_strategy(inputs: Inputs, *, running: bool = True) -> tuple[Forecast, ...]:
    """The forecast of each strategy that applies: a shut-off domain only moves offline."""
    if not running:
        return (offline(inputs),)
    return (live(inputs), live(inputs, auto_converge=True), post_copy(inputs), hybrid(inputs),
            non_live(inputs))


def _no_convergence(inputs: Inputs, leftover: float) -> str:
    return (f"the guest dirties {leftover / MIB:.0f} MiB per pass; the link sends "
            f"{inputs.link_bytes_per_s * inputs.max_downtime_seconds / MIB:.1f} MiB "
            "within the downtime limit")
