"""libvirt's error codes mapped onto vmmigration's own errors, in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import libvirt

from vmmigration.core.errors import (
    DomainNotFound,
    HostUnreachable,
    LinkBroken,
    MigrationAborted,
    MigrationFailed,
    MigrationUnsafe,
    OperationInvalid,
    PeerUnreachable,
    VirtError,
)

# How QEMU words a migration socket the network broke (libvirt passes its error-desc on).
_STREAM_BROKEN = ("Connection reset by peer", "Broken pipe", "Connection timed out",
                  "No route to host")

_UNREACHABLE = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_INVALID_CONN,
}


def mapped(error: libvirt.libvirtError, default: type[VirtError] = VirtError) -> VirtError:
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(message)
    if code == libvirt.VIR_ERR_OPERATION_ABORTED:
        return MigrationAborted(message)
    if code == libvirt.VIR_ERR_MIGRATE_UNSAFE:
        return MigrationUnsafe(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return OperationInvalid(message)
    # A connection libvirt's keepalive closed ("connection closed due to keepalive
    # timeout", then "client socket is closed") is an internal error of its RPC layer.
    lost = code == libvirt.VIR_ERR_INTERNAL_ERROR and error.get_error_domain() == libvirt.VIR_FROM_RPC
    if (default is MigrationFailed and code == libvirt.VIR_ERR_SYSTEM_ERROR
            and error.get_error_domain() == libvirt.VIR_FROM_RPC
            and message.startswith("unable to connect to server")):
        # A migrate call runs over a connection that is already open, so a
        # failed *connect* inside it is the source daemon dialling its peer.
        return PeerUnreachable(f"the source host could not reach the target: {message}")
    if (default is MigrationFailed and "failed: Unable to" in message
            and any(words in message for words in _STREAM_BROKEN)):
        # "job 'migration out' failed: Unable to write to socket: Connection reset by peer"
        return LinkBroken(f"the migration link broke: {message}")
    if (code in _UNREACHABLE or lost) and default is not MigrationFailed:
        return HostUnreachable(message)
    return default(message)


@contextlib.contextmanager
def translated(default: type[VirtError] = VirtError) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as error:
        raise mapped(error, default) from error


# libvirt prints every error to stderr by default; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
