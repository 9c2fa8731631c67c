"""The tiny guest: a distribution kernel plus a busybox initramfs, booted directly.

No disk image is needed. The initramfs holds busybox and ``memwriter``, a static
program that dirties memory at a rate given on the kernel command line, verifies
every page it rewrites, and prints a heartbeat to the serial console.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import lzma
import re
import shutil
import stat
import subprocess
from importlib import resources
from pathlib import Path
from xml.sax.saxutils import escape

BUSYBOX = Path("/bin/busybox")
EMULATOR = Path("/usr/bin/qemu-system-x86_64")

_INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "GUEST init up"
# A disk, when the domain has one: its first sector's printable text, so a test
# can tell which data a guest booted with (the driver is a module in the kernel's tree).
if [ -f /virtio_blk.ko ] && insmod /virtio_blk.ko 2>/dev/null; then
  sleep 1
  [ -b /dev/vda ] && echo "GUEST disk marker: $(head -c 64 /dev/vda | tr -cd 'A-Za-z0-9=_-')"
fi
/bin/memwriter
echo "GUEST memwriter exited with $?"
while true; do sleep 3600; done
"""

_HEARTBEAT = re.compile(rb"HB boot=(\w+) n=(\d+) pass=(\d+)")
# What a broken migration or a broken guest prints. Word boundaries keep
# "DEBUG" out, and "panic=" is the guest's own kernel command line.
# A soft lockup is the guest kernel saying its CPU made no progress for 20 s: what a
# post-copy whose pages wait for a cut link looks like from inside, not damage.
# stalls() reports those.
FAILURE = re.compile(rb"CORRUPTION|\bBUG\b(?!: soft lockup)|panic(?!=)")
_STALL = re.compile(rb"soft lockup")


