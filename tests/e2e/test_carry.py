"""A VMMigration that carries a shut-off VM's disks, through the operator, and a kill -9 mid-copy."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmmigration.core.carry import MARKER_SUFFIX
from vmtestbed.daemons import Daemon
from vmtestbed.hosts import Host
from vmtestbed.testbed import LOCAL_POOL, Sandbox

from .conftest import Kubectl, Operator, wait_until, where


def _images(daemon: Daemon) -> Path:
    return daemon.root / "lib" / "images"


def _pool_names(daemon: Daemon) -> set[str]:
    with Host(daemon.uri) as host:
        pool = host._conn.storagePoolLookupByName(LOCAL_POOL)
        pool.refresh(0)
        return set(pool.listVolumes())


@pytest.fixture
def local_vm(sandbox: Sandbox, name: str) -> Iterator[Path]:
    """A shut-off VM on kvm-a whose 512 MiB raw disk (48 MiB of data) only kvm-a can see."""
    source = sandbox.hosts[0]
    image = _images(source) / f"{name}.img"
    subprocess.run(["truncate", "-s", "512M", str(image)], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x61 0 32M", "-c", "write -P 0x62 300M 16M",
                    str(image)], check=True, capture_output=True)
    sandbox.define(sandbox.guest_spec(name, disks=(Path(f"/var/lib/libvirt/images/{name}.img"),),
                                      disk_format="raw"), host=source)
    yield image
    for daemon in sandbox.hosts:
        for left in _images(daemon).glob(f"{name}.*"):
            left.unlink()


def _carrying(kubectl: Kubectl, name: str) -> dict[str, Any]:
    def copying() -> dict[str, Any] | None:
        status = kubectl.status(name)
        disks = (status.get("progress") or {}).get("disks") or []
        return status if disks and disks[0].get("copiedBytes") else None
    return wait_until(copying, timeout=60, what=f"{name} to be copying its disk")


def test_an_offline_vmmigration_carries_the_disk_shows_it_and_a_kill_9_mid_copy_ends_with_one_good_copy(
        kubectl: Kubectl, sandbox: Sandbox, name: str, local_vm: Path, vmm: Callable[..., str],
        operator: Operator) -> None:
    source, target = sandbox.hosts[0], sandbox.hosts[1]
    original = local_vm.read_bytes()
    # 48 MiB at 8 MiB/s: about 6 s of copy, time enough to kill the operator in the middle.
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Offline", storage="CopyAll",
        policy={"bandwidthMiBPerSecond": 8})

    status = _carrying(kubectl, name)
    (disk,) = status["progress"]["disks"]
    assert disk["source"] == disk["target"] == f"/var/lib/libvirt/images/{name}.img"
    assert disk["totalBytes"] == 48 * 1024 * 1024 and disk["state"] == "Copying"
    (planned,) = status["plan"]["volumes"]
    assert planned["bytes"] == 48 * 1024 * 1024 and planned["pool"] == LOCAL_POOL

    operator.kill9()
    left = _pool_names(target)
    assert {f"{name}.img", f"{name}.img{MARKER_SUFFIX}"} <= left, (
        f"the cut copy should be on kvm-b, marked as unfinished: {sorted(left)}")
    operator.start()

    placed = kubectl.wait_phase(name, "Placed", timeout=150)
    assert where(sandbox, name) == {"kvm-b": "ShutOff"}, "libvirt does not hold the VM on kvm-b alone"
    assert placed["currentHypervisor"] == "kvm-b"
    assert (_images(target) / f"{name}.img").read_bytes() == original, "the copy is not the source"
    assert local_vm.read_bytes() == original, "the source volume changed or went away"
    assert not any(n.endswith(MARKER_SUFFIX) for n in _pool_names(target)), "a marker was left"
    assert "removing the unfinished copy" in operator.tail(4000), (
        "the restarted operator did not remove the cut copy before copying again")
    assert "MigrationSucceeded" in kubectl.reasons(name)
