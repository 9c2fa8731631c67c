"""Each pre-check fails with its own reason and a message that says what to do."""

import pytest

from vmmigration.core.model import MIB, HostVersions, PowerState, Storage
from vmmigration.adapters.libvirt import machines
from vmmigration.core.prechecks import CpuVerdict, MachineVerdict, SourceFacts, TargetFacts, evaluate

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


OLDER = HostVersions(libvirt=11_003_000, hypervisor=10_000_002)
NEWER = HostVersions(libvirt=12_009_000, hypervisor=11_001_003)


def test_a_move_to_an_older_libvirt_and_qemu_is_refused_by_default_saying_how_to_allow_it() -> None:
    found = evaluate(source=source(versions=NEWER), target=target(versions=OLDER),
                     storage=Storage.SHARED)
    assert [f.reason for f in found] == ["TargetOlder", "TargetOlder"]
    assert "policy.allowOlderTarget" in found[0].message


def test_an_allowed_backward_move_passes_when_the_older_qemu_has_the_guests_machine_type() -> None:
    machine = MachineVerdict(machine="pc-i440fx-10.0")
    assert evaluate(source=source(versions=NEWER), target=target(versions=OLDER, machine=machine),
                    storage=Storage.SHARED, allow_older=True) == []


def test_an_allowed_backward_move_is_refused_when_the_older_qemu_lacks_the_machine_type() -> None:
    machine = MachineVerdict(machine="pc-i440fx-11.1", supported=False,
                             offered=("pc-i440fx-10.0", "pc-i440fx-9.2"))
    found = evaluate(source=source(versions=NEWER), target=target(versions=OLDER, machine=machine),
                     storage=Storage.SHARED, allow_older=True)
    assert [f.reason for f in found] == ["MachineTypeUnsupported"]
    assert "QEMU 10.0.2 has no machine type pc-i440fx-11.1" in found[0].message
    assert "pc-i440fx-10.0" in found[0].message


def test_an_allowed_backward_move_is_still_refused_for_a_cpu_model_the_older_side_lacks() -> None:
    found = evaluate(source=source(versions=NEWER),
                     target=target(versions=OLDER, cpu=CpuVerdict(compatible=False, detail="no la57")),
                     storage=Storage.SHARED, allow_older=True)
    assert [f.reason for f in found] == ["CpuIncompatible"]


def test_a_newer_qemu_that_dropped_an_old_machine_type_is_refused_going_forward_too() -> None:
    machine = MachineVerdict(machine="pc-i440fx-1.4", supported=False)
    found = evaluate(source=source(versions=OLDER), target=target(versions=NEWER, machine=machine),
                     storage=Storage.SHARED)
    assert [f.reason for f in found] == ["MachineTypeUnsupported"]


CAPABILITIES = """<capabilities><host/>
  <guest><os_type>hvm</os_type><arch name='x86_64'>
    <machine maxCpus='255'>pc-i440fx-10.0</machine>
    <machine canonical='pc-i440fx-10.0' maxCpus='255'>pc</machine>
    <machine maxCpus='255'>pc-i440fx-9.2</machine>
    <machine maxCpus='4096'>pc-q35-10.0</machine>
    <domain type='qemu'/></arch></guest>
</capabilities>"""


def domain_xml(machine: str) -> str:
    return (f"<domain type='qemu'><name>g</name><os><type arch='x86_64' machine='{machine}'>"
            "hvm</type></os></domain>")


def test_the_machine_types_a_qemu_offers_are_read_from_libvirts_capabilities() -> None:
    assert machines.verdict(capabilities_xml=CAPABILITIES,
                            domain_xml=domain_xml("pc-i440fx-9.2")).supported
    missing = machines.verdict(capabilities_xml=CAPABILITIES, domain_xml=domain_xml("pc-i440fx-11.1"))
    assert not missing.supported
    assert missing.offered == ("pc-i440fx-10.0", "pc-i440fx-9.2")
