"""Mode choice and the libvirt behaviours each request needs."""

import pytest

from vmmigration.core.model import (
    LIBVIRT_DEFAULT_PERSISTENCE,
    Mode,
    OnTimeout,
    PauseReason,
    Persistence,
    Policy,
    PowerState,
    Storage,
)
from vmmigration.core.planner import MigrationFlags, PlanError, choose_mode, migration_flags

from .conftest import domain


@pytest.mark.parametrize(
    ("requested", "state", "chosen"),
    [
        pytest.param(Mode.AUTO, PowerState.RUNNING, Mode.LIVE, id="auto-running-is-live"),
        pytest.param(Mode.AUTO, PowerState.PAUSED, Mode.LIVE, id="auto-paused-is-live"),
        pytest.param(Mode.AUTO, PowerState.SHUT_OFF, Mode.OFFLINE, id="auto-shut-off-is-offline"),
        pytest.param(Mode.NON_LIVE, PowerState.RUNNING, Mode.NON_LIVE, id="non-live-running"),
        pytest.param(Mode.OFFLINE, PowerState.SHUT_OFF, Mode.OFFLINE, id="offline-shut-off"),
    ],
)
def test_choose_mode_resolves_auto_by_power_state(requested: Mode, state: PowerState, chosen: Mode) -> None:
    assert choose_mode(requested=requested, domain=domain(state=state)) is chosen


@pytest.mark.parametrize(
    ("requested", "state", "words"),
    [
        pytest.param(Mode.OFFLINE, PowerState.RUNNING, "is running; Offline", id="offline-on-running"),
        pytest.param(Mode.LIVE, PowerState.SHUT_OFF, "is shut off; Live", id="live-on-shut-off"),
        pytest.param(Mode.NON_LIVE, PowerState.SHUT_OFF, "is shut off; NonLive", id="non-live-on-shut-off"),
        pytest.param(Mode.AUTO, PowerState.OTHER, "neither running", id="crashed"),
    ],
)
def test_choose_mode_refuses_a_mode_that_does_not_fit(requested: Mode, state: PowerState, words: str) -> None:
    with pytest.raises(PlanError, match=words):
        choose_mode(requested=requested, domain=domain(state=state))


def flags(mode: Mode, **kwargs: object) -> MigrationFlags:
    options: dict[str, object] = {"policy": Policy(), "storage": Storage.SHARED, "persistence": Persistence()}
    options.update(kwargs)
    subject = options.pop("domain", domain())
    return migration_flags(mode=mode, domain=subject, **options)  # type: ignore[arg-type]


def test_placement_moves_persist_on_the_target_and_undefine_the_source_by_default() -> None:
    chosen = flags(Mode.LIVE)
    assert (chosen.live, chosen.persist_dest, chosen.undefine_source, chosen.peer_to_peer) == (
        True, True, True, True)


def test_libvirt_default_persistence_leaves_the_vm_transient_and_the_source_defined() -> None:
    chosen = flags(Mode.LIVE, persistence=LIBVIRT_DEFAULT_PERSISTENCE)
    assert (chosen.persist_dest, chosen.undefine_source) == (False, False)


def test_non_live_is_not_live_and_never_post_copy() -> None:
    chosen = flags(Mode.NON_LIVE, policy=Policy(on_timeout=OnTimeout.POST_COPY))
    assert (chosen.live, chosen.post_copy) == (False, False)


def test_post_copy_is_allowed_up_front_when_it_is_the_escalation() -> None:
    assert flags(Mode.LIVE, policy=Policy(on_timeout=OnTimeout.POST_COPY)).post_copy


def test_a_user_paused_domain_stays_paused_on_the_target() -> None:
    paused = domain(state=PowerState.PAUSED, reason=PauseReason.USER)
    assert flags(Mode.LIVE, domain=paused).paused
    assert not flags(Mode.LIVE).paused


@pytest.mark.parametrize(
    ("storage", "copy_all", "copy_inc"),
    [
        pytest.param(Storage.SHARED, False, False, id="shared"),
        pytest.param(Storage.COPY_ALL, True, False, id="copy-all"),
        pytest.param(Storage.COPY_INCREMENTAL, False, True, id="copy-incremental"),
    ],
)
def test_storage_mode_selects_the_disk_copy(storage: Storage, copy_all: bool, copy_inc: bool) -> None:
    chosen = flags(Mode.LIVE, storage=storage)
    assert (chosen.copy_all_storage, chosen.copy_incremental_storage) == (copy_all, copy_inc)


@pytest.mark.parametrize("storage", [Storage.COPY_ALL, Storage.COPY_INCREMENTAL])
def test_an_offline_move_that_copies_asks_libvirt_for_no_disk_copy_since_the_operator_carries_them(
        storage: Storage) -> None:
    chosen = flags(Mode.OFFLINE, domain=domain(state=PowerState.SHUT_OFF), storage=storage)
    assert chosen.offline
    assert (chosen.copy_all_storage, chosen.copy_incremental_storage) == (False, False)


def test_offline_must_persist() -> None:
    with pytest.raises(PlanError, match="must persist"):
        flags(Mode.OFFLINE, domain=domain(state=PowerState.SHUT_OFF),
              persistence=LIBVIRT_DEFAULT_PERSISTENCE)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        pytest.param("bandwidth_mib_per_s", -1, "must not be negative", id="negative-bandwidth"),
        pytest.param("progress_timeout_seconds", -5, "must not be negative", id="negative-timeout"),
        pytest.param("parallel_connections", 0, "between 1 and 64", id="zero-connections"),
        pytest.param("parallel_connections", 65, "between 1 and 64", id="too-many-connections"),
    ],
)
def test_policy_rejects_nonsense(field: str, value: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Policy(**{field: value})  # type: ignore[arg-type]
