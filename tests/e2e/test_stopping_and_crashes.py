"""Stopping a migration (spec.abort, deletion), surviving kill -9, and concurrency limits."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable

from vmtestbed.testbed import Sandbox
from vmtestbed.hosts import Host
from vmtestbed.records import incoming_migrations
from vmmigration.core.errors import VirtError

from ..conftest import GuestWatch
from .conftest import Kubectl, Operator, forget, migrating, running_on, wait_until

# A guest that dirties memory faster than a 2 MiB/s link copies it: without
# escalation this migration never ends, so it is still running when we stop it.
ENDLESS = {"mode": "Live", "policy": {"bandwidthMiBPerSecond": 2, "progressTimeoutSeconds": 600,
                                      "onTimeout": "Abort", "hardTimeoutSeconds": 900}}


def test_spec_abort_cancels_a_migration_in_flight_and_the_vm_keeps_running_on_the_source(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    watch = boot(name, dirty_mib=48, dirty_rate_mib=48)
    vmm(name, domain=name, targetHypervisor="kvm-b", **ENDLESS)
    migrating(kubectl, name)
    kubectl.patch("vmmigration", name, {"spec": {"abort": True}})
    aborted = kubectl.wait_phase(name, "Aborted", timeout=60)
    assert aborted["currentHypervisor"] == "kvm-a"
    assert running_on(sandbox, name) == ["kvm-a"]
    assert "MigrationAborted" in kubectl.reasons(name)
    watch.assert_kept_running(after=watch.count())


def test_deleting_the_resource_aborts_its_migration_and_the_vm_stays_on_the_source(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    watch = boot(name, dirty_mib=48, dirty_rate_mib=48)
    vmm(name, domain=name, targetHypervisor="kvm-b", **ENDLESS)
    migrating(kubectl, name)
    kubectl("delete", "vmmigration", name, "-n", "default", "--wait=true", "--timeout=60s")
    assert not kubectl.exists("vmmigration", name)
    assert running_on(sandbox, name) == ["kvm-a"]
    with Host(sandbox.hosts[0].uri) as source:
        assert source.job(name) is None, "the migration job still runs"
    watch.assert_kept_running(after=watch.count())


def test_kill_9_of_the_operator_mid_migration_then_restart_gives_exactly_one_migration(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    # Slow enough (about a minute) to still be running when the successor takes over.
    watch = boot(name, dirty_mib=24, dirty_rate_mib=1)
    vmm(name, domain=name, targetHypervisor="kvm-b", mode="Live",
        policy={"bandwidthMiBPerSecond": 2})
    migrating(kubectl, name)
    operator.kill9()
    with Host(sandbox.hosts[0].uri) as source:
        assert source.job(name) is not None, "the job should outlive the operator (peer-to-peer)"
    operator.start()
    placed = kubectl.wait_phase(name, "Placed", timeout=150)
    assert running_on(sandbox, name) == ["kvm-b"]
    assert placed["attempts"] == 1
    assert f"adopting the running migration of {name}" in operator.tail(2000), (
        "the restarted operator did not take over the running job")
    reasons = kubectl.reasons(name)
    assert reasons.count("MigrationStarted") == 1, reasons
    assert incoming_migrations(sandbox.hosts, name) == 1, "the restart began a second migration"
    assert reasons.count("MigrationSucceeded") == 1, reasons
    watch.assert_kept_running(after=watch.count())


def test_four_vms_with_a_limit_of_two_never_migrate_more_than_two_at_once(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    names = [f"{name}-{i}" for i in range(4)]
    try:
        for each in names:
            boot(each, dirty_mib=8, dirty_rate_mib=1)
        peak = {"libvirt": 0, "status": 0}
        queued: set[str] = set()
        stop = threading.Event()

        def observe() -> None:
            # libvirt's own view: how many migration jobs run on the source now.
            with Host(sandbox.hosts[0].uri) as source:
                while not stop.is_set():
                    jobs = 0
                    for each in names:
                        with contextlib.suppress(VirtError):
                            jobs += source.job(each) is not None
                    peak["libvirt"] = max(peak["libvirt"], jobs)
                    stop.wait(0.2)

        watcher = threading.Thread(target=observe, daemon=True)
        watcher.start()
        for index, each in enumerate(names):
            vmm(each, domain=each, targetHypervisor="kvm-b" if index % 2 else "kvm-c",
                policy={"bandwidthMiBPerSecond": 8})

        def all_placed() -> bool:
            # One list call: a consistent snapshot of all four at one resourceVersion.
            listed = json.loads(kubectl("get", "vmmigrations", "-n", "default", "-o", "json").stdout)
            statuses = {item["metadata"]["name"]: item.get("status") or {} for item in listed["items"]}
            phases = {}
            for each in names:
                current = statuses.get(each, {})
                phases[each] = current.get("phase")
                for found in current.get("conditions") or ():
                    if found["type"] == "Queued" and found["status"] == "True":
                        queued.add(each)
            peak["status"] = max(peak["status"], list(phases.values()).count("Migrating"))
            return all(p == "Placed" for p in phases.values())

        wait_until(all_placed, timeout=240, what="all four VMs to be placed", interval=0.3)
        stop.set()
        watcher.join()
        assert peak["libvirt"] == 2, f"peak of concurrent libvirt jobs: {peak['libvirt']}"
        assert peak["status"] <= 2
        assert queued, "no VMMigration was ever marked Queued"
        for index, each in enumerate(names):
            assert running_on(sandbox, each) == ["kvm-b" if index % 2 else "kvm-c"]
    finally:
        for each in names:
            kubectl("delete", "vmmigration", each, "-n", "default", "--ignore-not-found",
                    "--wait=true", check=False)
            forget(sandbox, each)


def test_a_second_replica_pauses_and_only_the_first_acts(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str], operator: Operator) -> None:
    standby = Operator(kubeconfig=operator.kubeconfig, log_dir=operator.log_dir / "standby",
                       env={**operator.env, "VMMIGRATION_PEERING_PRIORITY": "10",
                            # the active replica holds the endpoints' ports
                            "VMMIGRATION_METRICS_PORT": "0", "VMMIGRATION_HEALTH_PORT": "0"})
    standby.start()
    try:
        # kopf starts every watch paused and resumes only when no peer outranks it.
        wait_until(lambda: "watch-stream for vmmigrations.v1alpha1.vmmigration.dev cluster-wide "
                   "(paused)" in standby.logs(), timeout=30, what="the standby to start paused")
        boot(name)
        vmm(name, domain=name, targetHypervisor="kvm-b")
        kubectl.wait_phase(name, "Placed", timeout=90)
        assert kubectl.reasons(name).count("MigrationStarted") == 1
        assert incoming_migrations(sandbox.hosts, name) == 1
        assert name not in standby.logs(), "the paused replica acted on the resource"
        assert "Resuming operations" not in standby.logs()
        assert running_on(sandbox, name) == ["kvm-b"]
    finally:
        standby.stop()
