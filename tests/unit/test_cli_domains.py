"""``vmmigration domains HOST``: every domain of a Hypervisor, found through the API, read from libvirt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import vmmigration.adapters.libvirt
from vmmigration.adapters.kube.api import NotFound
from vmmigration.cli import domains, kubectl_plugin
from vmmigration.cli.cluster import Where
from vmmigration.core.model import GIB, MIB, DomainSummary, PauseReason, PowerState

from .test_cli_api import run

# libvirt's test driver, in this process: one running domain "test" of 8 GiB.
TEST_DRIVER = "test:///default"


def summary(name: str, state: PowerState, *, memory: int, persistent: bool = True) -> DomainSummary:
    return DomainSummary(name=name, uuid=f"uuid-{name}", state=state, pause_reason=PauseReason.NONE,
                         memory_bytes=memory, persistent=persistent)


MANY = (summary("web-02", PowerState.RUNNING, memory=2 * GIB),
        summary("db-01", PowerState.SHUT_OFF, memory=512 * MIB),
        summary("batch-7", PowerState.PAUSED, memory=3 * GIB + 2**28, persistent=False),
        summary("web-01", PowerState.OTHER, memory=900))


class FakeCluster:
    namespace = "default"

    def __init__(self) -> None:
        self.hvs = {"kvm-a": {"metadata": {"name": "kvm-a"}, "spec": {"uri": TEST_DRIVER}},
                    "kvm-b": {"metadata": {"name": "kvm-b"}, "spec": {"uri": "qemu+tcp://kvm-b/system"}}}

    def hypervisor(self, name: str) -> dict[str, Any]:
        if name not in self.hvs:
            raise NotFound(f'hypervisors.vmmigration.dev "{name}" not found', status=404)
        return self.hvs[name]


class FakeHost:
    """libvirt as the verb sees it: the URI it was opened with, and the domains there."""

    opened: list[str] = []

    def __init__(self, uri: str) -> None:
        self.opened.append(uri)

    def __enter__(self) -> FakeHost:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def domains(self) -> tuple[DomainSummary, ...]:
        return MANY


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    fake = FakeCluster()
    monkeypatch.setattr(Where, "connect", lambda self: (fake, self.namespace or fake.namespace))
    yield fake


def test_the_domains_of_a_hypervisor_are_read_from_the_libvirt_its_spec_names(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(monkeypatch, capsys, "domains", "kvm-a")
    assert (code, err) == (0, "")
    assert [line.split() for line in out.splitlines()] == [["NAME", "STATE", "MEMORY", "PERSISTENT"],
                                                           ["test", "Running", "8.0Gi", "yes"]]


def test_every_domain_is_listed_by_name_in_binary_units_in_aligned_columns(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    FakeHost.opened = []
    monkeypatch.setattr(vmmigration.adapters.libvirt, "Host", FakeHost)
    code, out, _ = run(monkeypatch, capsys, "domains", "kvm-b")
    assert code == 0 and FakeHost.opened == ["qemu+tcp://kvm-b/system"]
    assert out.splitlines() == [
        "NAME      STATE     MEMORY   PERSISTENT",
        "batch-7   Paused    3.2Gi    no",
        "db-01     ShutOff   512Mi    yes",
        "web-01    Other     900B     yes",
        "web-02    Running   2.0Gi    yes",
    ]


def test_json_gives_every_domain_in_the_shape_of_status_domains(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(vmmigration.adapters.libvirt, "Host", FakeHost)
    code, out, _ = run(monkeypatch, capsys, "domains", "kvm-b", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [d["name"] for d in listed] == ["batch-7", "db-01", "web-01", "web-02"]
    assert listed[0] == {"name": "batch-7", "uuid": "uuid-batch-7", "state": "Paused",
                         "memoryBytes": 3 * GIB + 2**28, "persistent": False}


def test_a_host_without_domains_says_so_on_stderr(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(FakeHost, "domains", lambda self: ())
    monkeypatch.setattr(vmmigration.adapters.libvirt, "Host", FakeHost)
    code, out, err = run(monkeypatch, capsys, "domains", "kvm-b")
    assert (code, out, err) == (0, "", "No domains on hypervisor kvm-b.\n")


def test_an_unknown_hypervisor_is_one_line_naming_how_to_list_them(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(monkeypatch, capsys, "domains", "kvm-z")
    assert (code, out) == (1, "")
    assert err == "error: no Hypervisor named kvm-z (vmmigration get hv lists them)\n"


def test_an_unreachable_libvirt_is_one_line_without_a_traceback(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    cluster.hvs["kvm-b"]["spec"]["uri"] = "qemu+tcp://127.0.0.1:1/system"
    code, out, err = run(monkeypatch, capsys, "domains", "kvm-b")
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and "127.0.0.1:1" in err and len(err.splitlines()) == 1


def test_the_kubectl_plugin_lists_domains_too(
        cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "domains", "kvm-a", entry=kubectl_plugin)
    assert code == 0 and out.splitlines()[1].split()[0] == "test"


def test_the_rows_show_what_a_person_reads_and_the_entries_what_a_script_reads() -> None:
    [row] = domains.rows((MANY[1],))
    assert row == ["db-01", "ShutOff", "512Mi", "yes"]
    [entry] = domains.as_entries((MANY[1],))
    assert entry["memoryBytes"] == 512 * MIB and entry["state"] == "ShutOff"
