"""Independent libvirt daemons on one machine.

Each daemon runs in its own network namespace (see :mod:`vmtestbed.network`)
and its own mount namespace, where private directories are bind-mounted over
libvirt's fixed paths (/etc/libvirt, /run/libvirt, /root/.ssh, …), so two
daemons share nothing but the kernel and the shared storage directory. Each
has its own address and its own host UUID: libvirt refuses to migrate to a
host whose UUID equals its own. An sshd runs beside each libvirtd, in the
same two namespaces, for qemu+ssh://.

Each also listens for TLS (qemu+tls://), with certificates from one CA per
sandbox: a private /etc/pki in its namespace holds its server certificate
(for its loopback address) and a client certificate at libvirt's default
paths, which is what a source host presents to the target in a peer-to-peer
migration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from vmtestbed.pki import ensure_ca, issue

# Private directory name -> the path libvirtd sees it at inside its namespace.
MOUNTS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    # libvirt's default TLS paths (CA/, libvirt/, libvirt/private/), as on a real host.
    "pki": "/etc/pki",
    # The host's own SSH client identity and known hosts, which its libvirtd
    # uses to reach a peer over qemu+ssh:// in a peer-to-peer migration.
    "dotssh": "/root/.ssh",
}
# Inside each host's namespace this path is its own, so a disk here is a
# non-shared disk that the other hosts cannot see.
LOCAL_IMAGES = "/var/lib/libvirt/images"
CAPS_CACHE = Path("qemu/capabilities")
# Where libvirt looks under /etc/pki (or under a client's pkipath, flattened).
CA_CERT = "CA/cacert.pem"
SERVER_CERT, SERVER_KEY = "libvirt/servercert.pem", "libvirt/private/serverkey.pem"
CLIENT_CERT, CLIENT_KEY = "libvirt/clientcert.pem", "libvirt/private/clientkey.pem"


class DaemonError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Daemon:
    name: str
    index: int
    address: str
    root: Path
    # The host's network namespace, and its address on the migration network
    # (where QEMU's stream goes); None for a host on the machine's own network.
    netns: str | None = None
    migration_host: str | None = None
    # The flavour's root filesystem its libvirtd, sshd and QEMU run from (see
    # vmtestbed.roots); None runs the machine's own binaries.
    root_fs: Path | None = None
    flavour: str = "previous"
    # Paths outside the host's own directories that its QEMU must see at the
    # same place (the sandbox's shared storage and guest image), bound into
    # its root filesystem.
    shared_paths: tuple[Path, ...] = ()

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def tls_uri(self) -> str:
        return f"qemu+tls://{self.address}/system"

    @property
    def ssh_uri(self) -> str:
        return f"qemu+ssh://root@{self.address}/system"

    @property
    def ca_dir(self) -> Path:
        """The CA every host of this sandbox trusts (beside the hosts' own directories)."""
        return self.root.parent / "ca"

    @property
    def unix_uri(self) -> str:
        return f"qemu+unix:///system?socket={self.root / 'run' / 'libvirt-sock'}"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "libvirtd.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "log" / "libvirtd.log"

    @property
    def host_uuid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vmmigration-sandbox:{self.root}"))

    @property
    def migration_ports(self) -> tuple[int, int]:
        low = 49152 + 200 * self.index
        return low, low + 199


def write_tls(daemon: Daemon) -> None:
    """The host's private /etc/pki: the CA, its server certificate and its client certificate."""
    pki = daemon.root / "pki"
    shutil.rmtree(pki, ignore_errors=True)
    ca = ensure_ca(daemon.ca_dir)
    (pki / "CA").mkdir(parents=True)
    shutil.copyfile(ca.cert, pki / CA_CERT)
    issue(ca, subject=f"/O=vmmigration sandbox/CN={daemon.address}", cert=pki / SERVER_CERT,
          key=pki / SERVER_KEY, alt_names=(f"IP:{daemon.address}",))
    issue(ca, subject=f"/O=vmmigration sandbox/CN={daemon.name}-{daemon.address}",
          cert=pki / CLIENT_CERT, key=pki / CLIENT_KEY)


def write_config(daemon: Daemon) -> None:
    write_tls(daemon)
    etc = daemon.root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "libvirtd.conf").write_text(
        f"""# Written by the vmmigration sandbox; rewritten at every start.
listen_tls = 1
listen_tcp = 1
listen_addr = "{daemon.address}"
auth_tcp = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
host_uuid = "{daemon.host_uuid}"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""
    )
    low, high = daemon.migration_ports
    # No systemd, virtlogd or cgroup delegation here: QEMU runs as root,
    # writes its own chardev files and stays in libvirtd's cgroup.
    (etc / "qemu.conf").write_text(
        f"""# Written by the vmmigration sandbox; rewritten at every start.
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_address = "{'0.0.0.0' if daemon.netns else daemon.address}"
migration_host = "{daemon.migration_host or daemon.address}"
migration_port_min = {low}
migration_port_max = {high}
"""
    )


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie). The command line is no test: it reads
    empty for an instant while the process execs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_pid(pid: int, *, must_contain: bytes, grace_seconds: float = 10.0) -> bool:
    """Stop ``pid`` only if its command line proves it is ours."""
    if must_contain not in _cmdline(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and must_contain in _cmdline(pid):
        time.sleep(0.1)
        _reap(pid)
    if must_contain in _cmdline(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        _reap(pid)
    return True


def _reap(pid: int) -> None:
    # A daemon this very process started is its child; collect it so it does
    # not linger as a zombie whose /proc entry still looks alive.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def qemu_pids(daemon: Daemon) -> list[int]:
    pids = []
    for pid_file in (daemon.root / "run" / "qemu").glob("*.pid"):
        pid = _read_pid(pid_file)
        if pid and b"qemu-system" in _cmdline(pid):
            pids.append(pid)
    return pids


def stop(daemon: Daemon) -> list[str]:
    """Stop this daemon and the QEMU processes it started, by PID. Returns what was stopped."""
    stopped = []
    pid = _read_pid(daemon.pid_file)
    if pid and _stop_pid(pid, must_contain=str(daemon.pid_file).encode()):
        stopped.append(f"libvirtd {pid}")
    for qemu in qemu_pids(daemon):
        # QEMU outlives its libvirtd; the guest's name is in its command line.
        if _stop_pid(qemu, must_contain=b"qemu-system", grace_seconds=2.0):
            stopped.append(f"qemu {qemu}")
    return stopped


def daemon_pid(daemon: Daemon) -> int | None:
    """This host's libvirtd, if it runs (and is ours: its command line names its PID file)."""
    pid = _read_pid(daemon.pid_file)
    return pid if pid is not None and str(daemon.pid_file).encode() in _cmdline(pid) else None


def kill(daemon: Daemon, *, signal_number: int = signal.SIGKILL) -> int | None:
    """Signal this daemon's libvirtd alone; its QEMU processes run on. A fault for the tests."""
    pid = daemon_pid(daemon)
    if pid is None:
        return None
    os.kill(pid, signal_number)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and _alive(pid):
        _reap(pid)
        time.sleep(0.05)
    _reap(pid)
    # A killed libvirtd leaves its PID file; a new one refuses to start beside it.
    daemon.pid_file.unlink(missing_ok=True)
    return pid


def qemu_pid(daemon: Daemon, domain: str) -> int | None:
    """The QEMU process that runs ``domain`` on this host, if any."""
    pid = _read_pid(daemon.root / "run" / "qemu" / f"{domain}.pid")
    return pid if pid and b"qemu-system" in _cmdline(pid) and _alive(pid) else None


def reset_state(daemon: Daemon) -> None:
    """Forget everything a previous run left, except the QEMU capabilities cache."""
    for part in ("run", "lib", "log", "etc"):
        shutil.rmtree(daemon.root / part, ignore_errors=True)
    for part in MOUNTS:
        (daemon.root / part).mkdir(parents=True, exist_ok=True)
    (daemon.root / "lib" / "images").mkdir(parents=True, exist_ok=True)


def _mount_script(daemon: Daemon) -> str:
    """The shell that builds the host's mount namespace and execs its libvirtd.

    On the machine's own binaries, the host's private directories are bound
    over libvirt's fixed paths. From a flavour's root, the same binds go into
    that root, with the kernel's file systems, a private /run, /tmp and the
    sandbox's shared paths beside them, and libvirtd is started chrooted
    there: everything it starts (QEMU, ssh for a peer) is then the flavour's.
    """
    root = daemon.root_fs
    prefix = "" if root is None else str(root)
    steps: list[str] = []
    if root is not None:
        steps += [f"mount --rbind /dev '{root}/dev'", f"mount --rbind /proc '{root}/proc'",
                  f"mount --rbind /sys '{root}/sys'",
                  f"mount -t tmpfs -o mode=755 tmpfs '{root}/run'",
                  f"mkdir -p '{root}/run/libvirt' '{root}/run/sshd'",
                  f"mount --bind /tmp '{root}/tmp'"]
        for path in daemon.shared_paths:
            steps += [f"mkdir -p '{root}{path}'", f"mount --bind '{path}' '{root}{path}'"]
        # The host's own directory at its own path too: the PID file, its
        # logs and the sshd set-up are named by machine paths.
        steps += [f"mkdir -p '{root}{daemon.root}'",
                  f"mount --bind '{daemon.root}' '{root}{daemon.root}'"]
    steps += [f"mkdir -p '{prefix}{target}' && mount --bind '{daemon.root / part}' '{prefix}{target}'"
              for part, target in MOUNTS.items()]
    chroot = "" if root is None else f"chroot '{root}' "
    steps.append(f"exec {chroot}/usr/sbin/libvirtd --listen --pid-file '{daemon.pid_file}'")
    return " && ".join(steps)


def start(daemon: Daemon) -> int:
    """Start libvirtd for ``daemon`` in its own mount namespace. Returns its PID."""
    if daemon.root_fs is None:
        for target in MOUNTS.values():
            Path(target).mkdir(parents=True, exist_ok=True)
    write_config(daemon)
    script = _mount_script(daemon)
    out = open(daemon.root / "daemon.out", "ab")
    # ip netns exec, unshare and sh all exec, so the PID we get is libvirtd's own.
    netns = ["ip", "netns", "exec", daemon.netns] if daemon.netns else []
    process = subprocess.Popen(
        [*netns, "unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    return process.pid


def wait_ready(daemon: Daemon, *, pid: int, timeout_seconds: float = 90.0) -> None:
    """Wait until the daemon answers on its TCP address, or raise with its log."""
    # Imported here so that this module stays usable for stop/cleanup even
    # where libvirt-python is missing.
    from vmtestbed.hosts import Host
    from vmmigration.core.errors import HostUnreachable

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            _reap(pid)
            raise DaemonError(f"libvirtd for {daemon.name} exited at start:\n{_tail(daemon)}")
        try:
            with Host(daemon.uri) as host:
                answered = host.host_uuid()
        except HostUnreachable:
            time.sleep(0.2)
            continue
        if answered != daemon.host_uuid:
            # Another test bed's daemon holds this address (two sandboxes on one
            # subnet): talking to it would put our guests in its hosts.
            raise DaemonError(f"{daemon.uri} is answered by another libvirtd (host UUID "
                              f"{answered}, not {daemon.host_uuid}): is another sandbox "
                              f"using subnet {daemon.address}?")
        return
    raise DaemonError(f"libvirtd for {daemon.name} did not answer in {timeout_seconds}s:\n{_tail(daemon)}")


def _tail(daemon: Daemon) -> str:
    text = ""
    for path in (daemon.root / "daemon.out", daemon.log_file):
        with contextlib.suppress(OSError):
            text += f"--- {path}\n" + "\n".join(path.read_text().splitlines()[-20:]) + "\n"
    return text


def copy_capabilities(*, source: Daemon, target: Daemon) -> int:
    """Seed ``target``'s QEMU capabilities cache from ``source``'s (8 s of probing saved)."""
    src = source.root / "cache" / CAPS_CACHE
    dst = target.root / "cache" / CAPS_CACHE
    dst.mkdir(parents=True, exist_ok=True)
    copied = 0
    for item in src.glob("*.xml"):
        shutil.copy2(item, dst / item.name)
        copied += 1
    return copied
