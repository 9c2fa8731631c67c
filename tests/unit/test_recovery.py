"""Post-copy recovery: when a split VM is resumed, how patiently, and when a person takes over."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest

from vmmigration.core import recovery
from vmmigration.core.config import Settings, SettingsError
from vmmigration.core.errors import MigrationFailed, VirtError
from vmmigration.core.location import Location
from vmmigration.core.model import (
    DomainSummary,
    EffectiveMode,
    HostVersions,
    JobProgress,
    MigrationRequest,
    Mode,
    PauseReason,
    PowerState,
    Update,
)
from vmmigration.core.planner import MigrationFlags
from vmmigration.core.reasons import Reason
from vmmigration.service.engine import Engine
from vmmigration.service.outcomes import MigrationError
from vmmigration.service.planning import Plan

FIXED = HostVersions(libvirt=10_010_000, hypervisor=10_000_002)
BROKEN = HostVersions(libvirt=11_003_000, hypervisor=10_000_002)


@pytest.mark.parametrize(("policy", "versions", "blocked"), [
    (recovery.ResumePolicy.AUTO, FIXED, False),
    (recovery.ResumePolicy.AUTO, BROKEN, True),
    (recovery.ResumePolicy.AUTO, HostVersions(libvirt=11_002_000, hypervisor=0), True),
    (recovery.ResumePolicy.AUTO, HostVersions(libvirt=11_003_999, hypervisor=0), True),
    # 11.4.0 fixed the crash: the current flavour's 12.9.0 resumes in the test bed.
    (recovery.ResumePolicy.AUTO, HostVersions(libvirt=11_004_000, hypervisor=0), False),
    (recovery.ResumePolicy.AUTO, HostVersions(libvirt=12_009_000, hypervisor=11_001_003), False),
    (recovery.ResumePolicy.AUTO, HostVersions(libvirt=11_001_000, hypervisor=0), False),
    (recovery.ResumePolicy.ALWAYS, BROKEN, False),
    (recovery.ResumePolicy.NEVER, FIXED, True),
])
def test_a_resume_is_tried_unless_the_targets_libvirt_crashes_on_it_or_the_owner_said_never(
        policy: recovery.ResumePolicy, versions: HostVersions, blocked: bool) -> None:
    why = recovery.blocker(policy=policy, target=versions)
    assert (why is not None) is blocked
    if policy is recovery.ResumePolicy.AUTO and blocked:
        assert "11.3." in why or "11.2." in why  # type: ignore[operator]


def test_the_wait_between_resumes_doubles_up_to_its_cap() -> None:
    limits = recovery.ResumeLimits(first_delay_seconds=2, max_delay_seconds=30)
    assert [recovery.delay(attempt=n, limits=limits) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_the_advice_for_a_person_says_where_both_halves_are_and_what_not_to_do() -> None:
    text = recovery.advice(domain="vm1", source="qemu+tcp://a/system", target="qemu+tcp://b/system",
                           why="b does not answer")
    assert "vm1" in text and "a/system" in text and "b/system" in text
    assert "Do not resume or destroy either half" in text and "--postcopy-resume" in text


def test_the_resume_policy_is_read_from_the_environment_and_a_wrong_one_is_refused() -> None:
    assert Settings.from_env({}).post_copy_resume is recovery.ResumePolicy.AUTO
    assert Settings.from_env({"VMMIGRATION_POSTCOPY_RESUME": "Never"}).post_copy_resume \
        is recovery.ResumePolicy.NEVER
    with pytest.raises(SettingsError, match="VMMIGRATION_POSTCOPY_RESUME"):
        Settings.from_env({"VMMIGRATION_POSTCOPY_RESUME": "sometimes"})


# ---- the engine's loop, against hosts that follow a script ------------------------

def _domain(state: PowerState, reason: PauseReason = PauseReason.NONE) -> DomainSummary:
    return DomainSummary(name="vm1", uuid="u", state=state, pause_reason=reason,
                         memory_bytes=1 << 27, persistent=False)


SPLIT_SOURCE = _domain(PowerState.PAUSED, PauseReason.POST_COPY_FAILED)
SPLIT_TARGET = _domain(PowerState.RUNNING, PauseReason.POST_COPY_FAILED)


@dataclasses.dataclass
class World:
    """Both hosts' view of vm1; a resume that succeeds moves it to the target."""

    source: DomainSummary | None = SPLIT_SOURCE
    target: DomainSummary | None = SPLIT_TARGET
    target_answers: list[bool] = dataclasses.field(default_factory=list)  # per versions() call
    resumes_fail: int = 0  # this many resume calls fail before one succeeds
    versions: HostVersions = FIXED
    resume_flags: list[MigrationFlags] = dataclasses.field(default_factory=list)
    # Set: every resume call blocks until it is set (a target QEMU that never answers).
    resumes_hang: threading.Event | None = None


