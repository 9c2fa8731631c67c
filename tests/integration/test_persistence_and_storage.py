"""What stays defined where after a move, and disks the target cannot see."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vmmigration.core.model import LIBVIRT_DEFAULT_PERSISTENCE, MIB, Mode, Policy, PowerState, Storage
from vmmigration.core.location import Location
from vmtestbed.daemons import LOCAL_IMAGES, Daemon
from vmtestbed.testbed import LOCAL_POOL, SHARED_POOL, Sandbox
from vmmigration.service.engine import MigrationError, PrecheckFailed
from vmmigration.adapters.libvirt import engine
from vmtestbed.hosts import Host

from ..conftest import GuestWatch
from .helpers import request


def test_libvirt_default_leaves_the_vm_transient_on_the_target_and_defined_on_the_source(
    boot, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host  # type: ignore[no-untyped-def]
) -> None:
    vm = boot(name)
    engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE,
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
    engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE))
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

    engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE, storage=Storage.COPY_ALL))
    at_move = vm.count()

    assert target.summary(name).state is PowerState.RUNNING
    assert source.find(name) is None
    compared = subprocess.run(
        ["qemu-img", "compare", "-U", _local_file(source_host, name), _local_file(target_host, name)],
        capture_output=True, text=True,
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr
    vm.assert_kept_running(after=at_move)


def test_copy_incremental_copies_only_the_top_image_onto_the_shared_backing_file(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    base = sandbox.images / f"{name}-base.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(base), "64M"], check=True, capture_output=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x11 0 16M", str(base)], check=True, capture_output=True)
    top = _local_file(source_host, name)
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", top],
                   check=True, capture_output=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x22 8M 4M", top], check=True, capture_output=True)
    disk = f"{LOCAL_IMAGES}/{name}.qcow2"
    vm = GuestWatch(sandbox.boot(sandbox.guest_spec(name, disks=(Path(disk),)), host=source_host))
    try:
        engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE,
                                 storage=Storage.COPY_INCREMENTAL))
        at_move = vm.count()

        assert target.summary(name).state is PowerState.RUNNING
        copied = _local_file(target_host, name)
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", copied],
                              capture_output=True, text=True, check=True).stdout
        assert json.loads(info)["backing-filename"] == str(base), "the copy lost its backing file"
        compared = subprocess.run(["qemu-img", "compare", "-U", top, copied], capture_output=True, text=True)
        assert compared.returncode == 0, compared.stdout + compared.stderr
        vm.assert_kept_running(after=at_move)
    finally:
        base.unlink(missing_ok=True)


def test_copy_incremental_is_refused_when_the_target_cannot_see_the_backing_file(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    # The backing file sits in the source's private directory: the target has no way to it.
    base = source.create_volume(pool=LOCAL_POOL, name=f"{name}-base.qcow2", size_bytes=16 * MIB)
    top = _local_file(source_host, name)
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", _local_file(source_host, f"{name}-base"),
                    "-F", "qcow2", top], check=True, capture_output=True)
    # qemu-img wrote the path as the test sees it; point the chain at the host's own view.
    subprocess.run(["qemu-img", "rebase", "-u", "-b", base, "-F", "qcow2", top], check=True, capture_output=True)
    sandbox.define(sandbox.guest_spec(name, disks=(Path(f"{LOCAL_IMAGES}/{name}.qcow2"),)), host=source_host)
    source.start(name)
    before = target.domains()
    with pytest.raises(PrecheckFailed) as caught:
        engine().migrate(request(name, source_host, target_host, storage=Storage.COPY_INCREMENTAL))
    assert caught.value.reasons == ["BackingNotVisible"]
    assert target.domains() == before
    assert not Path(_local_file(target_host, name)).exists(), "a refused migration created a disk"


def test_a_disk_on_shared_storage_moves_live_when_its_sharing_is_vouched_for(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    disk = source.create_volume(pool=SHARED_POOL, name=f"{name}.qcow2", size_bytes=16 * MIB)
    vm = GuestWatch(sandbox.boot(sandbox.guest_spec(name, disks=(Path(disk),)), host=source_host))
    try:
        # libvirt cannot tell that a plain directory is shared, and refuses to
        # risk the data: the VM must stay where it was, running.
        with pytest.raises(MigrationError, match="say so with allow_unsafe") as caught:
            engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE))
        assert caught.value.location is Location.SOURCE
        assert source.summary(name).state is PowerState.RUNNING
        assert target.find(name) is None

        engine().migrate(request(name, source_host, target_host, mode=Mode.LIVE,
                                 policy=Policy(allow_unsafe=True)))
        at_move = vm.count()
        assert target.summary(name).state is PowerState.RUNNING
        assert source.find(name) is None
        vm.assert_kept_running(after=at_move)
    finally:
        Path(disk).unlink(missing_ok=True)
