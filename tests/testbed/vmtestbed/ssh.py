"""An sshd per test-bed host, for libvirt's qemu+ssh:// transport.

Each sshd runs in its host's network and mount namespaces (entered from the
host's libvirtd), so a session it starts reaches *that* host's libvirt socket
through ``virt-ssh-helper``, as on a real host. Keys are made at every ``up``:

- the operator's client key and a known_hosts naming every host (what a
  user puts in the Hypervisor's credentials Secret);
- per host a host key, and a client key of its own in its private
  /root/.ssh, with a known_hosts of its peers: the source libvirtd uses it
  to reach the target in a peer-to-peer migration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from vmtestbed.daemons import Daemon, _alive, _cmdline, _read_pid

SSHD = "/usr/sbin/sshd"


@dataclasses.dataclass(frozen=True)
class ClientKey:
    """The operator's side: what goes into a Hypervisor's credentials Secret."""

    private_key: Path
    known_hosts: Path

    def secret_data(self) -> dict[str, bytes]:
        return {"ssh-privatekey": self.private_key.read_bytes(),
                "known_hosts": self.known_hosts.read_bytes()}


def _keygen(path: Path, comment: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    os.chmod(path, 0o600)
    return Path(f"{path}.pub").read_text().strip()


def _ssh_dir(daemon: Daemon) -> Path:
    return daemon.root / "ssh"


def pid_file(daemon: Daemon) -> Path:
    return daemon.root / "run" / "sshd.pid"


def prepare(hosts: list[Daemon], *, client_dir: Path) -> ClientKey:
    """Write every host's sshd set-up and the operator's key; return the latter."""
    shutil.rmtree(client_dir, ignore_errors=True)
    client_dir.mkdir(parents=True, mode=0o700)
    operator_pub = _keygen(client_dir / "id_ed25519", "vmmigration-operator")
    host_keys: dict[str, str] = {}
    host_clients: list[str] = []
    for daemon in hosts:
        ssh = _ssh_dir(daemon)
        shutil.rmtree(ssh, ignore_errors=True)
        ssh.mkdir(parents=True, mode=0o700)
        public = _keygen(ssh / "ssh_host_ed25519_key", f"host {daemon.name}")
        host_keys[daemon.address] = " ".join(public.split()[:2])
        dotssh = daemon.root / "dotssh"
        shutil.rmtree(dotssh, ignore_errors=True)
        dotssh.mkdir(parents=True, mode=0o700)
        host_clients.append(_keygen(dotssh / "id_ed25519", f"libvirtd@{daemon.name}"))
    known = "".join(f"{address} {key}\n" for address, key in host_keys.items())
    for daemon in hosts:
        ssh = _ssh_dir(daemon)
        (ssh / "authorized_keys").write_text("\n".join([operator_pub, *host_clients]) + "\n")
        (daemon.root / "dotssh" / "known_hosts").write_text(known)
        (ssh / "sshd_config").write_text(
            f"""# Written by the vmmigration test bed at every start.
ListenAddress {daemon.address}
HostKey {ssh / 'ssh_host_ed25519_key'}
AuthorizedKeysFile {ssh / 'authorized_keys'}
PidFile {pid_file(daemon)}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
"""
        )
    (client_dir / "known_hosts").write_text(known)
    return ClientKey(private_key=client_dir / "id_ed25519", known_hosts=client_dir / "known_hosts")


def running(daemon: Daemon) -> int | None:
    pid = _read_pid(pid_file(daemon))
    return pid if pid is not None and b"sshd" in _cmdline(pid) and _alive(pid) else None


def start(daemon: Daemon, *, libvirtd_pid: int) -> None:
    """Start the host's sshd inside its libvirtd's namespaces, unless it already runs."""
    if running(daemon) is not None:
        return
    # sshd refuses to start without its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = daemon.root / "log" / "sshd.log"
    # -r: the root libvirtd runs in, so a flavour's host runs its flavour's sshd.
    subprocess.run(["nsenter", "-t", str(libvirtd_pid), "-m", "-n", "-r", SSHD,
                    "-f", str(_ssh_dir(daemon) / "sshd_config"), "-E", str(log)], check=True,
                   capture_output=True)
    deadline = time.monotonic() + 10.0
    while running(daemon) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd for {daemon.name} did not start: "
                               f"{log.read_text(errors='replace')[-1000:] if log.exists() else ''}")
        time.sleep(0.05)


def stop(daemon: Daemon) -> list[str]:
    pid = running(daemon)
    if pid is None:
        return []
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return [f"sshd {pid}"]
