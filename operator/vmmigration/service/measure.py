"""What a plan rests on, measured and remembered: the guest's dirty rate, its memory in use,
and the link between two hosts.

- The dirty rate is libvirt's page-sampling calculation, one period of 1 s
  and, only when that cannot settle the plan, one of 3 s (see
  :func:`vmmigration.core.dirtyrate.needs_longer_period`). A reading stays
  good for :attr:`Measurer.max_age_seconds`, so a plan rarely waits for one.
- Memory in use is what the first pass of this VM's last move sent: pages
  that hold data. Nothing cheaper is honest: QEMU's resident set counts its
  own translation cache, and a guest's "used" figure misses freed pages that
  still hold data. Before a first move the guest's memory size stands in, as
  an upper bound, and the plan says so.
- The link is the policy's cap, else what recent moves between the two
  hosts achieved, else unknown: the job's first seconds then measure it on
  the real path, and the monitor acts on that.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator

from vmmigration.core import dirtyrate
from vmmigration.core.dirtyrate import DirtyRate, Reading
from vmmigration.core.errors import VirtError
from vmmigration.core.model import (
    MIB,
    DomainSummary,
    EffectiveMode,
    MigrationRequest,
    MigrationResult,
    Policy,
    display_uri,
)
from vmmigration.core.plans import (
    IN_USE_LAST_MOVE,
    IN_USE_MEMORY,
    LINK_HISTORY,
    LINK_POLICY,
    LINK_UNKNOWN,
    InUse,
    LinkRate,
)
from vmmigration.service.ports import LibvirtHost

log = logging.getLogger(__name__)

SHORT_PERIOD_SECONDS, LONG_PERIOD_SECONDS = 1, 3
# Taken only in the background, where nobody waits: a hot set larger than the
# dirty rate × 3 s reads the same in both short periods, and shows only in one
# long enough for the guest to rewrite it in full (96 MiB at 12 MiB/s reads
# 12, 12, then 6.4 MiB/s).
RENEWAL_PERIOD_SECONDS = 15
# QEMU's rate limiter lets about a tenth more through than the cap it is given
# (measured: 8 MiB/s moves 8.8–9.0, 32 MiB/s moves 35.3, steady to ±1 %).
CAP_PACE = 1.10
# Recent moves between a pair: how many are kept and how long they count.
LINK_SAMPLES, LINK_MAX_AGE_SECONDS = 5, 3600.0


@dataclasses.dataclass
class Measurer:
    clock: Callable[[], float] = time.time
    max_age_seconds: float = 300.0
    # The longest a plan waits for a renewal under way: as long as its own two periods.
    plan_wait_seconds: float = SHORT_PERIOD_SECONDS + LONG_PERIOD_SECONDS + 1.0
    _dirty: dict[str, DirtyRate] = dataclasses.field(default_factory=dict)
    _in_use: dict[str, int] = dataclasses.field(default_factory=dict)
    _links: dict[tuple[str, str], collections.deque[tuple[float, float]]] = dataclasses.field(
        default_factory=dict)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    # Per guest (by uuid): one measurement at a time, so a plan that finds a renewal
    # under way waits for its reading instead of taking a second one beside it.
    _measuring: dict[str, threading.Lock] = dataclasses.field(default_factory=dict)
    # Guests (by uuid) in a move, and the gate that a calculation's start and a
    # move's beginning pass one at a time: libvirt's calculation started during a
    # migration job blocks for 30 s and fails, while a job that starts during a
    # calculation runs as usual. So a move never waits for a measurement, and no
    # measurement starts once a move has begun.
    _moving: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    _gate: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    # ---- the guest ----------------------------------------------------------

    def _guard(self, uuid: str) -> threading.Lock:
        with self._lock:
            return self._measuring.setdefault(uuid, threading.Lock())

    @contextlib.contextmanager
    def moving(self, domain: DomainSummary) -> Iterator[None]:
        """Held while ``domain`` moves: no dirty-rate calculation starts on it meanwhile."""
        with self._gate:
            self._moving[domain.uuid] += 1
        try:
            yield
        finally:
            with self._gate:
                self._moving[domain.uuid] -= 1
                if self._moving[domain.uuid] <= 0:
                    del self._moving[domain.uuid]

    @contextlib.contextmanager
    def _may_start(self, uuid: str) -> Iterator[bool]:
        with self._gate:
            yield uuid not in self._moving

    def reading_time(self, domain: DomainSummary) -> float | None:
        with self._lock:
            found = self._dirty.get(domain.uuid)
        return found.measured_at if found is not None else None

    def recent_dirty_rate(self, domain: DomainSummary) -> DirtyRate | None:
        with self._lock:
            found = self._dirty.get(domain.uuid)
        if found is None or self.clock() - found.measured_at > self.max_age_seconds:
            return None
        return found

    def dirty_rate(self, host: LibvirtHost, domain: DomainSummary, *,
                   link_bytes_per_s: float | None) -> DirtyRate | None:
        """A recent reading, else a new one (1 s, then 3 s if needed); None if libvirt cannot."""
        found = self.recent_dirty_rate(domain)
        if found is not None:
            return found
        guard = self._guard(domain.uuid)
        # A renewal under way keeps each period's reading as it comes: wait as long as a
        # plan's own two periods take, then plan from what it has (its long period is
        # the background's business, not this plan's).
        if not guard.acquire(timeout=self.plan_wait_seconds):
            return self.recent_dirty_rate(domain)
        try:
            return self.recent_dirty_rate(domain) or self._measure(
                host, domain, link_bytes_per_s=link_bytes_per_s)
        finally:
            guard.release()

    def renew(self, host: LibvirtHost, domain: DomainSummary) -> DirtyRate | None:
        """A new reading for the plans to come, taken in the background: the long third
        period too while the hot set is open. None, at once, when the guest moves or is
        measured."""
        guard = self._guard(domain.uuid)
        if not guard.acquire(blocking=False):
            return None
        try:
            with self._gate:
                moving = domain.uuid in self._moving
            if moving or host.job(domain.name) is not None:
                return None  # moving, by this process or by another tool
            return self._measure(host, domain, link_bytes_per_s=0.0,
                                 periods=(SHORT_PERIOD_SECONDS, LONG_PERIOD_SECONDS,
                                          RENEWAL_PERIOD_SECONDS))
        finally:
            guard.release()

    def _measure(self, host: LibvirtHost, domain: DomainSummary, *, link_bytes_per_s: float | None,
                 periods: tuple[int, ...] = (SHORT_PERIOD_SECONDS, LONG_PERIOD_SECONDS)
                 ) -> DirtyRate | None:
        readings: list[Reading] = []
        found: DirtyRate | None = None
        try:
            for seconds in periods:
                rate = host.dirty_rate(domain.name, seconds=seconds,
                                       gate=lambda: self._may_start(domain.uuid))
                readings.append(Reading(period_seconds=float(seconds), bytes_per_s=rate))
                found = dirtyrate.interpret(tuple(readings), memory_bytes=domain.memory_bytes,
                                            measured_at=self.clock())
                with self._lock:
                    self._dirty[domain.uuid] = found  # for a plan that waits for this one
                if not dirtyrate.needs_longer_period(found, link_bytes_per_s=link_bytes_per_s):
                    break
        except VirtError as error:
            # Measuring is an aid: a plan without it falls back on the job's own figures.
            # What the periods before the error read is kept already.
            log.info("cannot measure the dirty rate of %s: %s", domain.name, error)
        return found

    def in_use(self, domain: DomainSummary) -> InUse:
        with self._lock:
            sent = self._in_use.get(domain.uuid)
        if sent:
            return InUse(bytes=min(sent, domain.memory_bytes), source=IN_USE_LAST_MOVE)
        return InUse(bytes=domain.memory_bytes, source=IN_USE_MEMORY)

    # ---- the link -----------------------------------------------------------

    def link_rate(self, *, source_uri: str, target_uri: str, policy: Policy) -> LinkRate:
        recent = self._recent_link(source_uri, target_uri)
        cap = policy.bandwidth_mib_per_s * MIB if policy.bandwidth_mib_per_s else None
        if cap is not None:
            # A cap is a ceiling; a link slower than it sets the pace.
            if recent is not None and recent < cap * CAP_PACE * 0.9:
                return LinkRate(bytes_per_s=recent, source=LINK_HISTORY)
            # The wire's own rate, from moves that the cap did not pace: QEMU lifts the
            # cap for a live move's last copy, at the switch-over.
            faster = recent if recent is not None and recent > cap * CAP_PACE else None
            return LinkRate(bytes_per_s=cap * CAP_PACE, source=LINK_POLICY,
                            uncapped_bytes_per_s=faster)
        if recent is not None:
            return LinkRate(bytes_per_s=recent, source=LINK_HISTORY)
        return LinkRate(bytes_per_s=None, source=LINK_UNKNOWN)

    def _recent_link(self, source_uri: str, target_uri: str) -> float | None:
        """The median of recent moves this way, else the other way (a link carries
        about as much each way, and a VM that moved there once moves back)."""
        here, there = display_uri(source_uri), display_uri(target_uri)
        now = self.clock()
        with self._lock:
            for key in ((here, there), (there, here)):
                rates = [rate for at, rate in self._links.get(key, ())
                         if now - at <= LINK_MAX_AGE_SECONDS]
                if rates:
                    return statistics.median(rates)
        return None

    # ---- what a move taught us ----------------------------------------------

    def learn(self, request: MigrationRequest, domain: DomainSummary, *, live: bool,
              result: MigrationResult, first_pass_bytes: int | None) -> None:
        """What a move that succeeded measured, for the next plans: memory in use, the link."""
        final = result.final
        if result.mode is EffectiveMode.POST_COPY or final is None:
            # Post-copy leaves no final statistics, and its passes are cut short:
            # it tells neither the memory in use nor the link's rate.
            return
        if first_pass_bytes is None and (not live or final.iteration <= 2):
            # Paused, or done in one pass: every byte sent was a page in use, once.
            first_pass_bytes = result.bytes_transferred or None
        cap = request.policy.bandwidth_mib_per_s
        # QEMU's own average over the copy (setup excluded); nothing else is the link's.
        self.moved(domain, source_uri=request.source_uri, target_uri=request.target_uri,
                   first_pass_bytes=first_pass_bytes,
                   link_bytes_per_s=float(final.transfer_rate_bytes_per_s) or None,
                   cap_bytes_per_s=cap * MIB if cap else None)

    def moved(self, domain: DomainSummary, *, source_uri: str, target_uri: str,
              first_pass_bytes: int | None, link_bytes_per_s: float | None,
              cap_bytes_per_s: float | None) -> None:
        # A capped move tells of the link only when the link, not the cap, set its pace.
        telling = cap_bytes_per_s is None or (link_bytes_per_s or 0) < cap_bytes_per_s * CAP_PACE * 0.9
        log.debug("learned from the move of %s: %s in use, link %s (%s)", domain.name,
                  first_pass_bytes, link_bytes_per_s, "kept" if telling else "the cap's pace")
        with self._lock:
            if first_pass_bytes:
                self._in_use[domain.uuid] = first_pass_bytes
            if link_bytes_per_s and link_bytes_per_s > 0 and telling:
                key = (display_uri(source_uri), display_uri(target_uri))
                self._links.setdefault(key, collections.deque(maxlen=LINK_SAMPLES)).append(
                    (self.clock(), link_bytes_per_s))
