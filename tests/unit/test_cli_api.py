"""The API verbs (get, move, abort, watch) against a fake cluster, and every failure as one line."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmmigration.adapters.kube.api import ApiError, NotFound, describe, unreachable
from vmmigration.cli import delete, kubectl_plugin, main, watch
from vmmigration.cli.cluster import Where
from vmmigration.cli.common import EXIT_ABORTED, EXIT_MIGRATION
from vmmigration.core.deletion import OPERATOR_FINALIZER
from vmmigration.core.memory import timestamp

NOW = 1_800_000_000.0


def hypervisor(name: str, *, free: int, total: int, inbound: int = 0, release: str = "lab") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": timestamp(NOW - 3 * 86400),
                         "labels": {"app.kubernetes.io/instance": release},
                         # The operator probes it: kopf holds it with its finalizer.
                         "finalizers": [OPERATOR_FINALIZER]},
            "spec": {"uri": f"qemu+tcp://{name}/system", "maxInboundMigrations": 2},
            "status": {"conditions": [{"type": "Reachable", "status": "True"}], "domainCount": 3,
                       "memoryFreeBytes": free, "memoryTotalBytes": total, "inboundMigrations": inbound,
                       "libvirtVersion": "11.3.0", "lastProbeTime": timestamp(NOW - 2)}}


def vmmigration(name: str, domain: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "generation": 1, "resourceVersion": "1",
                         "creationTimestamp": timestamp(NOW - 600)},
            "spec": {"domain": domain, "targetHypervisor": "kvm-b"},
            "status": {"observedGeneration": 1, **status}}


class FakeCluster:
    """The API server as the verbs see it: objects, generations, merge patches, refusals."""

    namespace = "default"

    def __init__(self) -> None:
        self.hvs = {"kvm-a": hypervisor("kvm-a", free=3 * 2**30 + 2**28, total=8 * 2**30, inbound=1),
                    "kvm-b": hypervisor("kvm-b", free=512 * 2**20, total=2**30),
                    "kvm-c": hypervisor("kvm-c", free=2**30, total=2**30, release="other")}
        self.vmms: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        # What the operator writes next, one status per read of the object.
        self.statuses: list[dict[str, Any]] = []
        self.refusal: ApiError | None = None
        # Whether the operator runs: it then releases one deleted Hypervisor between two reads.
        self.operator_running = True

    def _refuse(self) -> None:
        if self.refusal is not None:
            raise self.refusal

    def hypervisors(self, *, selector: str | None = None) -> list[dict[str, Any]]:
        self._refuse()
        deleting = [n for n, h in self.hvs.items() if "deletionTimestamp" in h["metadata"]]
        if self.operator_running and deleting:
            del self.hvs[deleting[0]]
        wanted = dict(part.split("=") for part in selector.split(",")) if selector else {}
        return [copy.deepcopy(h) for h in self.hvs.values()
                if wanted.items() <= h["metadata"]["labels"].items()]

    def delete_hypervisor(self, name: str) -> dict[str, Any]:
        self._refuse()
        self.calls.append(("delete", name))
        if name not in self.hvs:
            raise NotFound(f'hypervisors.vmmigration.dev "{name}" not found', status=404)
        if not self.hvs[name]["metadata"].get("finalizers"):
            return self.hvs.pop(name)
        self.hvs[name]["metadata"].setdefault("deletionTimestamp", timestamp(NOW - 150))
        return copy.deepcopy(self.hvs[name])

    def hypervisor(self, name: str) -> dict[str, Any]:
        self._refuse()
        if name not in self.hvs:
            raise NotFound(f'hypervisors.vmmigration.dev "{name}" not found', status=404)
        return self.hvs[name]

    def vmmigrations(self, namespace: str | None) -> list[dict[str, Any]]:
        self._refuse()
        return [copy.deepcopy(v) for v in self.vmms.values()]

    def vmmigration(self, namespace: str, name: str) -> dict[str, Any]:
        self._refuse()
        if name not in self.vmms:
            raise NotFound(f'vmmigrations.vmmigration.dev "{name}" not found', status=404)
        if self.statuses:
            self.vmms[name]["status"] = {"observedGeneration": self.vmms[name]["metadata"]["generation"],
                                         **self.statuses.pop(0)}
        return copy.deepcopy(self.vmms[name])

    def create_vmmigration(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", body))
        made = copy.deepcopy(body)
        made["metadata"].update(generation=1, resourceVersion="1")
        self.vmms[body["metadata"]["name"]] = made
        return copy.deepcopy(made)

    def patch_vmmigration(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", patch))
        obj = self.vmms[name]
        obj["spec"] = merged(obj["spec"], patch["spec"])
        obj["metadata"]["generation"] += 1
        return copy.deepcopy(obj)


def merged(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merged(result.get(name), value)
    return result


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    fake = FakeCluster()
    monkeypatch.setattr(Where, "connect", lambda self: (fake, self.namespace or fake.namespace))
    monkeypatch.setattr(watch, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(delete, "POLL_SECONDS", 0.0)
    monkeypatch.setattr("time.time", lambda: NOW)
    yield fake


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str,
        entry: Any = main) -> tuple[int, str, str]:
    """The installed entry point, as a shell runs it: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["vmmigration", *args])
    with pytest.raises(SystemExit) as exited:
        entry()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


