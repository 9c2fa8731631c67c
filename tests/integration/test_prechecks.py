"""Every pre-check fails with its own reason, and changes nothing on either host."""

from __future__ import annotations

import pytest

from vmmigration.core.model import MIB, MigrationRequest, Mode, Storage
from vmtestbed import guest
from vmtestbed.daemons import Daemon
from vmtestbed.testbed import LOCAL_POOL, Sandbox
from vmmigration.service.engine import PrecheckFailed
from vmmigration.adapters.libvirt import engine
from vmtestbed.hosts import Host

from .helpers import request


def refused(req: MigrationRequest, *hosts: Host) -> PrecheckFailed:
    """Run a migration that must be refused, and prove it changed nothing on ``hosts``."""
    before = [h.domains() for h in hosts]
    with pytest.raises(PrecheckFailed) as caught:
        engine().migrate(req)
    assert [h.domains() for h in hosts] == before, "a refused migration changed something"
    return caught.value


def define(sandbox: Sandbox, host: Daemon, name: str, **spec: object) -> None:
    sandbox.define(sandbox.guest_spec(name, **spec), host=host)


def test_a_domain_missing_on_the_source_is_refused(
    name: str, source_host: Daemon, target_host: Daemon,
    source: Host, target: Host
) -> None:
    error = refused(request(name, source_host, target_host), source, target)
    assert error.reasons == ["DomainNotFound"]
    assert f"domain {name} is not defined" in str(error)


def test_an_unreachable_target_is_refused(
    sandbox: Sandbox, name: str, source_host: Daemon, source: Host
) -> None:
    define(sandbox, source_host, name)
    error = refused(MigrationRequest(domain=name, source_uri=source_host.uri,
                                     target_uri="qemu+tcp://127.0.1.99/system"), source)
    assert error.reasons == ["TargetUnreachable"]
    assert "127.0.1.99" in str(error)


def test_a_cpu_the_target_cannot_offer_is_refused(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon,
    source: Host, target: Host
) -> None:
    # TCG offers no AVX-512; libvirt's hypervisor CPU compare says so.
    sandbox.define(sandbox.guest_spec(name, cpu_features=("avx512f",)), host=source_host)
    error = refused(request(name, source_host, target_host), source, target)
    assert error.reasons == ["CpuIncompatible"]
    assert "avx512f" in str(error)


def test_a_domain_bigger_than_the_targets_free_memory_is_refused(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon,
    source: Host, target: Host
) -> None:
    define(sandbox, source_host, name, memory_mib=4 * 1024 * 1024)  # 4 TiB
    error = refused(request(name, source_host, target_host), source, target)
    assert error.reasons == ["InsufficientMemory"]
    assert "needs 4194304 MiB" in str(error)


def test_a_disk_the_target_cannot_see_is_refused_when_storage_is_shared(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    disk = source.create_volume(pool=LOCAL_POOL, name=f"{name}.qcow2", size_bytes=16 * MIB)
    define(sandbox, source_host, name, disks=(disk,))
    error = refused(request(name, source_host, target_host, storage=Storage.SHARED), source, target)
    assert error.reasons == ["DiskNotVisible"]
    assert disk in str(error) and "CopyAll" in str(error)


def test_a_different_domain_with_the_same_name_on_the_target_is_refused(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon,
    source: Host, target: Host
) -> None:
    define(sandbox, source_host, name)
    define(sandbox, target_host, name)  # same name, its own fresh uuid
    error = refused(request(name, source_host, target_host), source, target)
    assert error.reasons == ["NameClash"]


def test_a_domain_with_the_same_uuid_under_another_name_is_refused(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    define(sandbox, source_host, name)
    xml = source.domain_xml(name, inactive=True).replace(f"<name>{name}</name>", f"<name>{name}-twin</name>")
    target.define_domain(xml)
    try:
        error = refused(request(name, source_host, target_host), source, target)
        assert error.reasons == ["UuidClash"]
        assert f"{name}-twin" in str(error)
    finally:
        target.remove_everywhere(f"{name}-twin")


def test_a_domain_already_running_on_the_target_is_refused(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon, source: Host, target: Host
) -> None:
    define(sandbox, source_host, name)
    target.define_domain(source.domain_xml(name, inactive=True))
    target.start(name)
    error = refused(request(name, source_host, target_host), source, target)
    assert error.reasons == ["DomainAlreadyOnTarget"]


def test_a_live_migration_of_a_shut_off_domain_is_refused(
    sandbox: Sandbox, name: str, source_host: Daemon, target_host: Daemon,
    source: Host, target: Host
) -> None:
    define(sandbox, source_host, name)
    error = refused(request(name, source_host, target_host, mode=Mode.LIVE), source, target)
    assert error.reasons == ["ModeMismatch"]
    assert "use Offline or Auto" in str(error)


def test_a_target_that_is_the_source_under_another_uri_is_refused(
    sandbox: Sandbox, name: str, source_host: Daemon, source: Host
) -> None:
    define(sandbox, source_host, name)
    error = refused(MigrationRequest(domain=name, source_uri=source_host.uri,
                                     target_uri=source_host.unix_uri), source)
    assert error.reasons == ["SameHost"]
