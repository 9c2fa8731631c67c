"""A libvirt host with the verbs the test bed builds hosts and guests with.

The product's :class:`~vmmigration.adapters.libvirt.host.Host` carries only
what the operator and the CLI need; defining, starting and destroying guests
and making pools and volumes are the test bed's own work.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

import libvirt

from vmmigration.adapters.libvirt.errors import translated
from vmmigration.adapters.libvirt.host import Host as ProductHost
from vmmigration.core.errors import DomainNotFound, HostUnreachable, OperationInvalid, VirtError

__all__ = ["Host", "HostUnreachable", "VirtError"]


class Host(ProductHost):
    def define_domain(self, xml: str) -> str:
        with translated():
            return str(self._conn.defineXML(xml).name())

    def start(self, name: str) -> None:
        with translated():
            self._domain(name).create()

    def destroy(self, name: str) -> None:
        with translated():
            self._domain(name).destroy()

    def undefine(self, name: str) -> None:
        with translated():
            self._domain(name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)

    def remove_everywhere(self, name: str) -> None:
        """Destroy and undefine, ignoring a domain that is not there."""
        with contextlib.suppress(DomainNotFound, OperationInvalid):
            self.destroy(name)
        with contextlib.suppress(DomainNotFound, OperationInvalid):
            self.undefine(name)

    def ensure_dir_pool(self, *, name: str, path: str) -> None:
        with translated():
            try:
                pool = self._conn.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                pool = self._conn.storagePoolDefineXML(
                    f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
                )
            if not pool.isActive():
                pool.create(0)
            pool.setAutostart(1)

    def create_volume(self, *, pool: str, name: str, size_bytes: int) -> str:
        with translated():
            storage = self._conn.storagePoolLookupByName(pool)
            vol = storage.createXML(
                f"<volume><name>{name}</name><capacity unit='bytes'>{size_bytes}</capacity>"
                "<target><format type='qcow2'/></target></volume>",
                0,
            )
            return str(vol.path())

    def domain_capabilities_virt_types(self) -> set[str]:
        """Which virt types ('qemu', 'kvm') this host's QEMU offers."""
        with translated():
            caps = ET.fromstring(self._conn.getCapabilities())
        return {
            d.get("type", "")
            for d in caps.findall("./guest/arch[@name='x86_64']/domain")
        }
