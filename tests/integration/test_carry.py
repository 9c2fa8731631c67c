"""An Offline move that carries its disks: real volumes streamed between real libvirt hosts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vmmigration.adapters.libvirt import engine
from vmmigration.core.carry import MARKER_SUFFIX
from vmmigration.core.location import Location
from vmmigration.core.model import MIB, Mode, Policy, PowerState, Storage, Update, VolumeOptions
from vmmigration.service.engine import MigrationCancelled, MigrationError, PrecheckFailed
from vmtestbed import guest
from vmtestbed.daemons import Daemon
from vmtestbed.hosts import Host
from vmtestbed.testbed import LOCAL_POOL, Sandbox

from .helpers import request

# The guest's local pool is /var/lib/libvirt/images inside each host's own mount namespace.
POOL_DIR = "/var/lib/libvirt/images"


def _file(daemon: Daemon, volume: str) -> Path:
    """Where the host's private images directory is, seen from the test."""
    return daemon.root / "lib" / "images" / volume


def _qcow2_with_marker(sandbox: Sandbox, daemon: Daemon, name: str, marker: str) -> Path:
    """A 256 MiB qcow2 in the host's local pool whose first sector holds ``marker``, plus
    4 MiB of data further in: the data a guest must see after the move."""
    image = _file(daemon, f"{name}.qcow2")
    text = sandbox.root / f"{name}.marker"
    text.write_bytes(marker.encode().ljust(512, b"\0"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "256M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {text} 0 512",
                    "-c", "write -P 0x5a 100M 4M", str(image)], check=True, capture_output=True)
    return image


def _pool_names(host: Host) -> set[str]:
    pool = host._conn.storagePoolLookupByName(LOCAL_POOL)
    pool.refresh(0)
    return set(pool.listVolumes())


def _boot_and_read_marker(sandbox: Sandbox, host: Host, name: str, *, boots_before: int) -> str:
    """Start the shut-off domain, wait for it to print its disk's marker, shut it off again."""
    log = sandbox.serial_log(name)
    host.start(name)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(guest.disk_markers(log)) <= boots_before:
        time.sleep(0.3)
    host.destroy(name)
    markers = guest.disk_markers(log)
    assert len(markers) > boots_before, f"the guest printed no disk marker:\n{log.read_text()[-1500:]}"
    return markers[-1]


@pytest.fixture(autouse=True)
def _no_volumes_left(sandbox: Sandbox, name: str):  # type: ignore[no-untyped-def]
    yield
    for daemon in sandbox.hosts:
        for left in (daemon.root / "lib" / "images").glob(f"{name}.*"):
            left.unlink()


def _define_with_disk(sandbox: Sandbox, daemon: Daemon, name: str, *, fmt: str = "qcow2") -> None:
    volume = f"{name}.qcow2" if fmt == "qcow2" else f"{name}.img"
    sandbox.define(sandbox.guest_spec(name, disks=(Path(f"{POOL_DIR}/{volume}"),), disk_format=fmt),
                   host=daemon)
    with Host(daemon.uri) as host:
        host._conn.storagePoolLookupByName(LOCAL_POOL).refresh(0)


