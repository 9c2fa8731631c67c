"""The failures of a libvirt host, as the rest of the code reasons about them.

The libvirt adapter maps libvirt's many error codes onto these few; nothing
here imports libvirt, so the service and the pure core can catch them.
"""

from __future__ import annotations


class VirtError(Exception):
    """A libvirt failure, with libvirt's own message."""


class HostUnreachable(VirtError):
    pass


class DomainNotFound(VirtError):
    pass


class OperationInvalid(VirtError):
    """The domain is not in a state that allows this (no job, not running, …)."""


class MigrationAborted(VirtError):
    pass


class MigrationFailed(VirtError):
    pass


class MigrationUnsafe(MigrationFailed):
    """libvirt refused: it cannot tell the disks are on shared storage, and would risk their data."""


class PeerUnreachable(MigrationFailed):
    """In a peer-to-peer migration the source host could not connect to the target,
    though the operator reaches both: the hosts cannot see each other."""


class LinkBroken(MigrationFailed):
    """QEMU's migration stream failed on the network (reset, broken pipe): the link
    between the hosts broke, not libvirt or the guest."""


class CredentialsError(Exception):
    """A Hypervisor's credentials Secret is missing or incomplete."""
