"""`vmmigration drain`, `undrain`, `pool` and `get pools` against a fake cluster, as a shell runs them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from vmmigration.adapters.kube.api import ApiError, NotFound
from vmmigration.cli import drain, kubectl_plugin
from vmmigration.cli.cluster import Where
from vmmigration.cli.common import EXIT_ABORTED
from vmmigration.core.memory import timestamp

from .test_cli_api import NOW, FakeCluster, merged, run
from .test_drains import DRAINING, pool, vmm


class DrainCluster(FakeCluster):
    """Adds what the drain verbs use: Hypervisor patches, HypervisorPools, and an operator that drains."""

    def __init__(self) -> None:
        super().__init__()
        for h in self.hvs.values():
            h["metadata"]["generation"] = 1
            h["status"]["observedGeneration"] = 1
        self.pools = {"lab": pool()}
        # What the operator writes into kvm-a's status next, one per read after a patch.
        self.hv_statuses: list[dict[str, Any]] = []
        self.patched = False
        # The states of a VMMigration, one per read (the last one stays).
        self.vmm_objects: dict[str, list[dict[str, Any]]] = {}
        # What each list of the drain's VMMigrations returns, one per list.
        self.drain_made: list[list[dict[str, Any]]] = []
        self.vmm_refusal: ApiError | None = None

    def hypervisor(self, name: str) -> dict[str, Any]:
        obj = super().hypervisor(name)
        if self.patched and self.hv_statuses and name == "kvm-a":
            obj["status"] = {"observedGeneration": obj["metadata"]["generation"], **self.hv_statuses.pop(0)}
        return copy.deepcopy(obj)

    def patch_hypervisor(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch hv", patch))
        self.patched = True
        obj = self.hvs[name]
        obj["spec"] = merged(obj["spec"], patch["spec"])
        obj["metadata"]["generation"] += 1
        return copy.deepcopy(obj)

    def hypervisorpools(self) -> list[dict[str, Any]]:
        self._refuse()
        return [copy.deepcopy(p) for p in self.pools.values()]

    def hypervisorpool(self, name: str) -> dict[str, Any]:
        self._refuse()
        if name not in self.pools:
            raise NotFound(f'hypervisorpools.vmmigration.dev "{name}" not found', status=404)
        return copy.deepcopy(self.pools[name])

    def vmmigration(self, namespace: str, name: str) -> dict[str, Any]:
        if self.vmm_refusal is not None:
            raise self.vmm_refusal
        key = f"{namespace}/{name}"
        if key in self.vmm_objects:
            states = self.vmm_objects[key]
            return copy.deepcopy(states.pop(0) if len(states) > 1 else states[0])
        return super().vmmigration(namespace, name)

    def vmmigrations(self, namespace: str | None, *, selector: str | None = None) -> list[dict[str, Any]]:
        if selector is not None:
            if self.vmm_refusal is not None:
                raise self.vmm_refusal
            return self.drain_made.pop(0) if self.drain_made else []
        return super().vmmigrations(namespace)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[DrainCluster]:
    fake = DrainCluster()
    monkeypatch.setattr(Where, "connect", lambda self: (fake, self.namespace or fake.namespace))
    monkeypatch.setattr(drain, "POLL_SECONDS", 0.0)
    monkeypatch.setattr("time.time", lambda: NOW)
    yield fake


def draining(**changes: Any) -> dict[str, Any]:
    return {"conditions": [{"type": "Drained", "status": "False", "reason": "Draining", "message": ""}],
            "drain": {**DRAINING, "blocked": 0, "blockers": [], **changes}}


DRAINED = {"conditions": [{"type": "Drained", "status": "True", "reason": "Drained",
                           "message": "no domain left on kvm-a"}],
           "drain": {**DRAINING, "state": "Drained", "moved": 5, "moving": 0, "blocked": 0, "blockers": [],
                     "completionTime": timestamp(NOW - 10)}}


# ---- drain -------------------------------------------------------------------------------


def test_drain_sets_maintenance_and_follows_the_drain_until_the_host_is_empty(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.hv_statuses = [draining(), draining(moved=4, moving=1, queued=0), DRAINED]
    code, out, err = run(monkeypatch, capsys, "drain", "kvm-a")
    assert (code, err) == (0, "")
    assert cluster.calls == [("patch hv", {"spec": {"maintenance": True}})]
    assert out.splitlines() == [
        "hypervisor kvm-a: maintenance on; the operator drains it",
        # The status read with the patch still described generation 1.
        "kvm-a: waiting for the operator to see generation 2",
        "kvm-a: Draining: 3/5 moved · 1 moving · 0 queued · 0 failed · 0 blocked",
        "kvm-a: Draining: 4/5 moved · 1 moving · 0 queued · 0 failed · 0 blocked",
        "hypervisor kvm-a: drained: 5 domains moved in 4m50s",
    ]


def test_drain_without_wait_only_sets_maintenance(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "drain", "kvm-a", "--no-wait")
    assert (code, out) == (0, "hypervisor kvm-a: maintenance on; the operator drains it\n")
    assert cluster.hvs["kvm-a"]["spec"]["maintenance"] is True
    code, out, _ = run(monkeypatch, capsys, "drain", "kvm-a", "--no-wait")
    assert (code, out) == (0, "hypervisor kvm-a: already in maintenance\n")
    assert len(cluster.calls) == 1


def test_a_drain_that_times_out_says_what_still_blocks_it(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stuck = {"conditions": [{"type": "Drained", "status": "False", "reason": "DrainBlocked",
                             "message": "db-1 stays"}], "drain": DRAINING}
    cluster.hv_statuses = [stuck] * 1000
    code, out, err = run(monkeypatch, capsys, "drain", "kvm-a", "--timeout", "0.05")
    assert code == 1
    assert out.splitlines()[-1] == ("kvm-a: DrainBlocked: 3/5 moved · 1 moving · 0 queued · 0 failed · 1 blocked; "
                                    "blocked by db-1 (Excluded) (db-1 stays)")
    assert err.splitlines() == [
        "error: timed out after 50ms; kvm-a is not drained",
        "  kvm-a: 2 domains left: 1 moving, 0 queued, 0 failed, 1 blocked",
        "  no domain has left kvm-a for 2m00s",
        "  blocked: db-1: Excluded: listed in spec.drain.exclude",
    ]


def test_a_drain_cancelled_while_watched_ends_with_the_aborted_exit_code(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.hv_statuses = [draining()]
    real = cluster.hypervisor

    def cleared_meanwhile(name: str) -> dict[str, Any]:
        obj = real(name)
        if not cluster.hv_statuses:
            obj["spec"]["maintenance"] = False
        return obj

    monkeypatch.setattr(cluster, "hypervisor", cleared_meanwhile)
    code, _, err = run(monkeypatch, capsys, "drain", "kvm-a")
    assert code == EXIT_ABORTED
    assert err.startswith("error: hypervisor kvm-a: maintenance was cleared: the drain is cancelled")


def test_draining_a_hypervisor_that_is_not_there_is_one_line(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("drain", "undrain"):
        code, out, err = run(monkeypatch, capsys, verb, "kvm-z")
        assert (code, out, err) == (1, "", "error: no Hypervisor named kvm-z (vmmigration get hv lists them)\n")
    assert cluster.calls == []


# ---- undrain -----------------------------------------------------------------------------


def test_undrain_clears_maintenance_and_waits_for_the_displaced_vms_to_come_home(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    host = cluster.hvs["kvm-a"]
    host["spec"]["maintenance"] = True
    host["status"]["displaced"] = [{"domain": "web-1", "vmmigration": "default/web-1", "runsOn": "kvm-b"}]
    # The operator forgets the list as soon as maintenance ends; the VM still has to come back.
    cluster.hv_statuses = [{"displaced": []}] * 10
    cluster.vmm_objects["default/web-1"] = [
        vmm("web-1", phase="Displaced", current="kvm-b"),
        vmm("web-1", phase="Migrating", current="kvm-b", progress={"percent": 50}),
        vmm("web-1")]
    code, out, err = run(monkeypatch, capsys, "undrain", "kvm-a")
    assert (code, err) == (0, "")
    assert cluster.calls == [("patch hv", {"spec": {"maintenance": False}})]
    assert out.splitlines() == [
        "hypervisor kvm-a: maintenance off; 1 displaced VM to come back",
        "kvm-a: waiting for the operator to see generation 2",
        "kvm-a: 1 VM on the way back: default/web-1 (web-1): on kvm-b, Displaced",
        "kvm-a: 1 VM on the way back: default/web-1 (web-1): on kvm-b, Migrating 50%",
        "hypervisor kvm-a: out of maintenance; 1 VM back",
    ]


def test_undrain_waits_for_the_drains_own_moves_and_times_out_naming_them(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.hvs["kvm-a"]["spec"]["maintenance"] = True
    cluster.hv_statuses = [{}] * 1000
    cluster.drain_made = [[vmm("drain-kvm-a-x", phase="Migrating")]] * 1000
    code, _, err = run(monkeypatch, capsys, "undrain", "kvm-a", "--timeout", "0.05")
    assert code == 1
    assert err == "error: timed out after 50ms; kvm-a: 1 of the drain's moves still running\n"


def test_undrain_of_a_host_not_in_maintenance_with_nothing_displaced_is_done_at_once(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "undrain", "kvm-a")
    assert code == 0 and cluster.calls == []
    assert out.splitlines() == ["hypervisor kvm-a: not in maintenance", "hypervisor kvm-a: out of maintenance"]


def test_undrain_by_a_user_who_may_not_read_vmmigrations_believes_the_hypervisors_status(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.hvs["kvm-a"]["spec"]["maintenance"] = True
    listed = [{"domain": "web-1", "vmmigration": "default/web-1", "runsOn": "kvm-b"}]
    cluster.hvs["kvm-a"]["status"]["displaced"] = listed
    cluster.hv_statuses = [{"displaced": listed}, {"displaced": []}]
    cluster.vmm_refusal = ApiError("forbidden", status=403)
    code, out, _ = run(monkeypatch, capsys, "undrain", "kvm-a")
    assert code == 0
    assert out.splitlines()[-2:] == ["kvm-a: 1 VM on the way back: default/web-1 (web-1): on kvm-b",
                                     "hypervisor kvm-a: out of maintenance; 1 VM back"]


# ---- pools -------------------------------------------------------------------------------


def test_get_pools_lists_them_by_any_of_their_names(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ("pools", "hvpool", "hypervisorpools"):
        code, out, _ = run(monkeypatch, capsys, "get", kind)
        header, row = out.splitlines()
        assert code == 0
        assert header.split() == ["NAME", "HOSTS", "SPREAD", "THRESHOLD", "BALANCED", "REBALANCE", "PLANNED",
                                  "LAST", "AGE"]
        assert row.split() == ["lab", "3", "50%", "20%", "Rebalancing", "on", "1", "10m", "24h"]
    cluster.pools = {}
    assert run(monkeypatch, capsys, "get", "pools") == (0, "", "No HypervisorPools found.\n")


def test_pool_shows_the_balance_the_hosts_load_and_the_planned_moves(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "pool", "lab")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "pool lab: Rebalancing, spread 50%, above the threshold of 20% (spread 50 points)"
    assert lines[3].split() == ["HOST", "LOAD", "USED", "CAPACITY", "VMS", "NOTE"]
    assert lines[4].split() == ["kvm-a", "█" * 15 + "░" * 5, "75%", "6.0Gi", "8.0Gi", "3"]
    assert lines[-2:] == ["planned moves:", "  default/web-2: web-2 (1.0Gi): kvm-a 75% → kvm-c 25%, then 62.5% "
                                            "and 37.5%: spread 50 → 25 points"]


def test_a_pool_that_is_not_there_is_one_line(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(monkeypatch, capsys, "pool", "nope")
    assert (code, out, err) == (1, "", "error: no HypervisorPool named nope (vmmigration get pools lists them)\n")


def test_the_kubectl_plugin_drains_undrains_and_shows_pools_too(
        cluster: DrainCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "--help", entry=kubectl_plugin)
    assert code == 0
    assert {"drain", "undrain", "pool"} <= {line.split()[0] for line in out.split("Commands:")[1].splitlines()
                                            if line.strip()}
    code, out, _ = run(monkeypatch, capsys, "drain", "kvm-b", "--no-wait", entry=kubectl_plugin)
    assert code == 0 and cluster.hvs["kvm-b"]["spec"]["maintenance"] is True
