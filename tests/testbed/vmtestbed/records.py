"""What libvirt itself recorded on each sandbox host, for checks that must not trust our log.

libvirtd writes one block to ``/var/log/libvirt/qemu/<domain>.log`` each time it
starts a QEMU for the domain: a ``starting up libvirt version`` line, then the
command line, which for the receiving end of a migration holds ``-incoming``.
Inside a sandbox host that directory is the host's own ``log/qemu``. Counting
those blocks tells how many migrations libvirt really began towards a host,
whatever the operator logged or posted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from vmtestbed.daemons import Daemon

_START = re.compile(r"^(\S+ \S+): starting up libvirt version", re.MULTILINE)
_ENDED = re.compile(r"^\S+ \S+: shutting down, reason=(\w+)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class QemuStart:
    host: str
    at: str  # libvirt's own timestamp
    incoming: bool  # the receiving end of a migration
    ended: str | None  # libvirt's reason, once this QEMU shut down (destroyed, migrated, failed…)


def qemu_starts(daemon: Daemon, domain: str) -> list[QemuStart]:
    """Every QEMU that ``daemon``'s libvirtd started for ``domain``, oldest first."""
    path = daemon.root / "log" / "qemu" / f"{domain}.log"
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    marks = list(_START.finditer(text))
    starts = []
    for index, mark in enumerate(marks):
        block = text[mark.start():marks[index + 1].start() if index + 1 < len(marks) else len(text)]
        ended = _ENDED.search(block)
        starts.append(QemuStart(host=daemon.name, at=mark.group(1),
                                incoming=bool(re.search(r"^-incoming ", block, re.MULTILINE)),
                                ended=ended.group(1) if ended else None))
    return starts


def incoming_migrations(hosts: Iterable[Daemon], domain: str) -> int:
    """Migrations of ``domain`` that libvirt began on any of ``hosts``, by its own log."""
    return sum(1 for host in hosts for start in qemu_starts(host, domain) if start.incoming)
