"""Storage volumes and pools of one libvirt host, and its sparse volume streams.

What :mod:`vmmigration.service.carrier` needs to carry a shut-off domain's disks:
facts about volumes and pools, making and removing volumes, the markers beside a
partial copy, and reading or writing a volume's bytes through libvirt (no SSH, no
shared filesystem), holes sent as holes.
"""

from __future__ import annotations

import contextlib
import json
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from vmmigration.adapters.libvirt.errors import mapped, translated
from vmmigration.core.carry import Pool, Volume, marker_name
from vmmigration.core.errors import VirtError

_KINDS = {libvirt.VIR_STORAGE_VOL_FILE: "file", libvirt.VIR_STORAGE_VOL_BLOCK: "block",
          libvirt.VIR_STORAGE_VOL_DIR: "dir", libvirt.VIR_STORAGE_VOL_NETWORK: "network",
          libvirt.VIR_STORAGE_VOL_NETDIR: "netdir"}
# libvirt's largest stream message payload: a bigger read is split anyway.
CHUNK_BYTES = 262120


class Download:
    """A volume's bytes in order: ``read()`` gives data, an int (a hole's length) or b"" at the end."""

    def __init__(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> None:
        self._stream = conn.newStream(0)
        with translated():
            vol.download(self._stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)

    def read(self) -> bytes | int:
        with translated():
            got = self._stream.recvFlags(CHUNK_BYTES, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
            if got == -3:
                return int(self._stream.recvHole(0))
        if isinstance(got, int):
            raise VirtError(f"unexpected answer {got} from a blocking stream")
        return bytes(got)

    def finish(self) -> None:
        with translated():
            self._stream.finish()

    def abort(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()


class Upload:
    """Writes a volume from its first byte: ``write()`` data, ``hole()`` for empty space."""

    def __init__(self, conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> None:
        self._stream = conn.newStream(0)
        with translated():
            vol.upload(self._stream, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        with translated():
            while view:
                sent = self._stream.send(bytes(view))
                if sent <= 0:
                    raise VirtError(f"the upload stream took {sent} bytes")
                view = view[sent:]

    def hole(self, length: int) -> None:
        with translated():
            self._stream.sendHole(length, 0)

    def finish(self) -> None:
        with translated():
            self._stream.finish()

    def abort(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()


class Volumes:
    """The storage verbs of one connection."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self._conn = conn

    def refresh(self) -> None:
        """Let every active pool see files made behind libvirt's back (a lookup by path
        only knows what the last refresh found)."""
        with translated():
            pools = self._conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        for pool in pools:
            with contextlib.suppress(libvirt.libvirtError):
                pool.refresh(0)

    def _lookup(self, path: str) -> libvirt.virStorageVol | None:
        try:
            return self._conn.storageVolLookupByPath(path)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise mapped(error) from error

    def holds(self, path: str) -> bool:
        """Whether a pool here holds ``path`` (as of the last refresh)."""
        return self._lookup(path) is not None

    def volume(self, path: str) -> Volume | None:
        """The volume at ``path``, or None when no pool here holds it."""
        vol = self._lookup(path)
        if vol is None:
            return None
        with translated():
            kind, capacity, allocation = vol.info()
            physical = vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
            pool = vol.storagePoolLookupByVolume().name()
            root = ET.fromstring(vol.XMLDesc(0))
        fmt = root.find("./target/format")
        return Volume(
            path=vol.path(), pool=pool, name=vol.name(),
            format=fmt.get("type", "raw") if fmt is not None else "raw",
            capacity_bytes=int(capacity), physical_bytes=int(physical), allocation_bytes=int(allocation),
            backing=root.findtext("./backingStore/path") or None,
            kind=_KINDS.get(kind, str(kind)),
            mtime=root.findtext("./target/timestamps/mtime") or "")

    def pools(self) -> dict[str, Pool]:
        with translated():
            listed = self._conn.listAllStoragePools(0)
        found = {}
        for pool in listed:
            with translated():
                state, _capacity, _allocation, available = pool.info()
                root = ET.fromstring(pool.XMLDesc(0))
            found[pool.name()] = Pool(
                name=pool.name(), path=root.findtext("./target/path") or "",
                available_bytes=int(available), active=state == libvirt.VIR_STORAGE_POOL_RUNNING,
                kind=root.get("type", ""))
        return found

    def names(self, pool: str) -> set[str]:
        with translated():
            return set(self._conn.storagePoolLookupByName(pool).listVolumes())

    def in_use(self) -> set[str]:
        """Every path a domain defined here names as a disk or backing file."""
        with translated():
            listed = self._conn.listAllDomains(0)
        paths: set[str] = set()
        for dom in listed:
            try:
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError:
                continue  # gone between the listing and the look
            for source in ET.fromstring(xml).iter("source"):
                if source.get("file") or source.get("dev"):
                    paths.add(source.get("file") or source.get("dev") or "")
                elif source.get("pool") and source.get("volume"):
                    with contextlib.suppress(libvirt.libvirtError):
                        pool = self._conn.storagePoolLookupByName(source.get("pool"))
                        paths.add(pool.storageVolLookupByName(source.get("volume")).path())
            for path in ET.fromstring(xml).iter("path"):
                if path.text:
                    paths.add(path.text)
        return paths

    def create(self, *, pool: str, name: str, length: int) -> str:
        """A raw, fully sparse file of ``length`` bytes: every byte reads as zero until written,
        so a sparse upload over it reproduces the source exactly. Returns its path."""
        with translated():
            made = self._conn.storagePoolLookupByName(pool).createXML(
                f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{length}</capacity>"
                "<allocation unit='bytes'>0</allocation><target><format type='raw'/></target></volume>",
                0)
            return str(made.path())

    def delete(self, path: str) -> None:
        vol = self._lookup(path)
        if vol is not None:
            with translated():
                vol.delete(0)

    def mark(self, *, pool: str, name: str, note: dict[str, Any]) -> None:
        """The marker beside ``name``: a small volume whose content says whose copy it is."""
        body = (json.dumps(note, sort_keys=True) + "\n").encode()
        path = self.create(pool=pool, name=marker_name(name), length=len(body))
        upload = self.upload(path)
        try:
            upload.write(body)
            upload.finish()
        except VirtError:
            upload.abort()
            raise

    def unmark(self, *, pool: str, name: str) -> None:
        try:
            vol = self._conn.storagePoolLookupByName(pool).storageVolLookupByName(marker_name(name))
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return  # no marker: nothing to do
            raise mapped(error) from error
        with translated():
            vol.delete(0)

    def download(self, path: str) -> Download:
        vol = self._lookup(path)
        if vol is None:
            raise VirtError(f"no volume at {path}")
        return Download(self._conn, vol)

    def upload(self, path: str) -> Upload:
        vol = self._lookup(path)
        if vol is None:
            raise VirtError(f"no volume at {path}")
        return Upload(self._conn, vol)