class ScriptedHost:
    def __init__(self, world: World, uri: str) -> None:
        self.world, self.uri = world, uri

    def __enter__(self) -> ScriptedHost:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def _is_target(self) -> bool:
        return self.uri.endswith("b/system")

    def versions(self) -> HostVersions:
        if self.world.target_answers and not self.world.target_answers.pop(0):
            raise VirtError("cannot connect: no route to host")
        return self.world.versions

    def find(self, name: str) -> DomainSummary | None:
        return self.world.target if self._is_target() else self.world.source

    def job(self, name: str) -> JobProgress | None:
        return None

    def completed_job(self, name: str) -> JobProgress | None:
        return JobProgress(elapsed_seconds=3.0, downtime_ms=20) if self._is_target() else None

    def resume(self, name: str) -> None:
        raise AssertionError("a split half must never be resumed on its own")

    def migrate(self, name: str, **kwargs: Any) -> None:
        self.world.resume_flags.append(kwargs["flags"])
        if self.world.resumes_hang is not None:
            self.world.resumes_hang.wait()
            raise MigrationFailed("the target's QEMU was ended")
        if self.world.resumes_fail > 0:
            self.world.resumes_fail -= 1
            raise MigrationFailed("Unable to write to socket: Connection reset by peer")
        self.world.source, self.world.target = None, _domain(PowerState.RUNNING)


def _engine(world: World, sleeps: list[float], **kwargs: Any) -> Engine:
    return Engine(connect=lambda uri, timeout_seconds: ScriptedHost(world, uri),  # type: ignore[arg-type,return-value]
                  sleep=sleeps.append, **kwargs)


def _resume(engine: Engine, world: World, updates: list[Update]) -> Any:
    request = MigrationRequest(domain="vm1", source_uri="qemu+tcp://a/system",
                               target_uri="qemu+tcp://b/system", migration_address="10.0.0.2")
    plan = Plan(mode=Mode.LIVE, flags=MigrationFlags(live=True, post_copy=True),
                domain=_domain(PowerState.RUNNING))
    return engine._resume_post_copy(
        request, plan, MigrationFailed("job 'migration in' failed in post-copy phase"),
        source=ScriptedHost(world, request.source_uri),  # type: ignore[arg-type]
        target=ScriptedHost(world, request.target_uri),  # type: ignore[arg-type]
        on_update=updates.append, detach=None, started=0.0, last=None,
        post_copy_since=time.monotonic() - 5.0)


def test_a_split_vm_is_resumed_with_backoff_until_the_link_carries_it_to_the_target() -> None:
    world, sleeps, updates = World(resumes_fail=2), [], []  # type: ignore[var-annotated]
    result = _resume(_engine(world, sleeps), world, updates)
    assert result.mode is EffectiveMode.POST_COPY
    assert world.source is None and world.target == _domain(PowerState.RUNNING)
    assert len(world.resume_flags) == 3 and all(f.post_copy_resume for f in world.resume_flags)
    assert sleeps == [1.0, 2.0]
    waiting = [u.waiting_for_link for u in updates if u.waiting_for_link]
    assert waiting and all("paused on both hosts" in w for w in waiting)
    assert any("Connection reset by peer" in w for w in waiting), waiting


