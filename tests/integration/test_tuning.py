"""Every tuning option of the policy reaches libvirt and QEMU, which accept it and move the VM."""

from __future__ import annotations

import pytest

from vmmigration.core.model import EffectiveMode, Mode, Policy, PowerState
from vmmigration.adapters.libvirt import engine
from vmtestbed.daemons import Daemon

from vmtestbed.hosts import Host

from .helpers import request


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(Policy(auto_converge=True, max_downtime_ms=100, bandwidth_mib_per_s=64),
                     id="auto-converge-max-downtime-bandwidth"),
        pytest.param(Policy(compressed=True), id="compressed-xbzrle"),
        pytest.param(Policy(parallel_connections=2, compressed=True), id="parallel-compressed-zlib"),
        pytest.param(Policy(peer_to_peer=False), id="managed-direct-not-p2p"),
    ],
)
def test_a_tuned_live_migration_moves_the_vm(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host,  # type: ignore[no-untyped-def]
    policy: Policy,
) -> None:
    vm = boot(name, dirty_mib=16, dirty_rate_mib=4)
    result = engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE, policy=policy))
    at_move = vm.count()

    assert result.mode is EffectiveMode.LIVE
    assert target.summary(name).state is PowerState.RUNNING
    assert source.find(name) is None
    vm.assert_kept_running(after=at_move)