class GuestBuildError(RuntimeError):
    """The guest's kernel, program or initramfs could not be made."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    boot: str
    count: int
    passes: int


def find_kernel(explicit: Path | None = None) -> Path:
    """The guest kernel: ``explicit`` (VMMIGRATION_GUEST_KERNEL), else the newest Debian kernel in /boot."""
    if explicit is not None:
        if not explicit.is_file():
            raise GuestBuildError(f"guest kernel {explicit} does not exist")
        return explicit
    candidates = sorted(glob.glob("/boot/vmlinuz-*"))
    if not candidates:
        raise GuestBuildError(
            "no guest kernel: install a Debian kernel package (scripts/bootstrap installs "
            "linux-image-cloud-amd64) or set VMMIGRATION_GUEST_KERNEL"
        )
    return Path(candidates[-1])


def build_image(*, into: Path, kernel: Path | None = None) -> GuestImage:
    """Make (or reuse) the kernel and initramfs under ``into``, keyed by their inputs."""
    source = resources.files("vmtestbed").joinpath("memwriter.c").read_bytes()
    kernel = find_kernel(kernel)
    block_driver = _block_driver(kernel)
    key = hashlib.sha256(source + _INIT_SCRIPT.encode() + str(kernel).encode()
                         + hashlib.sha256(block_driver).digest()).hexdigest()[:12]
    into.mkdir(parents=True, exist_ok=True)
    initrd = into / f"initrd-{key}.cpio"
    kernel_copy = into / f"vmlinuz-{key}"
    if not initrd.exists():
        program = into / f"memwriter-{key}"
        c_file = into / "memwriter.c"
        c_file.write_bytes(source)
        done = subprocess.run(
            ["gcc", "-static", "-O2", "-Wall", "-o", str(program), str(c_file)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise GuestBuildError(f"compiling memwriter failed: {done.stderr.strip()}")
        partial = initrd.with_suffix(".part")
        partial.write_bytes(
            _newc_archive(
                [
                    _Entry("dev", stat.S_IFDIR | 0o755),
                    _Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
                    _Entry("proc", stat.S_IFDIR | 0o755),
                    _Entry("sys", stat.S_IFDIR | 0o755),
                    _Entry("tmp", stat.S_IFDIR | 0o1777),
                    _Entry("bin", stat.S_IFDIR | 0o755),
                    _Entry("sbin", stat.S_IFDIR | 0o755),
                    _Entry("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes()),
                    _Entry("bin/memwriter", stat.S_IFREG | 0o755, program.read_bytes()),
                    _Entry("init", stat.S_IFREG | 0o755, _INIT_SCRIPT.encode()),
                    *([_Entry("virtio_blk.ko", stat.S_IFREG | 0o644, block_driver)] if block_driver else []),
                ]
            )
        )
        partial.rename(initrd)
    if not kernel_copy.exists():
        # A copy in the shared directory, so every host sees the same path.
        shutil.copyfile(kernel, kernel_copy)
    return GuestImage(kernel=kernel_copy, initrd=initrd)


def _block_driver(kernel: Path) -> bytes:
    """The kernel's virtio_blk module, uncompressed (busybox's insmod reads no xz), or
    nothing when its module tree is not installed: the guest then just sees no disk."""
    version = kernel.name.removeprefix("vmlinuz-")
    for found in sorted(Path("/lib/modules", version, "kernel/drivers/block").glob("virtio_blk.ko*")):
        data = found.read_bytes()
        return lzma.decompress(data) if found.suffix == ".xz" else data
    return b""


def disk_markers(serial_log: Path) -> list[str]:
    """What each boot of the guest read from its first disk (``GUEST disk marker: …``)."""
    if not serial_log.exists():
        return []
    return [m.group(1).decode() for m in re.finditer(rb"GUEST disk marker: ([A-Za-z0-9=_-]*)",
                                                     serial_log.read_bytes())]


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _newc_archive(entries: list[_Entry]) -> bytes:
    """A cpio "newc" archive, the format the kernel unpacks as an initramfs.

    Written here rather than with the cpio tool because it needs a device node
    (/dev/console) that an unprivileged build could not mknod.
    """
    out = bytearray()
    for ino, entry in enumerate([*entries, _Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = [
            ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, entry.rdev[0], entry.rdev[1],
            len(name), 0,
        ]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name
        out += b"\0" * (-len(out) % 4)
        out += entry.data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


@dataclasses.dataclass(frozen=True)
class GuestSpec:
    """What a test asks of a guest; the rest is fixed by the test bed."""

    name: str
    memory_mib: int = 128
    dirty_mib: int = 16
    dirty_rate_mib: int = 0
    heartbeat_ms: int = 250
    virt_type: str = "qemu"
    disks: tuple[Path, ...] = ()
    disk_format: str = "qcow2"
    cpu_features: tuple[str, ...] = ()


def domain_xml(*, spec: GuestSpec, image: GuestImage, serial_log: Path) -> str:
    cmdline = (
        "console=ttyS0 rdinit=/init quiet panic=0 "
        f"vmm.dirty_mib={spec.dirty_mib} vmm.dirty_rate_mib={spec.dirty_rate_mib} "
        f"vmm.hb_ms={spec.heartbeat_ms}"
    )
    features = "".join(
        f"<feature policy='require' name='{escape(f)}'/>" for f in spec.cpu_features
    )
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='{escape(spec.disk_format)}'/>"
        f"<source file='{escape(str(path))}'/><target dev='vd{chr(ord('a') + i)}' bus='virtio'/></disk>"
        for i, path in enumerate(spec.disks)
    )
    # The serial log is opened in append mode by the QEMU on each host, so the
    # source's and the target's output land in one file, in order.
    # on_reboot=destroy: a guest that reboots disappears, so a test cannot
    # mistake a rebooted guest for one that kept running.
    return f"""<domain type='{spec.virt_type}'>
  <name>{escape(spec.name)}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(image.kernel))}</kernel>
    <initrd>{escape(str(image.initrd))}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model>{features}</cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{EMULATOR}</emulator>
    {disks}
    <serial type='file'><source path='{escape(str(serial_log))}' append='on'/><target port='0'/></serial>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def heartbeats(serial_log: Path) -> list[Heartbeat]:
    if not serial_log.exists():
        return []
    return [
        Heartbeat(boot=m.group(1).decode(), count=int(m.group(2)), passes=int(m.group(3)))
        for m in _HEARTBEAT.finditer(serial_log.read_bytes())
    ]


def stalls(serial_log: Path) -> list[str]:
    """Lines of the serial log where the guest kernel reports its CPU stalled."""
    if not serial_log.exists():
        return []
    return [line.decode(errors="replace") for line in serial_log.read_bytes().splitlines()
            if _STALL.search(line)]


def failures(serial_log: Path) -> list[str]:
    """Lines of the serial log that show corruption, a kernel bug or a panic."""
    if not serial_log.exists():
        return []
    return [
        line.decode(errors="replace")
        for line in serial_log.read_bytes().splitlines()
        if FAILURE.search(line)
    ]