# ---- get ---------------------------------------------------------------------------------


def test_hypervisors_are_listed_with_memory_in_binary_units_and_slots_in_use(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "get", "hv")
    assert code == 0
    header, first, second, _ = out.splitlines()
    assert header.split() == ["NAME", "REACHABLE", "MAINTENANCE", "DOMAINS", "FREE", "MEMORY", "IN", "OUT",
                              "LIBVIRT", "PROBED", "AGE"]
    assert first.split() == ["kvm-a", "True", "no", "3", "3.2Gi", "8.0Gi", "1/2", "0/2", "11.3.0",
                             "2s", "3d"]
    assert second.split()[4:6] == ["512Mi", "1.0Gi"]


def test_vmmigrations_are_listed_with_progress_downtime_and_why_they_wait(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.vmms = {
        "db": vmmigration("db", "db-01", phase="Placed", currentHypervisor="kvm-b", downtimeMs=45,
                          durationSeconds=3.21),
        "web": vmmigration("web", "web-01", phase="Migrating", currentHypervisor="kvm-a",
                           progress={"percent": 42.4, "memoryRemainingBytes": 310 * 2**20, "etaSeconds": 4}),
        "zz": {**vmmigration("zz", "zz-01", phase="Pending", conditions=[
            {"type": "Queued", "status": "True", "reason": "ConcurrencyLimit"}]),
               "spec": {"domain": "zz-01", "targetSelector": {"matchLabels": {"zone": "lab"}}}},
    }
    code, out, _ = run(monkeypatch, capsys, "get", "vmm")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert rows["db"].split() == ["db", "db-01", "kvm-b", "kvm-b", "Placed", "-", "45ms", "3.2s", "-", "10m"]
    assert "42% 310Mi left ETA 4.0s" in rows["web"]
    assert rows["zz"].split()[3:5] == ["zone=lab", "Pending"] and "ConcurrencyLimit" in rows["zz"]


def test_an_empty_namespace_says_so_on_stderr(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(monkeypatch, capsys, "get", "vmm", "-n", "team")
    assert (code, out, err) == (0, "", "No VMMigrations found in namespace team.\n")


# ---- move --------------------------------------------------------------------------------


def test_moving_a_domain_without_a_vmmigration_creates_one_named_after_it(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "move", "Web_01", "--to", "kvm-b", "--mode", "live", "--once")
    assert code == 0 and out == "vmmigration default/web-01 created: Web_01 → kvm-b\n"
    [(verb, body)] = cluster.calls
    assert verb == "create" and body["spec"] == {"domain": "Web_01", "targetHypervisor": "kvm-b",
                                                 "mode": "Live", "placement": "Once"}


def test_moving_a_domain_that_has_a_vmmigration_patches_it_and_waits_until_placed(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.vmms = {"web": vmmigration("web", "web-01", phase="Placed", currentHypervisor="kvm-b")}
    progress = {"percent": 55.0, "memoryTotalBytes": 2**30, "memoryRemainingBytes": 2**29}
    cluster.statuses = [{"phase": "Validating"},
                        {"phase": "Migrating", "sourceHypervisor": "kvm-b", "targetHypervisor": "kvm-a",
                         "progress": progress},
                        {"phase": "Placed", "currentHypervisor": "kvm-a", "effectiveMode": "Live",
                         "downtimeMs": 12, "durationSeconds": 2.5}]
    code, out, _ = run(monkeypatch, capsys, "move", "web-01", "--to", "kvm-a", "--wait")
    assert code == 0
    assert cluster.calls == [("patch", {"metadata": {"resourceVersion": "1"},
                                        "spec": {"targetHypervisor": "kvm-a"}})]
    assert out.splitlines() == [
        "vmmigration default/web patched: web-01 → kvm-a",
        # The status still described generation 1, the previous move.
        "default/web: waiting for the operator to see generation 2",
        "default/web: Validating",
        "default/web: 55% kvm-b → kvm-a │ 512Mi left of 1.0Gi",
        "default/web: placed on kvm-a (Live, downtime 12ms, took 2.5s)",
    ]


@pytest.mark.parametrize(("status", "code", "words"), [
    pytest.param({"phase": "Failed", "lastFailure": {"reason": "PreCheckFailed", "message": "no room"}},
                 EXIT_MIGRATION, "error: default/web-01: failed: PreCheckFailed: no room", id="failed"),
    pytest.param({"phase": "Aborted", "currentHypervisor": "kvm-a"}, EXIT_ABORTED,
                 "error: default/web-01: aborted; the domain stays on kvm-a", id="aborted"),
])
def test_a_move_that_fails_or_is_aborted_ends_the_wait_with_its_own_exit_code(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        status: dict[str, Any], code: int, words: str) -> None:
    cluster.statuses = [status]
    exit_code, _, err = run(monkeypatch, capsys, "move", "web-01", "--to", "kvm-b", "--wait")
    assert exit_code == code and err.splitlines() == [words]


def test_a_wait_gives_up_at_its_timeout_with_where_the_move_stands(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.statuses = [{"phase": "Pending"}] * 1000
    code, _, err = run(monkeypatch, capsys, "move", "web-01", "--to", "kvm-b", "--wait", "--timeout", "0.05")
    assert code == 1 and err == "error: timed out after 50ms; default/web-01: Pending\n"


@pytest.mark.parametrize(("args", "words"), [
    pytest.param(["move", "web-01"], "exactly one of --to HYPERVISOR and --selector", id="no-target"),
    pytest.param(["move", "web-01", "--to", "kvm-b", "-l", "zone=a"], "exactly one of", id="two-targets"),
    pytest.param(["move", "web-01", "-l", "zone!=a"], "only equality selectors", id="bad-selector"),
])
def test_a_move_asked_wrongly_is_a_usage_error(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: list[str], words: str) -> None:
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and words in err and cluster.calls == []


def test_a_move_to_an_unknown_hypervisor_is_refused_before_anything_is_written(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(monkeypatch, capsys, "move", "web-01", "--to", "kvm-z")
    assert (code, out) == (1, "")
    assert err == "error: no Hypervisor named kvm-z (vmmigration get hv lists them)\n"
    assert cluster.calls == []


def test_a_second_vmmigration_for_a_domain_is_refused_in_one_line(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.vmms = {"web": vmmigration("web", "web-01")}
    code, _, err = run(monkeypatch, capsys, "move", "web-01", "--to", "kvm-a", "--name", "other")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: domain web-01 is already managed by VMMigration default/web")


# ---- abort and watch ---------------------------------------------------------------------


def test_abort_finds_the_vmmigration_by_its_domain_and_waits_until_it_is_aborted(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.vmms = {"web": vmmigration("web", "web-01", phase="Migrating")}
    cluster.statuses = [{"phase": "Migrating"}, {"phase": "Aborted", "currentHypervisor": "kvm-a"}]
    code, out, _ = run(monkeypatch, capsys, "abort", "web-01", "--wait")
    assert code == 0
    assert cluster.calls == [("patch", {"spec": {"abort": True}})]
    assert out.splitlines()[0] == "vmmigration default/web: abort requested"
    assert out.splitlines()[-1] == "default/web: aborted; the domain stays on kvm-a"


def test_watching_a_vmmigration_that_is_not_there_is_one_line(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(monkeypatch, capsys, "watch", "nope")
    assert code == 1
    assert err == "error: no VMMigration named nope, or managing a domain nope, in namespace default\n"


def test_the_kubectl_plugin_offers_the_same_verbs_under_its_own_name(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "--help", entry=kubectl_plugin)
    assert code == 0 and out.startswith("Usage: kubectl vmm [OPTIONS] COMMAND")
    assert {"get", "move", "abort", "watch", "delete"} <= {line.split()[0] for line in out.split("Commands:")[1].splitlines()
                                                  if line.strip()}
    code, out, _ = run(monkeypatch, capsys, "get", "hypervisors", entry=kubectl_plugin)
    assert code == 0 and "3.2Gi" in out


# ---- delete ------------------------------------------------------------------------------


def test_deleting_hypervisors_waits_until_the_operator_has_released_each_one(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "delete", "hv", "kvm-a", "kvm-b", "--wait", "--timeout", "60")
    assert code == 0
    assert out.splitlines() == ["hypervisor kvm-a marked for deletion", "hypervisor kvm-b marked for deletion",
                                "hypervisor kvm-a gone", "hypervisor kvm-b gone"]
    assert set(cluster.hvs) == {"kvm-c"}


def test_deleting_a_hypervisor_that_is_not_there_is_no_error(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    del cluster.hvs["kvm-a"]["metadata"]["finalizers"]
    code, out, err = run(monkeypatch, capsys, "delete", "hv", "kvm-z", "kvm-a", "kvm-z", "--wait")
    assert (code, err) == (0, "")
    assert out.splitlines() == ["hypervisor kvm-z: not found, nothing to delete", "hypervisor kvm-a deleted"]
    assert cluster.calls == [("delete", "kvm-z"), ("delete", "kvm-a")]


def test_a_selector_deletes_only_the_hypervisors_whose_labels_match(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(monkeypatch, capsys, "delete", "hypervisors", "-l", "app.kubernetes.io/instance=lab",
                     "--wait", entry=kubectl_plugin)
    assert code == 0 and set(cluster.hvs) == {"kvm-c"}
    code, out, err = run(monkeypatch, capsys, "delete", "hv", "-l", "app.kubernetes.io/instance=lab")
    assert (code, out, err) == (0, "", "No Hypervisors match app.kubernetes.io/instance=lab.\n")


def test_a_wait_that_times_out_says_what_still_holds_each_hypervisor(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cluster.operator_running = False
    code, _, err = run(monkeypatch, capsys, "delete", "hv", "kvm-a", "--wait", "--timeout", "0.05")
    assert code == 1
    assert err.splitlines() == [
        "error: timed out after 50ms; 1 Hypervisor still there",
        "  kvm-a: still holding finalizer vmmigration.dev/finalizer for 2m30s; the operator removes it when it "
        "sees the deletion: is the operator running?"]


@pytest.mark.parametrize(("args", "words"), [
    pytest.param(["delete", "hv"], "name the Hypervisors to delete, or select them", id="neither"),
    pytest.param(["delete", "hv", "kvm-a", "-l", "a=b"], "not both", id="both"),
    pytest.param(["delete", "vmm", "web"], "'vmm' is not one of", id="not-a-hypervisor"),
])
def test_a_deletion_asked_wrongly_is_a_usage_error_and_deletes_nothing(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: list[str], words: str) -> None:
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and words in err and cluster.calls == []


# ---- the API server's refusals, and no API server at all ---------------------------------


@pytest.mark.parametrize(("status", "message"), [
    pytest.param(403, 'vmmigrations.vmmigration.dev "web" is forbidden: User "system:serviceaccount:ops:ci" '
                      'cannot patch resource "vmmigrations" in API group "vmmigration.dev" in the namespace "ops"',
                 id="forbidden"),
    pytest.param(422, 'VMMigration.vmmigration.dev "web" is invalid: spec.targetHypervisor: Invalid value: '
                      '"KVM_B": spec.targetHypervisor in body should match \'^[a-z0-9]\'', id="invalid"),
])
def test_a_refusal_is_told_in_the_api_servers_own_words_on_one_line(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        status: int, message: str) -> None:
    body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    cluster.refusal = ApiError(describe(status=status, reason="x", body=body), status=status)
    code, out, err = run(monkeypatch, capsys, "get", "vmm")
    assert (code, out, err) == (1, "", f"error: {message}\n")


def test_a_refusal_without_a_status_body_names_the_code() -> None:
    assert describe(status=500, reason="Internal Server Error", body="<html>") == (
        "the API server answered 500 Internal Server Error")
    assert describe(status=401, reason="Unauthorized", body='{"message": "Unauthorized"}').startswith(
        "unauthorized: the API server did not accept these credentials")


def test_an_unreachable_server_is_named_without_urllib3s_object_reprs() -> None:
    class Refused(Exception):
        reason = OSError("<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new "
                         "connection: [Errno 111] Connection refused")
    assert unreachable("https://10.0.0.1:6443", Refused()) == (
        "cannot reach the API server at https://10.0.0.1:6443: connection refused")


def test_no_kubeconfig_and_no_server_are_one_line_each_and_exit_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = run(monkeypatch, capsys, "get", "hv")
    assert (code, err) == (1, "error: no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, "
                              "or create ~/.kube/config\n")
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "team"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    code, _, err = run(monkeypatch, capsys, "get", "vmm")
    assert (code, err) == (1, "error: cannot reach the API server at https://127.0.0.1:1: connection refused\n")
    code, _, err = run(monkeypatch, capsys, "get", "vmm", "--context", "other")
    assert (code, err) == (1, "error: context 'other' is not in the kubeconfig\n")
