"""The local test bed: N libvirt hosts, shared storage and the tiny guest.

Used by the tests, the demo and the benchmarks alike. ``up`` survives what a
killed run left behind; ``down`` stops only what the test bed started.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vmmigration.core.config import Settings
from vmtestbed import daemons, guest, roots, ssh
from vmtestbed.daemons import Daemon
from vmtestbed.network import Link, Network

SHARED_POOL = "shared"
LOCAL_POOL = "local"


class SandboxError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Sandbox:
    root: Path = dataclasses.field(default_factory=lambda: Settings.from_env().sandbox_dir)
    count: int = 2
    # Hosts are 10.240.<subnet>.2, .3, … (management) and 10.241.<subnet>.x
    # (migration), each in its own network namespace, so that two sandboxes
    # (the demo's and the tests') can run side by side.
    subnet: int = 0
    settings: Settings = dataclasses.field(default_factory=Settings.from_env)
    # Each host's flavour (vmtestbed.roots), by position; hosts past the end
    # take the last one, and none given takes VMMIGRATION_HOST_FLAVOUR
    # (default "current"). ``upgrade`` changes one host's for good.
    flavours: tuple[str, ...] = ()

    def flavour_of(self, index: int) -> str:
        return self._flavour(index, chosen=self._read_state().get("flavours", {}))

    def _flavour(self, index: int, *, chosen: dict[str, str]) -> str:
        """The host's flavour: ``chosen`` (the state file's, as upgrade left it), else the configured one."""
        if chosen.get(f"host{index + 1}"):
            return str(chosen[f"host{index + 1}"])
        if not self.flavours:
            return roots.default_flavour()
        return self.flavours[min(index, len(self.flavours) - 1)]

    @property
    def network(self) -> Network:
        return Network(subnet=self.subnet, count=self.count, state_file=self.root / "network.json")

    @property
    def hosts(self) -> list[Daemon]:
        net = self.network
        # The state file is read once here, not once per host and field.
        chosen = self._read_state().get("flavours", {})
        hosts = []
        for i in range(self.count):
            flavour = self._flavour(i, chosen=chosen)
            hosts.append(Daemon(
                name=f"host{i + 1}",
                index=i,
                address=net.address(i),
                root=self.root / "hosts" / f"host{i + 1}",
                netns=net.namespace(i),
                migration_host=net.address(i, "migration"),
                root_fs=roots.flavour(flavour).path,
                flavour=flavour,
                shared_paths=(self.root,),
            ))
        return hosts

    @property
    def ssh_client(self) -> ssh.ClientKey:
        """The operator's SSH key and known_hosts for every host (a Secret's content)."""
        client = self.root / "ssh-client"
        return ssh.ClientKey(private_key=client / "id_ed25519", known_hosts=client / "known_hosts")

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def images(self) -> Path:
        return self.shared / "images"

    @property
    def serial_dir(self) -> Path:
        return self.shared / "serial"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    # ---- life cycle -------------------------------------------------------

    def up(self) -> dict[str, object]:
        """Start every host from a clean state and return the status.

        If any step fails, the daemons already started are stopped again: a
        half-built test bed would otherwise hold its addresses (and the next
        run's "another test bed answers here" check would refuse to start).
        """
        self.down()
        try:
            return self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> dict[str, object]:
        for sub in (self.images, self.serial_dir, self.shared / "guest"):
            sub.mkdir(parents=True, exist_ok=True)
        chosen = {f"host{i + 1}": self.flavour_of(i) for i in range(self.count)}
        # A fresh start forgets what an earlier upgrade chose.
        self._write_state({"flavours": chosen})
        for name in set(chosen.values()):
            roots.ensure(name)
        for daemon in self.hosts:
            daemons.reset_state(daemon)
        self.network.up()
        ssh.prepare(self.hosts, client_dir=self.ssh_client.private_key.parent)
        # One host per flavour probes its QEMU; the others of that flavour copy its cache.
        firsts: dict[str, Daemon] = {}
        for daemon in self.hosts:
            firsts.setdefault(daemon.flavour, daemon)
        pids = {first.name: daemons.start(first) for first in firsts.values()}
        for first in firsts.values():
            daemons.wait_ready(first, pid=pids[first.name])
            self._prime_capabilities(first)
        rest = [d for d in self.hosts if d.name not in pids]
        for daemon in rest:
            daemons.copy_capabilities(source=firsts[daemon.flavour], target=daemon)
            pids[daemon.name] = daemons.start(daemon)
        for daemon in rest:
            daemons.wait_ready(daemon, pid=pids[daemon.name])
        for daemon in self.hosts:
            ssh.start(daemon, libvirtd_pid=pids[daemon.name])
        self._write_state({"flavours": chosen, "hosts": {d.name: pids[d.name] for d in self.hosts}})
        for daemon in self.hosts:
            self._define_pools(daemon)
        state = self._read_state()
        state["accel"] = self.accelerator()
        self._write_state(state)
        return self.status()

    def down(self) -> list[str]:
        stopped: list[str] = []
        for daemon in self.hosts:
            stopped += ssh.stop(daemon)
            stopped += daemons.stop(daemon)
        stopped += self.network.down()
        self.state_file.unlink(missing_ok=True)
        return stopped

    # ---- faults, for the fault-injection tests ----------------------------

    def kill_daemon(self, host: Daemon, *, graceful: bool = False) -> None:
        """Kill (or, if ``graceful``, stop) one host's libvirtd; its guests run on."""
        daemons.kill(host, signal_number=signal.SIGTERM if graceful else signal.SIGKILL)

    def freeze_daemon(self, host: Daemon, *, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) one host's libvirtd: it still accepts connections, as a
        hung daemon does, but answers nothing."""
        pid = daemons.daemon_pid(host)
        if pid is not None:
            os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def upgrade(self, host: Daemon, *, flavour: str) -> Daemon:
        """Restart ``host`` on another flavour with its state and storage kept, as a
        package upgrade and a daemon restart do on a real host. Its guests must be
        gone first (drain it): a running QEMU would stay on the old binaries."""
        roots.ensure(flavour)
        ssh.stop(host)
        daemons.stop(host)
        state = self._read_state()
        state.setdefault("flavours", {})[host.name] = flavour
        self._write_state(state)
        upgraded = self.hosts[host.index]
        self.start_daemon(upgraded)
        return upgraded

    def start_daemon(self, host: Daemon) -> None:
        """Start a stopped host's libvirtd on its existing state: it reconnects to its guests."""
        pid = daemons.start(host)
        daemons.wait_ready(host, pid=pid)
        ssh.start(host, libvirtd_pid=pid)
        state = self._read_state()
        state.setdefault("hosts", {})[host.name] = pid
        self._write_state(state)

    def kill_qemu(self, host: Daemon, domain: str) -> int | None:
        """SIGKILL the QEMU process of ``domain`` on ``host``: a crashed guest process."""
        pid = daemons.qemu_pid(host, domain)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        return pid

    # ---- the network's levers (see vmtestbed.network) -----------------------

    def shape(self, host: Daemon, *, rate_mbit: float | None, link: Link = "migration") -> None:
        """Limit ``host``'s link to ``rate_mbit`` each way; None lifts the limit."""
        self.network.shape(host.index, link=link, rate_mbit=rate_mbit)

    def cut_link(self, host: Daemon, *, link: Link = "migration") -> None:
        """Drop everything on ``host``'s link (both ways), as a pulled cable."""
        self.network.cut(host.index, link=link)

    def reset_link(self, host: Daemon, *, link: Link = "migration") -> None:
        """Cut ``host``'s link so its TCP connections fail at once, with a reset each way."""
        self.network.reset(host.index, link=link)

    def lose(self, host: Daemon, *, percent: float, link: Link = "migration") -> None:
        """Drop ``percent`` of packets each way on ``host``'s link."""
        self.network.loss(host.index, percent=percent, link=link)

    def cut_from_operator(self, host: Daemon) -> None:
        """Cut the management path between the operator (root namespace) and ``host``."""
        self.network.cut_from_operator(host.index)

    def partition(self, a: Daemon, b: Daemon) -> None:
        """``a`` and ``b`` cannot reach each other; the operator still reaches both."""
        self.network.partition(a.index, b.index)

    def heal(self, host: Daemon | None = None) -> None:
        """Undo every link fault and shaping on ``host`` (or on every host)."""
        self.network.restore(None if host is None else host.index)

    def status(self) -> dict[str, object]:
        from vmtestbed.hosts import Host
        from vmmigration.core.errors import HostUnreachable

        state = self._read_state()
        hosts = []
        for daemon in self.hosts:
            entry: dict[str, object] = {
                "name": daemon.name,
                "uri": daemon.uri,
                "ssh_uri": daemon.ssh_uri,
                "migration_address": daemon.migration_host,
                "netns": daemon.netns,
                "flavour": daemon.flavour,
                "pid": state.get("hosts", {}).get(daemon.name),
            }
            try:
                with Host(daemon.uri) as host:
                    entry["up"] = True
                    entry["domains"] = [f"{d.name} ({d.state.value})" for d in host.domains()]
            except HostUnreachable:
                entry["up"] = False
            hosts.append(entry)
        return {"root": str(self.root), "accel": state.get("accel"), "hosts": hosts}

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))

    def _prime_capabilities(self, daemon: Daemon) -> None:
        from vmtestbed.hosts import Host

        # Asking for the guest capabilities makes libvirtd probe QEMU now, so
        # the cache is complete before it is copied to the other hosts.
        with Host(daemon.uri) as host:
            host.domain_capabilities_virt_types()

    def _define_pools(self, daemon: Daemon) -> None:
        from vmtestbed.hosts import Host

        with Host(daemon.uri) as host:
            host.ensure_dir_pool(name=SHARED_POOL, path=str(self.images))
            host.ensure_dir_pool(name=LOCAL_POOL, path=daemons.LOCAL_IMAGES)

    # ---- guests -----------------------------------------------------------

    def image(self) -> guest.GuestImage:
        return guest.build_image(into=self.shared / "guest", kernel=self.settings.guest_kernel)

    def serial_log(self, name: str) -> Path:
        return self.serial_dir / f"{name}.log"

    def accelerator(self) -> str:
        """'kvm' if a Linux guest really boots under KVM here, else 'tcg'.

        /dev/kvm existing is not enough: on some machines a firmware-only guest
        runs under KVM while a Linux kernel hangs early. So boot the real guest
        once and wait for its heartbeat. The answer is cached per kernel and QEMU.
        """
        if self.settings.accel in ("kvm", "tcg"):
            return self.settings.accel
        state = self._read_state()
        if state.get("accel"):
            return str(state["accel"])
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "tcg"
        from vmtestbed.hosts import Host

        first = self.hosts[0]
        with Host(first.uri) as host:
            if "kvm" not in host.domain_capabilities_virt_types():
                return "tcg"
        cache = self.root.parent / "accel.json"
        key = f"{guest.find_kernel(self.settings.guest_kernel)}|{_qemu_version()}"
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        if key in known:
            return str(known[key])
        spec = guest.GuestSpec(name="vmm-kvm-probe", virt_type="kvm", memory_mib=96)
        try:
            self.boot(spec, host=first, timeout_seconds=20.0)
            verdict = "kvm"
        except SandboxError:
            verdict = "tcg"
        finally:
            with Host(first.uri) as host:
                host.remove_everywhere(spec.name)
        known[key] = verdict
        cache.write_text(json.dumps(known, indent=2))
        return verdict

    def guest_spec(self, name: str, **overrides: object) -> guest.GuestSpec:
        virt = "kvm" if self.accelerator() == "kvm" else "qemu"
        return guest.GuestSpec(name=name, virt_type=virt, **overrides)  # type: ignore[arg-type]

    def define(self, spec: guest.GuestSpec, *, host: Daemon) -> Path:
        """Define the guest on ``host`` (shut off). Returns its serial log path."""
        from vmtestbed.hosts import Host

        log = self.serial_log(spec.name)
        log.unlink(missing_ok=True)
        xml = guest.domain_xml(spec=spec, image=self.image(), serial_log=log)
        with Host(host.uri) as conn:
            conn.define_domain(xml)
        return log

    def boot(self, spec: guest.GuestSpec, *, host: Daemon, timeout_seconds: float = 60.0) -> Path:
        """Define, start and wait for the guest's first heartbeats. Returns its serial log."""
        from vmtestbed.hosts import Host

        log = self.define(spec, host=host)
        with Host(host.uri) as conn:
            conn.start(spec.name)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if len(guest.heartbeats(log)) >= 2:
                return log
            time.sleep(0.2)
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no serial output)"
        raise SandboxError(f"guest {spec.name} sent no heartbeat in {timeout_seconds}s:\n{tail}")


def _qemu_version() -> str:
    done = subprocess.run([str(guest.EMULATOR), "--version"], capture_output=True, text=True)
    return done.stdout.splitlines()[0] if done.stdout else "unknown"
