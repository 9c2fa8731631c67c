"""Pure: what libvirt's page-sampling dirty-rate readings say about a guest, with their error.

QEMU's page sampling hashes a few pages (512 per GiB of RAM) at the start
and the end of a period and counts those that changed. Two consequences:

- a page rewritten ten times in the period counts once, so a hot set ``H``
  rewritten at rate ``r`` reads as ``min(r, H / period)``: one short and one
  long period together reveal both;
- a 128 MiB guest has only 64 sampled pages, so one changed page moves the
  reading by 2 MiB/period, and a quiet reading of 0 only says "below a
  few MiB/s". The estimate carries that bound, and the engine refines it from
  the migration job's own per-pass figures once the move runs.
"""

from __future__ import annotations

import dataclasses
import math

from vmmigration.core.model import GIB, MIB

SAMPLED_PAGES_PER_GIB = 512
MIN_SAMPLED_PAGES = 16
# A longer period reads a saturated hot set: its reading falls below this share
# of the short period's, beyond the sampling error of both.
SATURATED_SHARE = 0.75


@dataclasses.dataclass(frozen=True)
class Reading:
    period_seconds: float
    bytes_per_s: float


@dataclasses.dataclass(frozen=True)
class DirtyRate:
    """The guest's dirty rate and hot set as far as the readings tell."""

    bytes_per_s: float  # the best estimate
    high_bytes_per_s: float  # what the readings cannot rule out (about two sigma)
    # The best estimate; when not known, the least the readings show
    # (rate × the longest period): a larger one shows only in the move itself.
    hot_set_bytes: int
    hot_set_known: bool
    readings: tuple[Reading, ...]
    measured_at: float = 0.0  # epoch seconds


def sampled_pages(memory_bytes: int) -> int:
    return max(MIN_SAMPLED_PAGES, math.ceil(SAMPLED_PAGES_PER_GIB * memory_bytes / GIB))


def resolution(memory_bytes: int, period_seconds: float) -> float:
    """What one changed sampled page adds to a reading, in bytes per second."""
    return memory_bytes / sampled_pages(memory_bytes) / period_seconds


def high(reading: Reading, *, memory_bytes: int) -> float:
    """The highest rate this reading leaves plausible: two binomial sigmas above it,
    and never less than three sampled pages (nothing seen is not nothing there)."""
    pages = sampled_pages(memory_bytes)
    step = resolution(memory_bytes, reading.period_seconds)
    seen = min(pages, reading.bytes_per_s / step)
    share = seen / pages
    sigma = math.sqrt(pages * share * (1 - share))
    return min(memory_bytes / reading.period_seconds, (seen + max(3.0, 2 * sigma)) * step)


def interpret(readings: tuple[Reading, ...], *, memory_bytes: int, measured_at: float = 0.0) -> DirtyRate:
    """Shortest period first: each longer one either refines the rate (it reads the same,
    more finely) or reads well below it, which is the hot set seen rewritten in full."""
    if not readings:
        raise ValueError("no dirty-rate reading to interpret")
    ordered = tuple(sorted(readings, key=lambda r: r.period_seconds))
    rate = ordered[0]
    for longer in ordered[1:]:
        if longer.bytes_per_s < rate.bytes_per_s * SATURATED_SHARE \
                and high(longer, memory_bytes=memory_bytes) < rate.bytes_per_s:
            # The longer period saw the hot set dirtied in full: H = reading × period.
            return DirtyRate(bytes_per_s=rate.bytes_per_s,
                             high_bytes_per_s=high(rate, memory_bytes=memory_bytes),
                             hot_set_bytes=int(longer.bytes_per_s * longer.period_seconds),
                             hot_set_known=True, readings=ordered, measured_at=measured_at)
        rate = longer
    # Consistent readings: the longest period resolves the rate best.
    least = min(memory_bytes, rate.bytes_per_s * rate.period_seconds)
    return DirtyRate(bytes_per_s=rate.bytes_per_s, high_bytes_per_s=high(rate, memory_bytes=memory_bytes),
                     hot_set_bytes=int(least), hot_set_known=False, readings=ordered,
                     measured_at=measured_at)


def needs_longer_period(rate: DirtyRate, *, link_bytes_per_s: float | None) -> bool:
    """Whether one more, longer reading could change the plan.

    A rate that could be a tenth of the link matters (it sets how many passes
    a live move takes and what a suspend leaves); anything dirtying at all
    hides a hot set the short period cannot see.
    """
    if rate.hot_set_known:
        return False
    if rate.bytes_per_s > 0:
        return True
    return link_bytes_per_s is not None and rate.high_bytes_per_s >= 0.1 * link_bytes_per_s


def as_mib(value: float) -> float:
    return round(value / MIB, 1)


# A renewal takes its two periods and the calls around them.
RENEWAL_SECONDS = 5.0


def renewal_due(*, measured_at: float | None, now: float, max_age_seconds: float,
                interval_seconds: float) -> bool:
    """Whether a reading kept for plans should be renewed at this tick.

    Renewed while it would not outlast the next tick (and that tick's own
    renewal), so a plan made at any moment finds one younger than
    ``max_age_seconds`` and never waits for a measurement.
    """
    if measured_at is None:
        return True
    return now - measured_at + interval_seconds + RENEWAL_SECONDS >= max_age_seconds