def test_a_shut_off_vm_on_local_storage_moves_offline_with_its_qcow2_disk_and_boots_on_the_target_with_its_data(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    _qcow2_with_marker(sandbox, source_host, name, f"VMM-{name}")
    _define_with_disk(sandbox, source_host, name)
    assert _boot_and_read_marker(sandbox, source, name, boots_before=0) == f"VMM-{name}"
    updates: list[Update] = []

    result = engine().migrate(request(name, source_host, target_host, mode=Mode.OFFLINE,
                                      storage=Storage.COPY_ALL), on_update=updates.append)

    moved = target.summary(name)
    assert (moved.state, moved.persistent) == (PowerState.SHUT_OFF, True)
    assert source.find(name) is None
    compared = subprocess.run(["qemu-img", "compare", "-q", str(_file(source_host, f"{name}.qcow2")),
                               str(_file(target_host, f"{name}.qcow2"))])
    assert compared.returncode == 0, "the copy differs from the source image"
    assert _file(source_host, f"{name}.qcow2").exists(), "the source volume was deleted unasked"
    assert not any(n.endswith(MARKER_SUFFIX) for n in _pool_names(target)), "a marker was left behind"
    assert updates and updates[-1].disks and updates[-1].disks[0].state == "Verified"
    assert 4 * MIB <= result.bytes_transferred < 16 * MIB, result
    assert _boot_and_read_marker(sandbox, target, name, boots_before=1) == f"VMM-{name}"


def test_a_sparse_2gib_raw_image_with_20mib_of_data_streams_about_20mib_and_the_source_is_deleted_when_asked(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    image = _file(source_host, f"{name}.img")
    subprocess.run(["truncate", "-s", "2G", str(image)], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 4M", "-c", "write -P 0x22 1G 8M",
                    "-c", "write -P 0x33 2040M 8M", str(image)], check=True, capture_output=True)
    _define_with_disk(sandbox, source_host, name, fmt="raw")
    with image.open("rb") as head:
        source_bytes = head.read(4 * MIB)

    result = engine().migrate(request(name, source_host, target_host, mode=Mode.OFFLINE,
                                      storage=Storage.COPY_ALL,
                                      volumes=VolumeOptions(delete_from_source=True)))

    copy = _file(target_host, f"{name}.img")
    assert copy.stat().st_size == 2 * 1024 * MIB
    assert copy.stat().st_blocks * 512 <= 24 * MIB, "the copy is not sparse"
    assert 20 * MIB <= result.bytes_transferred <= 21 * MIB, (
        f"{result.bytes_transferred / MIB:.1f} MiB sent for 20 MiB of data")
    with copy.open("rb") as head:
        assert head.read(4 * MIB) == source_bytes
    assert not image.exists(), "deleteFromSource did not delete the verified source volume"
    assert target.summary(name).persistent and source.find(name) is None


def _copy_slowly(name: str, source_host: Daemon, target_host: Daemon, **kwargs: object):  # type: ignore[no-untyped-def]
    # 64 MiB of data at 16 MiB/s: about 4 s of copy to cut into.
    return request(name, source_host, target_host, mode=Mode.OFFLINE, storage=Storage.COPY_ALL,
                   policy=Policy(bandwidth_mib_per_s=16), **kwargs)


def _raw_with_data(daemon: Daemon, name: str) -> Path:
    image = _file(daemon, f"{name}.img")
    subprocess.run(["truncate", "-s", "256M", str(image)], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x44 0 64M", str(image)], check=True,
                   capture_output=True)
    return image


def _when_copied(updates: list[Update], fraction: float, action) -> threading.Thread:  # type: ignore[no-untyped-def]
    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if updates and updates[-1].percent >= fraction * 100:
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_copy_cut_by_the_target_libvirtd_dying_leaves_the_vm_on_the_source_and_the_retry_cleans_up_and_completes(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host
) -> None:
    image = _raw_with_data(source_host, name)
    _define_with_disk(sandbox, source_host, name, fmt="raw")
    before = image.read_bytes()
    updates: list[Update] = []
    cutter = _when_copied(updates, 0.3, lambda: sandbox.kill_daemon(target_host))

    with pytest.raises(MigrationError) as failed:
        engine().migrate(_copy_slowly(name, source_host, target_host), on_update=updates.append)
    cutter.join()
    assert failed.value.location is Location.SOURCE
    summary = source.summary(name)
    assert (summary.state, summary.persistent) == (PowerState.SHUT_OFF, True)
    assert image.read_bytes() == before, "the source image changed"

    sandbox.start_daemon(target_host)
    with Host(target_host.uri) as target:
        # The dead host could not be cleaned: what is left is marked as an unfinished copy.
        left = _pool_names(target)
        assert f"{name}.img" not in left or f"{name}.img{MARKER_SUFFIX}" in left
        engine().migrate(_copy_slowly(name, source_host, target_host))
        assert target.summary(name).state is PowerState.SHUT_OFF
        assert not any(n.endswith(MARKER_SUFFIX) for n in _pool_names(target))
    assert _file(target_host, f"{name}.img").read_bytes() == before
    assert image.exists()


def test_an_abort_mid_copy_stops_the_stream_and_leaves_nothing_on_the_target(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    _raw_with_data(source_host, name)
    _define_with_disk(sandbox, source_host, name, fmt="raw")
    updates: list[Update] = []
    cancel = threading.Event()
    _when_copied(updates, 0.2, cancel.set)

    with pytest.raises(MigrationCancelled) as aborted:
        engine().migrate(_copy_slowly(name, source_host, target_host), on_update=updates.append,
                         cancel=cancel)

    assert aborted.value.location is Location.SOURCE
    assert source.summary(name).state is PowerState.SHUT_OFF and target.find(name) is None
    assert not {f"{name}.img", f"{name}.img{MARKER_SUFFIX}"} & _pool_names(target)
    assert 0 < updates[-1].percent < 100


def test_a_volume_of_the_same_name_on_the_target_is_refused_and_never_overwritten(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    _raw_with_data(source_host, name)
    _define_with_disk(sandbox, source_host, name, fmt="raw")
    theirs = _file(target_host, f"{name}.img")
    theirs.write_bytes(b"someone else's data")

    with pytest.raises(PrecheckFailed) as refused:
        engine().migrate(request(name, source_host, target_host, mode=Mode.OFFLINE,
                                 storage=Storage.COPY_ALL))

    assert refused.value.reasons == ["VolumeExists"], refused.value
    assert theirs.read_bytes() == b"someone else's data"
    assert source.summary(name).state is PowerState.SHUT_OFF and target.find(name) is None
    theirs.unlink()


def test_a_target_pool_that_does_not_exist_is_refused_before_anything_is_made(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    _raw_with_data(source_host, name)
    _define_with_disk(sandbox, source_host, name, fmt="raw")

    with pytest.raises(PrecheckFailed) as refused:
        engine().check(request(name, source_host, target_host, mode=Mode.OFFLINE,
                               storage=Storage.COPY_ALL, volumes=VolumeOptions(target_pool="nowhere")))

    assert refused.value.reasons == ["NoTargetPool"]
    assert "spec.volumes.targetPool" in str(refused.value)
    assert not {f"{name}.img", f"{name}.img{MARKER_SUFFIX}"} & _pool_names(target)


def test_the_cli_carries_the_disks_with_a_progress_line_and_deletes_the_source_volume_when_asked(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    image = _raw_with_data(source_host, name)
    _define_with_disk(sandbox, source_host, name, fmt="raw")
    done = subprocess.run(
        [sys.executable, "-m", "vmmigration.cli", "migrate", name, "--from", source_host.uri,
         "--to", target_host.uri, "--storage", "copy-all", "--delete-source-volumes"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{name} moved" in done.stdout
    assert "disk 1/1" in done.stdout and "64.0 MiB" in done.stdout, done.stdout
    assert target.summary(name).state is PowerState.SHUT_OFF and source.find(name) is None
    assert not image.exists() and _file(target_host, f"{name}.img").exists()
