"""A real Kubernetes node beside the test bed's control plane.

``ControlPlane`` alone schedules nothing. A ``Node`` adds what a cluster runs:
kube-controller-manager and kube-scheduler, containerd with runc (Debian's),
kube-proxy in iptables mode and a kubelet, so a Deployment becomes pods that
really start. Layout, for sandbox subnet S::

    root namespace
      vmmS-pods 10.242.S.1/24  bridge; kube-apiserver, kubelet and kube-proxy listen here
        └─ veth ── pod 10.242.S.10…  (a network namespace each, made by containerd's CNI)
      vmmS-mgmt 10.240.S.1     (vmtestbed.network) ── the libvirt hosts 10.240.S.2…

Pods reach the API server as in any cluster, through the ``kubernetes``
Service (10.96.0.1:443, kube-proxy's DNAT to the bridge address), and the
libvirt hosts through the root namespace, masqueraded as 10.240.S.1 (the
hosts have no route back to the pods).

There is no registry: images are docker archives imported into containerd
(``load_image``), and pods use them with ``imagePullPolicy: Never``. The
sandbox ("pause") image is our own (tests/node/pause.c, scripts/build-node-images).

Everything lives under ``root``, even where the binaries insist on fixed
paths: containerd runs in a mount namespace of its own, with a private
tmpfs on /run (its shims' sockets, runc's state, the pods' network namespace
files) and on /var/lib/cni (CNI's cache and IP leases). When containerd and
its shims die, their mounts die with them, whatever killed them. Only the
kubelet's directory is shared into that namespace, so the volumes the kubelet
mounts (service account tokens) reach the containers.

What stays global, and is undone by ``down``: the cgroup vmmS-node in each
hierarchy, kube-proxy's and the kubelet's iptables chains, the sysctls the
kubelet sets (kernel.panic and the like, as on every node), and the symlinks
the kubelet makes in /var/log/containers. kube-proxy's chains are one set per
machine: run one Node at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from vmtestbed import pki as pki_
from vmtestbed.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, run_build_script
from vmtestbed.daemons import _alive, _cmdline, _read_pid, _reap, _stop_pid

IMAGES_SCRIPT = REPO_ROOT / "scripts" / "build-node-images"
# Controllers first (nothing to schedule without them), the kubelet last.
COMPONENTS = ("containerd", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet")
CGROUP_FS = Path("/sys/fs/cgroup")
# Fixed paths the kubelet uses whatever its --root-dir says.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
DEVICE_PLUGIN_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
KUBELET_PORT = 10250
READY_TIMEOUT_SECONDS = 120.0
CONTAINERD_TIMEOUT_SECONDS = 30.0
# Every process of a pod is in the node's cgroup; killing them all takes a few rounds.
KILL_TIMEOUT_SECONDS = 15.0
# Read before the node starts and written back by down: ip_forward and
# bridge-nf-call-iptables are set by up (pods route through the root
# namespace; a Service's DNAT must see bridged traffic), the rest by the kubelet.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)


class NodeError(ControlPlaneError):
    pass


def images() -> Path:
    """Build (or find in the cache) the node's docker archives, pause.tar and busybox.tar;
    return their directory."""
    return run_build_script(IMAGES_SCRIPT, produces=("pause.tar", "busybox.tar"))


def archive_reference(archive: Path) -> str:
    """The image name a docker archive carries (what a pod's ``image:`` names)."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("manifest.json")
            manifest = json.load(member) if member else None
        return str(manifest[0]["RepoTags"][0])  # type: ignore[index]
    except (OSError, KeyError, IndexError, TypeError, ValueError, tarfile.TarError) as error:
        raise NodeError(f"{archive} is not a docker archive with a tagged image: {error}") from error


def _run(*argv: str, check: bool = True, input_text: str | None = None,
         timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise NodeError(f"{' '.join(argv)} hung for {error.timeout}s") from error
    if check and done.returncode != 0:
        raise NodeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


@dataclasses.dataclass(frozen=True)
class PodNetwork:
    """The bridge the pods hang on, and the masquerade that lets them out.

    Up before the control plane: the API server binds the bridge's address.
    """

    subnet: int

    @property
    def bridge(self) -> str:
        return f"vmm{self.subnet}-pods"

    @property
    def gateway(self) -> str:
        """The bridge's address: the node's IP, and where the API server listens."""
        return f"10.242.{self.subnet}.1"

    @property
    def cidr(self) -> str:
        return f"10.242.{self.subnet}.0/24"

    @property
    def table(self) -> str:
        """Our nftables table (network.py's faults use another, in the hosts' namespaces)."""
        return f"vmm{self.subnet}-pods"

    def up(self) -> None:
        """Make the bridge and the masquerade, keeping a bridge that exists (an API
        server may be bound to its address)."""
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            _run("ip", "link", "add", self.bridge, "type", "bridge")
        addresses = _run("ip", "-o", "-4", "addr", "show", "dev", self.bridge).stdout
        if f" {self.gateway}/24 " not in addresses:
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        # Up even without a port: the address must be local for the API server to bind it.
        _run("ip", "link", "set", self.bridge, "up")
        # One rule instead of the bridge plugin's ipMasq, which makes a chain per
        # pod that a killed run would leave behind; a table is removed whole.
        script = (f"table ip {self.table}\ndelete table ip {self.table}\n"
                  f"table ip {self.table} {{\n"
                  f"  chain postrouting {{\n"
                  f"    type nat hook postrouting priority srcnat; policy accept;\n"
                  f"    ip saddr {self.cidr} ip daddr != {self.cidr} masquerade\n"
                  f"  }}\n}}\n")
        _run("nft", "-f", "-", input_text=script)

    def down(self) -> list[str]:
        removed = []
        if _run("nft", "list", "table", "ip", self.table, check=False).returncode == 0:
            _run("nft", "delete", "table", "ip", self.table)
            removed.append(f"nft table {self.table}")
        if Path(f"/sys/class/net/{self.bridge}").exists():
            _run("ip", "link", "del", self.bridge)
            removed.append(f"link {self.bridge}")
        return removed


class Node:
    """One node of the ``plane`` cluster, on ``network``; everything it keeps is under ``root``."""

    def __init__(self, *, root: Path, plane: ControlPlane, network: PodNetwork,
                 images_dir: Path | None = None) -> None:
        if plane.address != network.gateway or not plane.node:
            raise NodeError(f"the control plane must be made with node=True on {network.gateway}, "
                            f"the pod bridge's address (not {plane.address})")
        self.root = root
        self.plane = plane
        self.network = network
        # Where the pause image comes from; built on demand (down needs none).
        self.images_dir = images_dir

    # ---- where things are -------------------------------------------------

    @property
    def name(self) -> str:
        return f"vmm{self.network.subnet}-node"

    @property
    def address(self) -> str:
        return self.network.gateway

    @property
    def socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cgroup(self) -> str:
        """The kubelet's cgroup root: every pod's processes are below it, in every hierarchy."""
        return f"vmm{self.network.subnet}-node"

    def _config(self, name: str) -> Path:
        return self.root / "config" / name

    def _pid_file(self, component: str) -> Path:
        return self.root / "run" / f"{component}.pid"

    def _marker(self, component: str) -> bytes:
        """An argument only our own ``component`` has (NUL-terminated, as in /proc/PID/cmdline)."""
        if component == "containerd":
            return f"{self._config('containerd.toml')}\0".encode()
        return f"--kubeconfig={self._config(component + '.kubeconfig')}\0".encode()

    # ---- life cycle -------------------------------------------------------

    def up(self) -> dict[str, object]:
        """Start the node from a clean state; return the status once the Node is Ready."""
        started = time.monotonic()
        # A unix socket's path has room for 107 bytes; containerd adds ".ttrpc".
        if len(bytes(self.socket)) > 100:
            raise NodeError(f"{self.root} is too long a path: containerd's socket there "
                            f"({self.socket}) would not fit in a unix socket address")
        self.down()
        pause = (self.images_dir or images()) / "pause.tar"
        if not self.plane.status()["ready"]:
            raise NodeError(f"the control plane at {self.plane.server_url} is not ready")
        for part in ("config", "containerd", "cni", "kubelet", "pod-logs", "logs", "run"):
            shutil.rmtree(self.root / part, ignore_errors=True)
            (self.root / part).mkdir(parents=True)
        try:
            self._prepare_host()
            self._write_configs(pause_image=archive_reference(pause))
            self._start_containerd()
            self.load_image(pause)
            for component in COMPONENTS[1:]:
                self._start(component, command=self._command(component))
            self._wait_ready()
        except BaseException:
            # The logs under root stay for a look.
            self.down()
            raise
        status = self.status()
        status["upSeconds"] = round(time.monotonic() - started, 1)
        return status

    def down(self) -> list[str]:
        """Stop everything the node started (or a killed run left), by PID, and undo
        what it changed on the machine. Returns what was stopped or removed."""
        stopped = []
        for component in reversed(COMPONENTS[1:]):
            stopped += self._stop(component)
        # The kubelet is gone, so nothing restarts the containers now.
        killed = self._kill_cgroup()
        if killed:
            stopped.append(f"{killed} container processes")
        for pid in self._shims():
            if _stop_pid(pid, must_contain=self._shim_marker(), grace_seconds=2.0):
                stopped.append(f"containerd-shim {pid}")
        stopped += self._stop("containerd")
        stopped += self._clean_iptables()
        stopped += self._unmount()
        stopped += self._remove_cgroups()
        stopped += self._remove_fixed_paths()
        stopped += self._restore_sysctls()
        return stopped

    def status(self) -> dict[str, object]:
        pids: dict[str, int | None] = {}
        for component in COMPONENTS:
            pid = _read_pid(self._pid_file(component))
            ours = pid is not None and _alive(pid) and self._marker(component) in _cmdline(pid)
            pids[component] = pid if ours else None
        return {"node": self.name, "address": self.address, "pids": pids,
                "ready": all(pids.values()) and self._ready()}

    # ---- using it ---------------------------------------------------------

    def ctr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """containerd's own client, in the CRI's namespace (where the kubelet's images are)."""
        return _run("ctr", f"--address={self.socket}", "--namespace=k8s.io", *args,
                    timeout=timeout)

    def load_image(self, archive: Path) -> str:
        """Import a docker archive for the pods (``imagePullPolicy: Never``); return its name."""
        reference = archive_reference(archive)
        # Unpacked into the snapshotter the CRI uses, so the first pod needs no unpack.
        self.ctr("images", "import", "--snapshotter=overlayfs", str(archive))
        # Pinned, so the kubelet's image garbage collection never removes it: from
        # containerd 1.7 on; Debian's 1.6 ignores the label, and imageGCHighThresholdPercent
        # 100 keeps the images there.
        self.ctr("images", "label", reference, "io.cri-containerd.pinned=pinned")
        return reference

    def logs(self, component: str, *, lines: int = 25) -> str:
        path = self.log_dir / f"{component}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return f"--- {path}: missing"
        return f"--- {path}\n" + "\n".join(text.splitlines()[-lines:])

    # ---- starting ---------------------------------------------------------

    def _prepare_host(self) -> None:
        saved = self.root / "sysctl.json"
        saved.write_text(json.dumps({name: _sysctl(name) for name in SYSCTLS}, indent=2) + "\n")
        for name in ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"):
            _write_sysctl(name, "1")
        for hierarchy in _hierarchies():
            path = hierarchy / self.cgroup
            path.mkdir(exist_ok=True)
            if (hierarchy / "cpuset.cpus").exists():
                # A new cpuset is empty, and no process may join an empty one.
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((hierarchy / name).read_text())
        # Shared before containerd's namespace copies it, so the kubelet's later
        # mounts (volumes) propagate into containerd's namespace as they happen.
        _run("mount", "--bind", str(self.kubelet_dir), str(self.kubelet_dir))
        _run("mount", "--make-rshared", str(self.kubelet_dir))

    def _write_configs(self, *, pause_image: str) -> None:
        net = self.network
        ca = pki_.Certificate(cert=self.plane.ca_file, key=self.plane.ca_key, ca_cert=self.plane.ca_file)
        # The kubelet's serving certificate, which the API server verifies (logs, exec).
        pki_.issue(ca, subject=f"/CN={self.name}", cert=self._config("kubelet.crt"),
                   key=self._config("kubelet.key"), alt_names=(f"IP:{self.address}", f"DNS:{self.name}"))
        for component in COMPONENTS[1:]:
            # The admin's credentials for every component, the kubelet included
            # (system:masters; no Node authorizer here). One copy each, so that
            # its path on the command line tells whose process it is.
            shutil.copyfile(self.plane.admin_kubeconfig, self._config(f"{component}.kubeconfig"))
            self._config(f"{component}.kubeconfig").chmod(0o600)
        (self.root / "cni" / "net.d").mkdir(parents=True)
        (self.root / "cni" / "net.d" / "10-pods.conflist").write_text(json.dumps(cni_config(net), indent=2))
        self._config("containerd.toml").write_text(containerd_config(
            root=self.root / "containerd", cni_conf_dir=self.root / "cni" / "net.d",
            pause_image=pause_image))
        self._config("kubelet.json").write_text(json.dumps(kubelet_config(
            address=self.address, cgroup=self.cgroup, pod_cidr=net.cidr, socket=self.socket,
            ca_file=self.plane.ca_file, cert=self._config("kubelet.crt"), key=self._config("kubelet.key"),
            pod_logs=self.pod_logs, plugins=self.root / "kubelet-plugins"), indent=2))
        self._config("kube-proxy.json").write_text(json.dumps(kube_proxy_config(
            address=self.address, node=self.name, cluster_cidr=net.cidr,
            kubeconfig=self._config("kube-proxy.kubeconfig")), indent=2))

    def _command(self, component: str) -> list[str]:
        binary = str(self.plane.bin_dir / component)
        kubeconfig = f"--kubeconfig={self._config(component + '.kubeconfig')}"
        pki = self.plane.pki
        if component == "kube-controller-manager":
            return [binary, kubeconfig, "--leader-elect=false", "--secure-port=0",
                    # Signs the legacy token Secrets; publishes kube-root-ca.crt in every namespace.
                    f"--service-account-private-key-file={pki / 'service-account.key'}",
                    f"--root-ca-file={self.plane.ca_file}",
                    f"--cluster-signing-cert-file={self.plane.ca_file}",
                    f"--cluster-signing-key-file={self.plane.ca_key}",
                    # Else it makes /usr/libexec/kubernetes/kubelet-plugins/volume/exec.
                    f"--flex-volume-plugin-dir={self.root / 'kubelet-plugins'}"]
        if component == "kube-scheduler":
            return [binary, kubeconfig, "--leader-elect=false", "--secure-port=0"]
        if component == "kube-proxy":
            return [binary, kubeconfig, f"--config={self._config('kube-proxy.json')}"]
        return [binary, kubeconfig, f"--config={self._config('kubelet.json')}",
                f"--root-dir={self.kubelet_dir}", f"--cert-dir={self.kubelet_dir / 'pki'}",
                f"--hostname-override={self.name}", f"--node-ip={self.address}"]

    def _start_containerd(self) -> None:
        config = self._config("containerd.toml")
        # Fixed paths made private: the shims put their sockets in
        # /run/containerd/s, runc its state in /run/containerd/runc, the CRI the
        # pods' network namespaces in /run/netns, CNI its cache and leases in
        # /var/lib/cni (where the machine's own podman keeps its).
        script = ("mount -t tmpfs -o mode=0755 vmm-node-run /run"
                  " && mkdir -p /var/lib/cni && mount -t tmpfs -o mode=0700 vmm-node-cni /var/lib/cni"
                  f" && exec containerd --config '{config}'")
        pid = self._start("containerd", command=[
            "unshare", "--mount", "--propagation", "slave", "/bin/sh", "-c", script])
        deadline = time.monotonic() + CONTAINERD_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._check_alive("containerd", pid=pid)
            if self.socket.exists() and _run("ctr", f"--address={self.socket}", "version",
                                             check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise NodeError(f"containerd did not answer in {CONTAINERD_TIMEOUT_SECONDS:.0f}s:\n"
                        + self.logs("containerd"))

    def _start(self, component: str, *, command: list[str]) -> int:
        log = open(self.log_dir / f"{component}.log", "ab")
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            raise NodeError(f"cannot start {component}: {error}") from error
        finally:
            log.close()
        self._pid_file(component).write_text(f"{process.pid}\n")
        return process.pid

    def _check_alive(self, component: str, *, pid: int) -> None:
        if not _alive(pid):
            _reap(pid)
            raise NodeError(f"{component} exited at start:\n{self.logs(component)}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for component in COMPONENTS:
                pid = _read_pid(self._pid_file(component))
                self._check_alive(component, pid=pid or 0)
            if self._ready():
                return
            time.sleep(0.5)
        raise NodeError(f"node {self.name} was not Ready in {READY_TIMEOUT_SECONDS:.0f}s:\n"
                        + self.logs("kubelet") + "\n" + self.logs("containerd"))

    def _ready(self) -> bool:
        result = self.plane.kubectl("get", "node", self.name, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # ---- stopping ---------------------------------------------------------

    def _stop(self, component: str) -> list[str]:
        pid = _read_pid(self._pid_file(component))
        stopped = []
        if pid and _stop_pid(pid, must_contain=self._marker(component), grace_seconds=15.0):
            stopped.append(f"{component} {pid}")
        if pid:
            _reap(pid)
        self._pid_file(component).unlink(missing_ok=True)
        return stopped

    def _shim_marker(self) -> bytes:
        return f"-address\0{self.socket}\0".encode()

    def _shims(self) -> list[int]:
        """containerd's shims (they outlive it by design), known by its socket on their command line."""
        marker = self._shim_marker()
        return [int(entry.name) for entry in Path("/proc").iterdir()
                if entry.name.isdigit() and marker in _cmdline(int(entry.name))]

    def _kill_cgroup(self) -> int:
        """SIGKILL every process in the node's cgroup until none is left; how many there were."""
        seen: set[int] = set()
        deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            pids = self._cgroup_pids()
            if not pids:
                return len(seen)
            seen |= pids
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _reap(pid)
            time.sleep(0.1)
        raise NodeError(f"processes in cgroup {self.cgroup} survived SIGKILL: {sorted(self._cgroup_pids())}")

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for hierarchy in _hierarchies():
            for procs in (hierarchy / self.cgroup).rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids |= {int(line) for line in procs.read_text().split()}
        # A zombie stays listed until its parent (a dead shim's reaper) collects it.
        return {pid for pid in pids if _alive(pid)}

    def _remove_cgroups(self) -> list[str]:
        removed = []
        for hierarchy in _hierarchies():
            top = hierarchy / self.cgroup
            if not top.is_dir():
                continue
            # Deepest first: a cgroup with children cannot be removed.
            for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
                removed.append(f"cgroup {top}")
        return removed

    def _clean_iptables(self) -> list[str]:
        """kube-proxy's rules (its own --cleanup knows them all), then whatever KUBE-
        chains are left: the kubelet's (KUBE-FIREWALL, its canaries, the hint)."""
        removed = []
        proxy = self.plane.bin_dir / "kube-proxy"
        dumps = {command: _run(f"{command}-save", check=False).stdout
                 for command in ("iptables", "ip6tables")}
        if any(":KUBE-" in dump for dump in dumps.values()) and proxy.exists():
            _run(str(proxy), "--cleanup", check=False)
            removed.append("kube-proxy's iptables rules")
            dumps = {command: _run(f"{command}-save", check=False).stdout for command in dumps}
        for command, dump in dumps.items():
            removed += _remove_kube_chains(command, dump)
        return removed

    def _unmount(self) -> list[str]:
        """Every mount under root (the kubelet's directory and its volumes), deepest first."""
        removed = []
        prefix = f"{self.root.resolve()}/"
        for target in reversed(_mount_points()):
            if f"{target}/".startswith(prefix):
                if _run("umount", target, check=False).returncode != 0:
                    _run("umount", "--lazy", target)
                removed.append(f"mount {target}")
        return removed

    def _remove_fixed_paths(self) -> list[str]:
        """The kubelet's links to our pod logs, and its device plugin socket (one node
        per machine, and ours is stopped); the directories go too if that empties them."""
        removed = []
        prefix = f"{self.pod_logs}/"
        for link in CONTAINER_LOG_LINKS.glob("*.log"):
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(prefix):
                    link.unlink()
                    removed.append(f"link {link}")
        if DEVICE_PLUGIN_SOCKET.is_socket():
            DEVICE_PLUGIN_SOCKET.unlink()
            removed.append(str(DEVICE_PLUGIN_SOCKET))
        for directory in (CONTAINER_LOG_LINKS, *DEVICE_PLUGIN_SOCKET.parents[:2]):
            with contextlib.suppress(OSError):
                # Only if empty: nothing else's files are lost.
                directory.rmdir()
        return removed

    def _restore_sysctls(self) -> list[str]:
        saved = self.root / "sysctl.json"
        try:
            values = json.loads(saved.read_text())
        except (OSError, ValueError):
            return []
        restored = []
        for name, value in values.items():
            if value is not None and _sysctl(name) != value:
                _write_sysctl(name, value)
                restored.append(f"sysctl {name}={value}")
        saved.unlink()
        return restored


@dataclasses.dataclass(frozen=True)
class NodeCluster:
    """The pod bridge, a control plane on its address and one node: a small real
    cluster for sandbox subnet ``subnet``, under ``root`` (controlplane/, node/)."""

    root: Path
    subnet: int
    # binaries() for up; down and status need none (the control plane's root/bin link).
    bin_dir: Path | None = None
    port: int = 6443

    @property
    def network(self) -> PodNetwork:
        return PodNetwork(subnet=self.subnet)

    @property
    def plane(self) -> ControlPlane:
        root = self.root / "controlplane"
        return ControlPlane(root=root, address=self.network.gateway, port=self.port,
                            bin_dir=self.bin_dir or root / "bin", node=True)

    @property
    def node(self) -> Node:
        return Node(root=self.root / "node", plane=self.plane, network=self.network)

    def up(self) -> dict[str, object]:
        """All three from a clean state; the status once the node is Ready."""
        if self.bin_dir is None:
            raise NodeError("NodeCluster.up needs bin_dir (vmtestbed.controlplane.binaries())")
        self.down()
        try:
            # The bridge first: the API server binds its address.
            self.network.up()
            plane = self.plane.up()
            node = self.node.up()
        except BaseException:
            self.down()
            raise
        return {"controlPlane": plane, "node": node}

    def down(self) -> list[str]:
        return self.node.down() + self.plane.down() + self.network.down()

    def status(self) -> dict[str, object]:
        return {"controlPlane": self.plane.status(), "node": self.node.status()}


# ---- host helpers ---------------------------------------------------------

def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    try:
        _sysctl_path(name).write_text(f"{value}\n")
    except OSError as error:
        raise NodeError(f"cannot set {name}={value}: {error}") from error


def _remove_kube_chains(command: str, dump: str) -> list[str]:
    """Remove the KUBE-* chains of an iptables-save ``dump``, and the jumps to them."""
    removed = []
    table = ""
    chains: list[tuple[str, str]] = []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":KUBE-"):
            chains.append((table, line[1:].split()[0]))
        elif line.startswith("-A ") and " -j KUBE-" in line and not line.startswith("-A KUBE-"):
            # The jumps from the built-in chains; the rest go with their chains.
            _run(command, "-t", table, "-D", *shlex.split(line)[1:], check=False)
    for table, chain in chains:
        _run(command, "-t", table, "-F", chain, check=False)
    for table, chain in chains:
        if _run(command, "-t", table, "-X", chain, check=False).returncode == 0:
            removed.append(f"{command} {table} {chain}")
    return removed


def _hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies (v1 controllers, name=systemd, the v2 one of a hybrid)."""
    return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink()
                  and (p / "cgroup.procs").exists())


def _mount_points() -> list[str]:
    """This namespace's mount points, in mount order (octal escapes decoded)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split()[4]
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return points


# ---- configuration (pure) -------------------------------------------------

def cni_config(net: PodNetwork) -> dict[str, Any]:
    """The pods' network: a veth each on the bridge, an address from the subnet.
    containerd brings each pod's loopback up itself, so no loopback plugin."""
    return {
        "cniVersion": "1.0.0",
        "name": net.bridge,
        "plugins": [
            {"type": "bridge", "bridge": net.bridge, "isGateway": True,
             # PodNetwork's nftables table masquerades instead (see PodNetwork.up).
             "ipMasq": False,
             # A pod that reaches itself through a Service comes back on its own port.
             "hairpinMode": True,
             "ipam": {"type": "host-local",
                      "ranges": [[{"subnet": net.cidr, "gateway": net.gateway,
                                   "rangeStart": f"10.242.{net.subnet}.10"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def containerd_config(*, root: Path, cni_conf_dir: Path, pause_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""# Written by the vmmigration test bed's node; rewritten at every start.
version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
# Plugins that would touch the machine (/opt/containerd) or are not built here.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{root / 'containerd.sock'}"

[ttrpc]
  address = "{root / 'containerd.sock.ttrpc'}"

[{cri}]
  # Ours, imported from an archive: there is no registry to pull it from.
  sandbox_image = "{pause_image}"
  # Without CAP_SYS_RESOURCE no process may lower its oom_score_adj: the
  # kubelet asks -998 for the sandbox, and runc would fail to set it.
  restrict_oom_score_adj = true
  disable_apparmor = true
  # exec, attach and port-forward, proxied by the kubelet: loopback, any port.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "runc"
        # No systemd: the kubelet's cgroupfs driver, under its cgroup root.
        SystemdCgroup = false

  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
"""


def kubelet_config(*, address: str, cgroup: str, pod_cidr: str, socket: Path, ca_file: Path,
                   cert: Path, key: Path, pod_logs: Path, plugins: Path) -> dict[str, Any]:
    # JSON is YAML: the kubelet reads either.
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{socket}",
        "imageServiceEndpoint": f"unix://{socket}",
        # Never 0.0.0.0: the API server reaches the kubelet at the node IP.
        "address": address,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": address,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        # The API server's client certificate is from this CA; what it may do,
        # RBAC decides through a SubjectAccessReview.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup}",
        # cgroup v1 (a hybrid layout here) still works in 1.34, with a warning.
        "failCgroupV1": False,
        "failSwapOn": False,
        "podCIDR": pod_cidr,
        "maxPods": 30,
        # No cluster DNS: pods get the machine's resolv.conf; everything here is by IP.
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(pod_logs),
        "volumePluginDir": str(plugins),
        # Not lower than ours: without CAP_SYS_RESOURCE the kubelet cannot lower it.
        "oomScoreAdj": 0,
        # A busy test machine must not evict the pods under test, nor collect
        # the images no registry can give back (they are pinned as well).
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                         "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "staticPodPath": "",
        "registerNode": True,
    }


def kube_proxy_config(*, address: str, node: str, cluster_cidr: str, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node,
        "bindAddress": address,
        "healthzBindAddress": f"{address}:10256",
        "metricsBindAddress": f"{address}:10249",
        "clusterCIDR": cluster_cidr,
        # NodePorts on the bridge address only, never on the machine's own network.
        "nodePortAddresses": [f"{address}/32"],
        "oomScoreAdj": 0,
        # Zeros leave the machine's conntrack settings as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        # Else it sets route_localnet on the whole machine, for NodePorts on 127.0.0.1.
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
    }