def test_a_resumed_post_copy_reports_how_long_the_vm_ran_on_the_target_fetching_pages() -> None:
    world, sleeps, updates = World(), [], []  # type: ignore[var-annotated]
    result = _resume(_engine(world, sleeps), world, updates)
    # The switch was 5 s before the resume began; the resume itself is instant here.
    assert result.degraded_seconds is not None and 5.0 <= result.degraded_seconds < 6.0


def test_a_resume_stuck_in_the_targets_prepare_is_handed_to_a_person_once_not_tried_again() -> None:
    release = threading.Event()
    world, sleeps, updates = World(resumes_hang=release), [], []  # type: ignore[var-annotated]
    limits = recovery.ResumeLimits(try_seconds=0.2)
    try:
        with pytest.raises(MigrationError) as raised:
            _resume(_engine(world, sleeps, resume_limits=limits), world, updates)
    finally:
        release.set()
    assert raised.value.reason is Reason.LOCATION_SPLIT
    assert raised.value.location is Location.SPLIT_POST_COPY
    message = str(raised.value)
    assert "no longer answers" in message and "never on both" in message, message
    assert "--postcopy-resume" not in message  # a resume cannot help a QEMU that is stuck
    assert len(world.resume_flags) == 1 and sleeps == []
    assert world.source == SPLIT_SOURCE  # nothing was resumed on its own


def test_a_target_that_does_not_answer_is_waited_for_without_trying_a_resume() -> None:
    world, sleeps, updates = World(target_answers=[False, False, True]), [], []  # type: ignore[var-annotated]
    _resume(_engine(world, sleeps), world, updates)
    assert len(world.resume_flags) == 1 and sleeps == [1.0, 2.0]
    assert any("does not answer" in (u.waiting_for_link or "") for u in updates)


def test_a_target_whose_libvirt_crashes_on_resume_is_left_to_a_person_untouched() -> None:
    world, sleeps, updates = World(versions=BROKEN), [], []  # type: ignore[var-annotated]
    with pytest.raises(MigrationError) as raised:
        _resume(_engine(world, sleeps), world, updates)
    assert raised.value.reason is Reason.LOCATION_SPLIT
    assert raised.value.location is Location.SPLIT_POST_COPY
    assert "libvirt 11.3.0" in str(raised.value) and "--postcopy-resume" in str(raised.value)
    assert world.resume_flags == [] and world.source == SPLIT_SOURCE


def test_a_host_gone_past_the_limit_is_left_to_a_person_with_the_advice() -> None:
    world, sleeps, updates = World(target_answers=[False] * 100), [], []  # type: ignore[var-annotated]
    limits = recovery.ResumeLimits(give_up_after_seconds=0.0)
    with pytest.raises(MigrationError, match="could not be resumed") as raised:
        _resume(_engine(world, sleeps, resume_limits=limits), world, updates)
    assert raised.value.reason is Reason.LOCATION_SPLIT and world.resume_flags == []


def test_an_operator_that_restarts_onto_a_split_vm_resumes_it_instead_of_calling_it_lost() -> None:
    world, sleeps, updates = World(resumes_fail=1), [], []  # type: ignore[var-annotated]
    request = MigrationRequest(domain="vm1", source_uri="qemu+tcp://a/system",
                               target_uri="qemu+tcp://b/system")
    result = _engine(world, sleeps).adopt(request, on_update=updates.append)
    assert result.mode is EffectiveMode.POST_COPY and world.source is None
    flags = world.resume_flags[-1]
    assert flags.post_copy_resume and flags.live and flags.post_copy and flags.peer_to_peer
