"""libvirt's many error codes become a few typed errors; a lost connection is an unreachable host."""

from __future__ import annotations

import libvirt
import pytest

from vmmigration.adapters.libvirt.errors import mapped
from vmmigration.core.errors import (
    DomainNotFound,
    HostUnreachable,
    LinkBroken,
    MigrationFailed,
    PeerUnreachable,
    VirtError,
)


def error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    made = libvirt.libvirtError(message)
    # libvirt-python reads code, domain and message from this tuple.
    made.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, -1, -1)
    return made


@pytest.mark.parametrize("message", ["connection closed due to keepalive timeout",
                                     "client socket is closed"])
def test_a_connection_closed_by_keepalive_is_an_unreachable_host(message: str) -> None:
    found = mapped(error(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC, message))
    assert isinstance(found, HostUnreachable)
    assert str(found) == message


def test_an_internal_error_outside_the_rpc_layer_stays_a_plain_failure() -> None:
    found = mapped(error(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, "qemu said no"))
    assert type(found) is VirtError


def test_a_lost_connection_during_a_migration_is_a_failed_migration_not_an_unreachable_host() -> None:
    # The migrate call's errors say the migration failed; where the VM runs is read afterwards.
    found = mapped(error(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC,
                           "connection closed due to keepalive timeout"), MigrationFailed)
    assert type(found) is MigrationFailed


def test_a_failed_connect_inside_a_migrate_call_is_the_source_not_reaching_its_peer() -> None:
    found = mapped(error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC,
                         "unable to connect to server at '10.240.6.3:16509': Connection timed out"),
                   MigrationFailed)
    assert isinstance(found, PeerUnreachable) and isinstance(found, MigrationFailed)
    assert str(found).startswith("the source host could not reach the target: unable to connect")
    # The same error outside a migration is the operator not reaching the host.
    assert isinstance(mapped(error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC,
                                   "unable to connect to server")), HostUnreachable)


def test_a_migration_stream_the_network_reset_is_a_broken_link() -> None:
    text = ("operation failed: job 'migration out' failed: Unable to write to socket: "
            "Connection reset by peer")
    found = mapped(error(libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU, text),
                   MigrationFailed)
    assert isinstance(found, LinkBroken) and isinstance(found, MigrationFailed)
    assert str(found) == f"the migration link broke: {text}"
    # A failure of the guest or of libvirt itself stays a failed migration.
    other = mapped(error(libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU,
                         "operation failed: job 'migration out' failed: load of device failed"),
                   MigrationFailed)
    assert type(other) is MigrationFailed


def test_a_missing_domain_is_domain_not_found() -> None:
    assert isinstance(mapped(error(libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU, "no domain")),
                      DomainNotFound)
