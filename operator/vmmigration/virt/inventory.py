"""One probe of a libvirt host: versions, CPU, memory and every domain it holds.

The operator's view of where each VM runs is built from these reports; they
are cheap (a handful of libvirt calls) so hosts are probed on a timer, and
again right after a migration touches them.
"""

from __future__ import annotations

import time

from vmmigration.model import HostReport, format_version
from vmmigration.virt.libvirt_host import Host, VirtError


def probe(uri: str) -> HostReport:
    """Never raises for a host that is down: an unreachable host is a fact to report."""
    now = time.time()
    try:
        with Host(uri) as host:
            versions = host.versions()
            return HostReport(
                reachable=True,
                probed_at=now,
                libvirt_version=format_version(versions.libvirt),
                hypervisor_version=format_version(versions.hypervisor),
                cpu_model=host.cpu_model(),
                memory_total_bytes=host.memory_total_bytes(),
                memory_free_bytes=host.free_memory_bytes(),
                domains=host.domains(),
            )
    except VirtError as error:
        return HostReport(reachable=False, probed_at=now, error=str(error))
