"""Machine types: which of them a host's QEMU offers, read from libvirt's capabilities.

A machine type (``pc-i440fx-11.1``, ``pc-q35-10.0``) is the guest's virtual
hardware, fixed while it runs: libvirt expands the ``pc`` or ``q35`` a domain
was defined with into the newest versioned type of the QEMU that defined it.
An older QEMU does not know a newer type, and a newer QEMU drops the oldest,
so the incoming side of a migration cannot start. This is read before a move,
so the refusal names the type instead of a failed job.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from vmmigration.core.prechecks import MachineVerdict


def domain_machine(domain_xml: str) -> tuple[str, str]:
    """The domain's (arch, machine type), as its definition holds them."""
    os_type = ET.fromstring(domain_xml).find("./os/type")
    if os_type is None:
        return "", ""
    return os_type.get("arch", ""), os_type.get("machine", "")


def offered(capabilities_xml: str, *, arch: str) -> set[str]:
    """Every machine type (and alias) the host's capabilities list for ``arch``."""
    names: set[str] = set()
    for node in ET.fromstring(capabilities_xml).findall(f"./guest/arch[@name='{arch}']"):
        for machine in node.iter("machine"):
            if machine.text:
                names.add(machine.text.strip())
            if machine.get("canonical"):
                names.add(str(machine.get("canonical")))
    return names


def _family(machine: str) -> str:
    return re.sub(r"-\d+(\.\d+)*$", "", machine)


def _version_key(machine: str) -> tuple[int, ...]:
    found = re.search(r"-(\d+(?:\.\d+)*)$", machine)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def verdict(*, capabilities_xml: str, domain_xml: str) -> MachineVerdict:
    arch, machine = domain_machine(domain_xml)
    if not machine:
        return MachineVerdict(machine="")
    names = offered(capabilities_xml, arch=arch or "x86_64")
    if machine in names:
        return MachineVerdict(machine=machine)
    family = _family(machine)
    same = sorted((n for n in names if _family(n) == family and _version_key(n)),
                  key=_version_key, reverse=True)
    return MachineVerdict(machine=machine, supported=False, offered=tuple(same))
