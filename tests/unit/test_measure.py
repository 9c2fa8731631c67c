"""What the measurer measures, remembers and learns, on a scripted host."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from vmmigration.core.errors import OperationInvalid

from vmmigration.core.model import (
    MIB,
    DomainSummary,
    EffectiveMode,
    JobProgress,
    MigrationRequest,
    MigrationResult,
    PauseReason,
    Policy,
    PowerState,
)
from vmmigration.core import dirtyrate
from vmmigration.core.dirtyrate import Reading, renewal_due
from vmmigration.service.measure import CAP_PACE, Measurer

GUEST = DomainSummary(name="web-01", uuid="u-1", state=PowerState.RUNNING,
                      pause_reason=PauseReason.NONE, memory_bytes=128 * MIB, persistent=True)


class ScriptedHost:
    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)
        self.asked: list[int] = []

    def dirty_rate(self, name: str, *, seconds: int,
                   gate: Callable[[], AbstractContextManager[bool]] | None = None) -> float:
        with gate() if gate is not None else contextlib.nullcontext(True) as allowed:
            if not allowed:
                raise OperationInvalid(f"{name} is moving")
            self.asked.append(seconds)
        return self.readings.pop(0)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_guest_on_a_fast_link_is_read_once_and_a_busy_one_twice() -> None:
    quiet, busy = ScriptedHost(0.0), ScriptedHost(49 * MIB, 16 * MIB)
    assert Measurer().dirty_rate(quiet, GUEST, link_bytes_per_s=1024 * MIB) is not None  # type: ignore[arg-type]
    rate = Measurer().dirty_rate(busy, GUEST, link_bytes_per_s=8 * MIB)  # type: ignore[arg-type]
    assert (quiet.asked, busy.asked) == ([1], [1, 3])
    assert rate is not None and rate.hot_set_known and rate.hot_set_bytes == 48 * MIB


def test_a_recent_reading_is_reused_and_an_old_one_measured_again() -> None:
    clock = Clock()
    measurer = Measurer(clock=clock, max_age_seconds=300)
    host = ScriptedHost(0.0, 0.0)
    measurer.dirty_rate(host, GUEST, link_bytes_per_s=None)  # type: ignore[arg-type]
    clock.now += 200
    measurer.dirty_rate(host, GUEST, link_bytes_per_s=None)  # type: ignore[arg-type]
    assert host.asked == [1]
    clock.now += 200
    measurer.dirty_rate(host, GUEST, link_bytes_per_s=None)  # type: ignore[arg-type]
    assert host.asked == [1, 1]


def moved(measurer: Measurer, *, cap: int, rate: float, mode: EffectiveMode = EffectiveMode.LIVE,
          iteration: int = 2) -> None:
    final = JobProgress(elapsed_seconds=9, data_processed=70 * MIB, transfer_rate_bytes_per_s=int(rate),
                        iteration=iteration)
    measurer.learn(MigrationRequest(domain="web-01", source_uri="qemu+tcp://a/system",
                                    target_uri="qemu+tcp://b/system",
                                    policy=Policy(bandwidth_mib_per_s=cap)),
                   GUEST, live=True, first_pass_bytes=None,
                   result=MigrationResult(domain="web-01", mode=mode, duration_seconds=10,
                                          downtime_ms=30, bytes_transferred=70 * MIB,
                                          final=final if mode is not EffectiveMode.POST_COPY else None))


def test_the_link_is_the_cap_at_qemus_pace_until_a_move_shows_it_is_slower() -> None:
    measurer = Measurer()
    link = dict(source_uri="qemu+tcp://a/system", target_uri="qemu+tcp://b/system")
    assert measurer.link_rate(**link, policy=Policy()).bytes_per_s is None
    assert measurer.link_rate(**link, policy=Policy(bandwidth_mib_per_s=8)).bytes_per_s == 8 * MIB * CAP_PACE
    moved(measurer, cap=8, rate=8.8 * MIB)  # the cap's pace: tells nothing about the link
    assert measurer.link_rate(**link, policy=Policy()).bytes_per_s is None
    moved(measurer, cap=0, rate=170 * MIB)
    assert measurer.link_rate(**link, policy=Policy()).bytes_per_s == 170 * MIB
    capped = measurer.link_rate(**link, policy=Policy(bandwidth_mib_per_s=8))
    # Under the cap, the wire's own rate is known for the last copy, which QEMU sends uncapped.
    assert (capped.source, capped.uncapped_bytes_per_s) == ("PolicyCap", 170 * MIB)
    # The way back stands in for a pair that has moved only one way; another pair has its own.
    assert measurer.link_rate(source_uri="qemu+tcp://b/system", target_uri="qemu+tcp://a/system",
                              policy=Policy()).bytes_per_s == 170 * MIB
    assert measurer.link_rate(source_uri="qemu+tcp://a/system", target_uri="qemu+tcp://c/system",
                              policy=Policy()).bytes_per_s is None


def test_a_move_teaches_the_memory_in_use_but_post_copy_teaches_nothing() -> None:
    measurer = Measurer()
    assert measurer.in_use(GUEST).source == "MemorySize"
    moved(measurer, cap=0, rate=0, mode=EffectiveMode.POST_COPY)
    assert measurer.in_use(GUEST).source == "MemorySize"
    moved(measurer, cap=0, rate=170 * MIB, iteration=2)
    assert (measurer.in_use(GUEST).bytes, measurer.in_use(GUEST).source) == (70 * MIB, "LastMove")


class BusyHost(ScriptedHost):
    """A host whose guest runs a migration job that this process did not start."""

    def job(self, name: str) -> JobProgress | None:
        return JobProgress(elapsed_seconds=1.0, data_total=128 * MIB) if self.in_job else None

    def __init__(self, *readings: float, in_job: bool = False) -> None:
        super().__init__(*readings)
        self.in_job = in_job


def test_a_renewal_takes_a_long_period_that_shows_a_hot_set_and_the_next_plan_uses_it() -> None:
    # 24 MiB rewritten at 8 MiB/s reads 8 in 1 s and in 3 s; only 15 s shows the hot set.
    measurer, host = Measurer(clock=Clock()), BusyHost(8 * MIB, 8 * MIB, 1.6 * MIB)
    renewed = measurer.renew(host, GUEST)  # type: ignore[arg-type]
    assert renewed is not None and host.asked == [1, 3, 15]
    assert renewed.hot_set_known and renewed.hot_set_bytes == pytest.approx(24 * MIB, rel=0.01)
    assert measurer.dirty_rate(host, GUEST, link_bytes_per_s=8 * MIB) is renewed  # type: ignore[arg-type]
    assert host.asked == [1, 3, 15]


def test_no_renewal_starts_while_the_guest_moves_nor_during_a_job_started_elsewhere() -> None:
    measurer = Measurer(clock=Clock())
    host = BusyHost(0.0)
    with measurer.moving(GUEST):
        assert measurer.renew(host, GUEST) is None  # type: ignore[arg-type]
    assert measurer.renew(BusyHost(0.0, in_job=True), GUEST) is None  # type: ignore[arg-type]
    assert host.asked == [] and measurer.recent_dirty_rate(GUEST) is None


def test_a_reading_is_renewed_before_it_would_expire_between_two_ticks() -> None:
    due = dict(max_age_seconds=300.0, interval_seconds=60.0)
    assert renewal_due(measured_at=None, now=1000.0, **due)
    assert not renewal_due(measured_at=1000.0, now=1200.0, **due)  # 200 s old: good past the next tick
    assert renewal_due(measured_at=1000.0, now=1240.0, **due)  # would be 300 s old at the next tick


def test_no_calculation_starts_once_a_move_has_begun_and_a_move_never_waits_for_one() -> None:
    measurer, host = Measurer(clock=Clock()), ScriptedHost(8 * MIB, 8 * MIB)
    with measurer.moving(GUEST):  # entered at once, though nothing else holds the guest
        assert measurer.dirty_rate(host, GUEST, link_bytes_per_s=None) is None  # type: ignore[arg-type]
    assert host.asked == []
    assert measurer.dirty_rate(host, GUEST, link_bytes_per_s=None) is not None  # type: ignore[arg-type]
    assert host.asked == [1, 3]


def test_a_plan_waits_for_a_renewal_no_longer_than_its_own_periods_then_uses_what_it_has() -> None:
    measurer = Measurer(clock=Clock(), plan_wait_seconds=0.05)
    host = ScriptedHost(8 * MIB)
    renewing = measurer._guard(GUEST.uuid)  # a renewal in its long period, holding the guest
    renewing.acquire()
    try:
        assert measurer.dirty_rate(host, GUEST, link_bytes_per_s=None) is None  # type: ignore[arg-type]
        # The renewal's short periods are kept as they come:
        measurer._dirty[GUEST.uuid] = dirtyrate.interpret((Reading(1, 8 * MIB),), memory_bytes=128 * MIB,
                                                          measured_at=Clock.now)
        found = measurer.dirty_rate(host, GUEST, link_bytes_per_s=None)  # type: ignore[arg-type]
    finally:
        renewing.release()
    assert found is not None and found.bytes_per_s == 8 * MIB and host.asked == []
