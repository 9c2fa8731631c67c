"""What the measurer measures, remembers and learns, on a scripted host."""

from __future__ import annotations

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
from vmmigration.service.measure import CAP_PACE, Measurer

GUEST = DomainSummary(name="web-01", uuid="u-1", state=PowerState.RUNNING,
                      pause_reason=PauseReason.NONE, memory_bytes=128 * MIB, persistent=True)


class ScriptedHost:
    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)
        self.asked: list[int] = []

    def dirty_rate(self, name: str, *, seconds: int) -> float:
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
    assert measurer.link_rate(**link, policy=Policy(bandwidth_mib_per_s=8)).source == "PolicyCap"
    # Another pair has its own link.
    assert measurer.link_rate(source_uri="qemu+tcp://b/system", target_uri="qemu+tcp://a/system",
                              policy=Policy()).bytes_per_s is None


def test_a_move_teaches_the_memory_in_use_but_post_copy_teaches_nothing() -> None:
    measurer = Measurer()
    assert measurer.in_use(GUEST).source == "MemorySize"
    moved(measurer, cap=0, rate=0, mode=EffectiveMode.POST_COPY)
    assert measurer.in_use(GUEST).source == "MemorySize"
    moved(measurer, cap=0, rate=170 * MIB, iteration=2)
    assert (measurer.in_use(GUEST).bytes, measurer.in_use(GUEST).source) == (70 * MIB, "LastMove")
