"""Host flavours: which libvirt and QEMU a test-bed host runs.

A fleet is never one version: hosts are upgraded one at a time, so VMs cross
between an older and a newer libvirt and QEMU in both directions. A test-bed
host is only processes in namespaces, so it can run its daemons from a root
filesystem of another Debian release than the machine's own:

- ``current``: Debian 13 (trixie) with trixie-backports, built with mmdebstrap
  and run with chroot (libvirt 12.9, QEMU 11.1). The default for every tier.
- ``previous``: the machine's own stack, Debian 12 with bookworm-backports as
  ``scripts/bootstrap`` installs it (libvirt 11.3, QEMU 10.0). libvirt 11.3 is
  one of the releases whose daemon crashes on a post-copy resume.

A root is built once and cached under ``~/.cache/vmmigration/host-roots/``,
keyed by its suites, its package list and the exact versions pinned here, so
a new pin builds a new root and an old root is never patched in place. The
versions actually installed are written beside it (``versions.json``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("VMMIGRATION_CACHE", Path.home() / ".cache" / "vmmigration"))
ROOTS = CACHE / "host-roots"
DEFAULT_ENV = "VMMIGRATION_HOST_FLAVOUR"
# Bump to rebuild every root (a change to how roots are made, not what goes in).
RECIPE = 1


class RootError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Flavour:
    name: str
    summary: str
    # None: the machine's own binaries, no root of its own.
    suite: str | None = None
    extra_suites: tuple[str, ...] = ()
    default_release: str | None = None
    # Package -> the exact version wanted ("" takes what the suites offer).
    packages: tuple[tuple[str, str], ...] = ()

    @property
    def own_root(self) -> bool:
        return self.suite is not None

    @property
    def key(self) -> str:
        text = json.dumps([RECIPE, self.suite, self.extra_suites, self.default_release,
                           self.packages])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def path(self) -> Path | None:
        return ROOTS / f"{self.name}-{self.key}" if self.own_root else None


FLAVOURS: dict[str, Flavour] = {
    "current": Flavour(
        name="current",
        summary="Debian 13 with trixie-backports: libvirt 12.9, QEMU 11.1 (from its own root)",
        suite="trixie",
        extra_suites=("trixie-backports",),
        default_release="trixie-backports",
        packages=(
            ("libvirt-daemon", "12.9.0-1~bpo13+1"),
            ("libvirt-daemon-driver-qemu", "12.9.0-1~bpo13+1"),
            ("libvirt-daemon-driver-storage", "12.9.0-1~bpo13+1"),
            ("libvirt-clients", "12.9.0-1~bpo13+1"),
            ("qemu-system-x86", "1:11.1.3+ds-2~bpo13+1"),
            ("qemu-utils", "1:11.1.3+ds-2~bpo13+1"),
            # sshd and ssh for qemu+ssh:// (the target's sshd runs virt-ssh-helper;
            # a source's libvirtd runs ssh for a peer-to-peer migration).
            ("openssh-server", ""),
            ("openssh-client", ""),
            ("iproute2", ""),
        ),
    ),
    "previous": Flavour(
        name="previous",
        summary="Debian 12 with bookworm-backports: libvirt 11.3, QEMU 10.0 (the machine's own)",
    ),
}
DEFAULT = "current"


def default_flavour() -> str:
    name = os.environ.get(DEFAULT_ENV, DEFAULT)
    flavour(name)
    return name


def flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise RootError(f"unknown host flavour {name!r}: choose one of "
                        f"{', '.join(sorted(FLAVOURS))}") from None


def ensure(name: str) -> Path | None:
    """The root ``name`` runs from (built now if it is not cached), or None for the machine's."""
    wanted = flavour(name)
    path = wanted.path
    if path is None:
        return None
    if (path / "versions.json").exists():
        return path
    ROOTS.mkdir(parents=True, exist_ok=True)
    with open(ROOTS / ".lock", "w") as lock:
        # One build at a time; the one that waited finds the other's root.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "versions.json").exists():
            _build(wanted, path)
    return path


def _build(wanted: Flavour, path: Path) -> None:
    assert wanted.suite is not None
    mirror = _mirror()
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    include = ",".join(f"{pkg}={version}" if version else pkg for pkg, version in wanted.packages)
    sources = [f"deb {mirror} {suite} main" for suite in (wanted.suite, *wanted.extra_suites)]
    command = ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={include}",
               "--dpkgopt=path-exclude=/usr/share/doc/*",
               "--dpkgopt=path-exclude=/usr/share/man/*",
               "--dpkgopt=path-exclude=/usr/share/locale/*"]
    if wanted.default_release:
        command.append(f"--aptopt=APT::Default-Release \"{wanted.default_release}\";")
    done = subprocess.run([*command, wanted.suite, str(partial), *sources],
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RootError(f"building the {wanted.name} host root failed (mmdebstrap exit "
                        f"{done.returncode}); if a pinned version left the archive, update the "
                        f"pins in vmtestbed/roots.py:\n{done.stderr[-3000:]}")
    # Mount points the daemons' namespaces bind over (see vmtestbed.daemons).
    for sub in ("etc/libvirt", "etc/pki", "root/.ssh", "var/lib/libvirt", "var/log/libvirt",
                "var/cache/libvirt"):
        (partial / sub).mkdir(parents=True, exist_ok=True)
    query = subprocess.run(["chroot", str(partial), "dpkg-query", "-W", "-f",
                            "${Package}\t${Version}\n"], capture_output=True, text=True,
                           check=True)
    versions = dict(line.split("\t", 1) for line in query.stdout.splitlines() if "\t" in line)
    (partial / "versions.json").write_text(json.dumps(
        {"flavour": wanted.name, "summary": wanted.summary, "packages": versions}, indent=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)


def _mirror() -> str:
    """The Debian mirror this machine's apt sources already trust (never written down here)."""
    for file in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uri = ""
        for line in file.read_text().splitlines():
            if line.startswith("URIs:"):
                uri = line.split()[1]
            if line.startswith("Suites:") and uri and "bookworm" in line.split():
                return uri
    for file in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if file.exists():
            for line in file.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == "bookworm":
                    return parts[1]
    raise RootError("cannot find the Debian mirror in this machine's apt sources")


def versions(name: str) -> dict[str, str]:
    """The packages a flavour's root holds (empty for the machine's own)."""
    path = flavour(name).path
    if path is None or not (path / "versions.json").exists():
        return {}
    packages = json.loads((path / "versions.json").read_text()).get("packages", {})
    return {str(k): str(v) for k, v in packages.items()}
