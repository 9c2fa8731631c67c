"""Each pre-check fails with its own reason and a message that says what to do."""

import pytest

from vmmigration.core.model import MIB, HostVersions, PowerState, Storage
from vmmigration.core.prechecks import CpuVerdict, SourceFacts, TargetFacts, evaluate

from .conftest import domain

VERSIONS = HostVersions(libvirt=11_003_000, hypervisor=10_000_002)


def source(**kwargs: object) -> SourceFacts:
    values: dict[str, object] = {"host": "kvm-a", "domain": domain(), "versions": VERSIONS, "disks": ()}
    values.update(kwargs)
    return SourceFacts(**values)  # type: ignore[arg-type]


def target(**kwargs: object) -> TargetFacts:
    values: dict[str, object] = {
        "host": "kvm-b", "versions": VERSIONS, "free_memory_bytes": 1024 * MIB, "domains": (),
        "cpu": CpuVerdict(compatible=True), "invisible_disks": (),
    }
    values.update(kwargs)
    return TargetFacts(**values)  # type: ignore[arg-type]


def test_a_healthy_pair_passes_every_check() -> None:
    assert evaluate(source=source(), target=target(), storage=Storage.SHARED) == []


@pytest.mark.parametrize(
    ("facts", "storage", "reason", "words"),
    [
        pytest.param({"domains": (domain(),)}, Storage.SHARED, "DomainAlreadyOnTarget",
                     "already active on kvm-b", id="already-on-target"),
        pytest.param({"domains": (domain(uuid="22222222-2222-2222-2222-222222222222"),)},
                     Storage.SHARED, "NameClash", "different domain named web-01", id="name-clash"),
        pytest.param({"domains": (domain(name="db-01"),)}, Storage.SHARED, "UuidClash",
                     "db-01 with uuid", id="uuid-clash"),
        pytest.param({"free_memory_bytes": 96 * MIB}, Storage.SHARED, "InsufficientMemory",
                     "kvm-b has 96 MiB free, domain web-01 needs 128 MiB", id="memory"),
        pytest.param({"cpu": CpuVerdict(compatible=False, detail="avx512f missing")}, Storage.SHARED,
                     "CpuIncompatible", "not compatible with kvm-b: avx512f missing", id="cpu"),
        pytest.param({"invisible_disks": ("/var/lib/libvirt/images/a.qcow2",)}, Storage.SHARED,
                     "DiskNotVisible", "cannot see /var/lib/libvirt/images/a.qcow2", id="disk"),
        pytest.param({"invisible_disks": ("/local/a.qcow2",), "uncreatable_disks": ("/local/a.qcow2",)},
                     Storage.COPY_ALL, "NoTargetPool", "no storage pool for the directory of /local/a.qcow2",
                     id="no-pool-to-copy-into"),
        pytest.param({"invisible_disks": ("/local/a.qcow2",), "invisible_backing": ("/base.qcow2",)},
                     Storage.COPY_INCREMENTAL, "BackingNotVisible", "backing file /base.qcow2",
                     id="incremental-needs-the-backing"),
        pytest.param({"versions": HostVersions(libvirt=9_000_000, hypervisor=10_000_002)},
                     Storage.SHARED, "TargetOlder", "libvirt 9.0.0, older than 11.3.0", id="older-libvirt"),
        pytest.param({"versions": HostVersions(libvirt=11_003_000, hypervisor=7_002_000)},
                     Storage.SHARED, "TargetOlder", "QEMU 7.2.0, older than 10.0.2", id="older-qemu"),
    ],
)
def test_each_failing_check_names_its_reason(
    facts: dict[str, object], storage: Storage, reason: str, words: str
) -> None:
    findings = evaluate(source=source(), target=target(**facts), storage=storage)
    assert [f.reason for f in findings] == [reason]
    assert words in findings[0].message


def test_the_same_host_under_two_uris_is_refused_alone() -> None:
    uuid = "5f0c2e7a-0000-4000-8000-000000000001"
    findings = evaluate(source=source(host_uuid=uuid),
                        target=target(host_uuid=uuid, domains=(domain(),)), storage=Storage.SHARED)
    assert [f.reason for f in findings] == ["SameHost"]
    assert "are the same host" in findings[0].message


def test_a_domain_defined_but_shut_off_on_the_target_is_not_a_clash() -> None:
    leftover = domain(state=PowerState.SHUT_OFF)
    assert evaluate(source=source(), target=target(domains=(leftover,)), storage=Storage.SHARED) == []


def test_invisible_disks_do_not_matter_when_the_disks_are_copied() -> None:
    facts = target(invisible_disks=("/var/lib/libvirt/images/a.qcow2",))
    assert evaluate(source=source(), target=facts, storage=Storage.COPY_ALL) == []


def test_an_invisible_backing_file_does_not_matter_when_everything_is_copied() -> None:
    facts = target(invisible_disks=("/local/a.qcow2",), invisible_backing=("/base.qcow2",))
    assert evaluate(source=source(), target=facts, storage=Storage.COPY_ALL) == []


def test_a_newer_target_is_fine() -> None:
    newer = HostVersions(libvirt=12_000_000, hypervisor=11_000_000)
    assert evaluate(source=source(), target=target(versions=newer), storage=Storage.SHARED) == []
