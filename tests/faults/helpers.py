"""What every fault scenario asserts: nothing was lost, and the status tells the truth."""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable
from typing import Any

from vmtestbed.controlplane import ControlPlane
from vmtestbed.testbed import Sandbox
from vmtestbed.hosts import Host
from vmtestbed.records import incoming_migrations
from vmmigration.core.errors import VirtError

from ..conftest import GuestWatch
from ..e2e.conftest import Kubectl, migrating, running_on, wait_until

# Slow enough (several seconds) that a fault lands in the middle of the copy,
# and convergent, so a retry succeeds once the fault is gone.
STEADY = {"mode": "Live", "policy": {"bandwidthMiBPerSecond": 4}}


def steady_move(*, kubectl: Kubectl, boot: Callable[..., GuestWatch], vmm: Callable[..., str],
                name: str) -> GuestWatch:
    """A running guest on kvm-a, told to move to kvm-b under STEADY, and seen Migrating:
    the moment the scenarios strike."""
    watch = boot(name, dirty_mib=24, dirty_rate_mib=1)
    vmm(name, domain=name, targetHypervisor="kvm-b", **STEADY)
    migrating(kubectl, name)
    return watch


def blocked(kubectl: Kubectl, name: str, *, timeout: float = 30) -> dict[str, Any]:
    """The VMMigration's Blocked condition, once it is True."""
    found: dict[str, Any] = wait_until(
        lambda: kubectl.condition(name, "Blocked").get("status") == "True"
        and kubectl.condition(name, "Blocked"), timeout=timeout, what=f"{name} Blocked")
    return found


def assert_failed_on_source(status: dict[str, Any]) -> None:
    """A failure the status tells truthfully: the VM still on kvm-a, why, and when it retries."""
    assert status["currentHypervisor"] == "kvm-a", status
    assert status["lastFailure"]["message"], "a failure must say why"
    assert status.get("nextAttemptTime"), "a failure must say when it is retried"


def domain_state(sandbox: Sandbox, host: int, domain: str) -> str | None:
    with contextlib.suppress(VirtError), Host(sandbox.hosts[host].uri) as conn:
        found = conn.find(domain)
        return found.state.value if found else None
    return None


def assert_nothing_lost(*, kubectl: Kubectl, sandbox: Sandbox, watch: GuestWatch, name: str,
                        placed_on: str, timeout: float = 150.0) -> dict[str, Any]:
    """The resource ends Placed on ``placed_on``, and libvirt agrees: the VM runs there and
    nowhere else, from its first boot, with its heartbeat going and its memory intact."""
    placed = kubectl.wait_phase(name, "Placed", timeout=timeout)
    assert placed["currentHypervisor"] == placed_on, placed
    assert not placed.get("attempt"), "an attempt is still recorded after Placed"
    ready = next(c for c in placed["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    assert running_on(sandbox, name) == [placed_on]
    watch.assert_kept_running(after=watch.count())
    return placed


def started(kubectl: Kubectl, name: str) -> int:
    return kubectl.reasons(name).count("MigrationStarted")


def pause(seconds: float) -> None:
    time.sleep(seconds)


# When the API server was restarted (start, end in epoch seconds). Right after a
# restart kube-apiserver answers before its RBAC caches are filled, and refuses
# requests it will allow a moment later; the RBAC check excuses only that window.
API_OUTAGES: list[tuple[float, float]] = []
RBAC_WARMUP_SECONDS = 30.0


def restart_api(control_plane: ControlPlane, *, down_seconds: float) -> None:
    began = time.time()
    control_plane.restart(kill=True, down_seconds=down_seconds)
    API_OUTAGES.append((began, time.time()))


def refused_outside_outages(log: str) -> list[str]:
    """The operator's RBAC refusals, except in the moments after an API server restart."""
    refused = []
    for line in log.splitlines():
        if "403" not in line or "Forbidden" not in line:
            continue
        try:
            when = datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            refused.append(line)
            continue
        if not any(began <= when <= ended + RBAC_WARMUP_SECONDS for began, ended in API_OUTAGES):
            refused.append(line)
    return refused


def libvirt_migrations(sandbox: Sandbox, domain: str) -> int:
    """Migrations of ``domain`` libvirt began, from each host's own QEMU log."""
    return incoming_migrations(sandbox.hosts, domain)
