"""Live, non-live and offline migration between two real libvirt hosts."""

from __future__ import annotations

from vmmigration.core.model import EffectiveMode, Mode, PowerState
from vmtestbed.daemons import Daemon
from vmtestbed.testbed import Sandbox
from vmmigration.service.engine import Update
from vmmigration.adapters.libvirt import engine
from vmtestbed.hosts import Host

from .helpers import request


def test_live_migration_moves_a_running_guest_whose_heartbeat_goes_on(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, dirty_mib=32, dirty_rate_mib=4)
    updates: list[Update] = []
    result = engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE),
                              on_update=updates.append)
    at_move = vm.count()

    assert result.mode is EffectiveMode.LIVE
    assert source.find(name) is None, "the source still defines the VM (undefine is the default)"
    moved = target.summary(name)
    assert (moved.state, moved.persistent) == (PowerState.RUNNING, True)
    assert result.downtime_ms is not None and 0 <= result.downtime_ms < 5000
    assert result.bytes_transferred > 0
    assert any(u.progress is not None and u.progress.data_total > 0 for u in updates), "no live progress"
    vm.assert_kept_running(after=at_move)


def test_non_live_migration_pauses_for_the_copy_and_runs_on_the_target(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name, dirty_mib=32, dirty_rate_mib=4)
    result = engine().migrate(request(name, source_host, target_host, mode=Mode.NON_LIVE))
    at_move = vm.count()

    assert result.mode is EffectiveMode.NON_LIVE
    assert source.find(name) is None
    assert target.summary(name).state is PowerState.RUNNING, "non-live must resume on the target"
    vm.assert_kept_running(after=at_move)


def test_offline_migration_moves_only_the_definition_of_a_shut_off_domain(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    sandbox.define(sandbox.guest_spec(name), host=source_host)
    result = engine().migrate(request(name, source_host, target_host, mode=Mode.OFFLINE))

    assert result.mode is EffectiveMode.OFFLINE
    assert source.find(name) is None
    moved = target.summary(name)
    assert (moved.state, moved.persistent) == (PowerState.SHUT_OFF, True)


def test_auto_mode_moves_a_shut_off_domain_offline(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, target: Host
) -> None:
    sandbox.define(sandbox.guest_spec(name), host=source_host)
    result = engine().migrate(request(name, source_host, target_host))
    assert result.mode is EffectiveMode.OFFLINE
    assert target.summary(name).state is PowerState.SHUT_OFF
