"""What stays defined where after a move, and disks the target cannot see."""

from __future__ import annotations

import subprocess

from vmmigration.model import LIBVIRT_DEFAULT_PERSISTENCE, MIB, Mode, PowerState, Storage
from vmmigration.sandbox.daemons import Daemon
from vmmigration.sandbox.testbed import LOCAL_POOL, Sandbox
from vmmigration.virt.engine import Engine
from vmmigration.virt.libvirt_host import Host

from .conftest import GuestWatch
from .helpers import request


def test_libvirt_default_leaves_the_vm_transient_on_the_target_and_defined_on_the_source(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name)
    Engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE,
                             persistence=LIBVIRT_DEFAULT_PERSISTENCE))
    at_move = vm.count()

    moved = target.summary(name)
    assert (moved.state, moved.persistent) == (PowerState.RUNNING, False)
    left = source.summary(name)
    assert (left.state, left.persistent) == (PowerState.SHUT_OFF, True), "two hosts now claim the VM"
    vm.assert_kept_running(after=at_move)


def test_persist_and_undefine_leaves_exactly_one_host_owning_the_vm(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name)
    Engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE))
    at_move = vm.count()

    moved = target.summary(name)
    assert (moved.state, moved.persistent) == (PowerState.RUNNING, True)
    assert source.find(name) is None
    vm.assert_kept_running(after=at_move)


def _local_file(daemon: Daemon, name: str) -> str:
    # The path the host sees as /var/lib/libvirt/images/… lives in its private directory.
    return str(daemon.root / "lib" / "images" / f"{name}.qcow2")


def test_copy_all_moves_a_non_shared_disk_with_its_data(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    disk = source.create_volume(pool=LOCAL_POOL, name=f"{name}.qcow2", size_bytes=64 * MIB)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 4M", "-c", "write -P 0xa5 32M 4M",
                    _local_file(source_host, name)], check=True, capture_output=True)
    vm = GuestWatch(sandbox.boot(sandbox.guest_spec(name, disks=(disk,)), host=source_host))

    Engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE, storage=Storage.COPY_ALL))
    at_move = vm.count()

    assert target.summary(name).state is PowerState.RUNNING
    assert source.find(name) is None
    compared = subprocess.run(
        ["qemu-img", "compare", "-U", _local_file(source_host, name), _local_file(target_host, name)],
        capture_output=True, text=True,
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr
    vm.assert_kept_running(after=at_move)
