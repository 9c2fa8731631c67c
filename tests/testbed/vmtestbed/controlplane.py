"""A real local Kubernetes control plane: etcd and kube-apiserver, nothing more.

The operator's tests and the demo talk to a genuine API server (real RBAC,
real TokenRequest, real admission) rather than a mock. There is no
controller-manager and no scheduler, so nothing reconciles: no Pod is ever
scheduled, no namespace finishes deleting, and no "default" ServiceAccount
appears by itself. Everything listens on one loopback address.

With ``node=True`` the API server is made ready for ``vmtestbed.node``, which
adds the controllers, a kubelet and kube-proxy: it listens on the pod
bridge's address (not loopback, so the ``kubernetes`` Service gets real
endpoints), talks to the kubelet with a client certificate, and enforces the
ServiceAccount admission plugin, since a controller-manager now creates the
"default" ServiceAccounts.

Processes are handled as in ``daemons``: pid files, stopped by PID only when
the command line proves they are ours, zombies counted as gone.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# The same careful PID handling as the libvirt daemons (see the module docstring).
from vmtestbed import pki as pki_
from vmtestbed.daemons import _alive, _cmdline, _read_pid, _reap, _stop_pid

# operator/vmmigration/sandbox/controlplane.py -> the repository root.
REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-controlplane"
BINARIES = ("kube-apiserver", "kubectl", "etcd")
# Built into the same directory, for vmtestbed.node.
NODE_BINARIES = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# The first address of the range: the in-cluster "kubernetes" Service.
KUBERNETES_SERVICE_IP = "10.96.0.1"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
READY_TIMEOUT_SECONDS = 120.0
ETCD_TIMEOUT_SECONDS = 30.0
KUBECTL_TIMEOUT_SECONDS = 120.0
# The TokenRequest API refuses anything shorter.
MIN_TOKEN_SECONDS = 600

# Every one of these is in kube-apiserver's default set too; naming them
# documents what this control plane enforces.
ADMISSION_PLUGINS = (
    "NamespaceLifecycle",
    "LimitRanger",
    "DefaultTolerationSeconds",
    "Priority",
    "ResourceQuota",
    "ValidatingAdmissionPolicy",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionWebhook",
)
# Without a controller-manager no namespace ever gets its "default"
# ServiceAccount, and this plugin would reject every Pod that names none.
DISABLED_ADMISSION_PLUGINS = ("ServiceAccount",)


class ControlPlaneError(RuntimeError):
    pass


class KubectlError(ControlPlaneError):
    def __init__(self, message: str, *, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(message)
        self.result = result


def binaries() -> Path:
    """Build (or find in the cache) kube-apiserver, kubectl, etcd and the node's
    binaries (NODE_BINARIES); return their directory."""
    return run_build_script(BUILD_SCRIPT, produces=BINARIES + NODE_BINARIES)


def run_build_script(script: Path, *, produces: tuple[str, ...]) -> Path:
    """Run one of scripts/ that builds into the cache and prints its output directory
    last; return that directory once it holds every file of ``produces``."""
    if not script.is_file():
        raise ControlPlaneError(f"{script} is missing: it needs the source checkout")
    name = script.relative_to(REPO_ROOT) if script.is_relative_to(REPO_ROOT) else script
    # The script's progress goes on to our stderr as it comes (a cold build
    # takes minutes), and its tail is kept for the error message.
    tail: collections.deque[str] = collections.deque(maxlen=20)
    try:
        process = subprocess.Popen(
            [str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
    except OSError as error:
        raise ControlPlaneError(f"cannot run {script}: {error}") from error
    assert process.stdout is not None and process.stderr is not None
    stderr = process.stderr

    def relay() -> None:
        for line in stderr:
            tail.append(line.rstrip("\n"))
            sys.stderr.write(line)

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    stdout = process.stdout.read()
    code = process.wait()
    relay_thread.join()
    if code != 0:
        raise ControlPlaneError(f"{name} failed with exit code {code}:\n" + "\n".join(tail))
    lines = stdout.strip().splitlines()
    out_dir = Path(lines[-1]) if lines else Path()
    missing = [item for item in produces if not (out_dir / item).is_file()]
    if not lines or missing:
        raise ControlPlaneError(
            f"{name} printed {stdout.strip()!r}, which lacks {', '.join(missing or produces)}"
        )
    return out_dir


class ControlPlane:
    def __init__(self, *, root: Path, address: str, port: int, bin_dir: Path,
                 audit_users: tuple[str, ...] = (), node: bool = False) -> None:
        self.root = root
        self.address = address
        self.port = port
        self.bin_dir = bin_dir
        # Users whose every request the API server records (Metadata level) in
        # audit_log: the tests prove the operator's RBAC is all used and enough.
        self.audit_users = audit_users
        # Serve a vmtestbed.node (see the module docstring).
        self.node = node
        if node and address.startswith("127."):
            raise ControlPlaneError(
                f"a control plane for a node needs a non-loopback address, not {address}: "
                "pods reach it through the kubernetes Service, whose endpoints cannot be loopback")

    # ---- where things are -------------------------------------------------

    @property
    def server_url(self) -> str:
        return f"https://{self.address}:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.address}:{ETCD_CLIENT_PORT}"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.pki / "ca.key"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def audit_log(self) -> Path:
        return self.log_dir / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log's events so far (empty without audit_users). Metadata level:
        who, verb, resource and decision, never a request or response body."""
        try:
            lines = self.audit_log.read_text().splitlines()
        except OSError:
            return []
        events = []
        for line in lines:
            # The last line may be half written while the API server is busy.
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def _pid_file(self, component: str) -> Path:
        return self.root / "run" / f"{component}.pid"

    def _marker(self, component: str) -> bytes:
        """An argument only our own process of ``component`` has, NUL-terminated as in
        /proc/PID/cmdline so that /a/root never matches a process of /a/root2."""
        if component == "etcd":
            return f"--data-dir={self.root / 'etcd'}\0".encode()
        return f"--tls-cert-file={self.pki / 'apiserver.crt'}\0".encode()

    # ---- life cycle -------------------------------------------------------

    def up(self) -> dict[str, object]:
        """Start etcd and kube-apiserver from a clean state; return the status once ready."""
        started = time.monotonic()
        self.down()
        for part in ("pki", "etcd", "logs", "run"):
            shutil.rmtree(self.root / part, ignore_errors=True)
            (self.root / part).mkdir(parents=True)
        # Private keys, and etcd's data (it warns on anything wider).
        self.pki.chmod(0o700)
        (self.root / "etcd").chmod(0o700)
        self._make_pki()
        self._write_audit_policy()
        # The last up's binaries, for a shell (root/bin/kubectl) and for the
        # CLI's down and status, which must not trigger a build.
        link = self.root / "bin"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self.bin_dir.resolve(), target_is_directory=True)
        try:
            self._start_components()
            self._write_kubeconfig(
                self.admin_kubeconfig,
                user={"client-certificate-data": _b64(self.pki / "admin.crt"),
                      "client-key-data": _b64(self.pki / "admin.key")},
                user_name="admin",
            )
            version = self.server_version()
        except BaseException:
            # Half a control plane is no use and would hold the ports; the
            # logs under root stay for a look.
            self.down()
            raise
        status = self.status()
        status.update(version=version, upSeconds=round(time.monotonic() - started, 1))
        return status

    def restart(self, *, kill: bool = False, down_seconds: float = 0.0) -> float:
        """Stop both components and start them again on the same data and certificates.

        A fault for the tests: clients see their watches break and their
        requests refused until the API server is back. ``kill`` sends SIGKILL
        instead of a graceful stop. Returns how long the API was unavailable.
        """
        started = time.monotonic()
        for component in ("kube-apiserver", "etcd"):
            pid = _read_pid(self._pid_file(component))
            if pid is None:
                continue
            if kill and self._marker(component) in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _stop_pid(pid, must_contain=self._marker(component), grace_seconds=15.0)
            _reap(pid)
        time.sleep(down_seconds)
        self._start_components()
        return time.monotonic() - started

    def down(self) -> list[str]:
        """Stop kube-apiserver, then etcd, by PID. Returns what was stopped."""
        stopped = []
        # The API server first, so it does not spend its last seconds
        # retrying an etcd that is already gone.
        for component in ("kube-apiserver", "etcd"):
            pid = _read_pid(self._pid_file(component))
            if pid and _stop_pid(pid, must_contain=self._marker(component), grace_seconds=15.0):
                stopped.append(f"{component} {pid}")
            if pid:
                _reap(pid)
            self._pid_file(component).unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, object]:
        pids: dict[str, int | None] = {}
        for component in ("etcd", "kube-apiserver"):
            pid = _read_pid(self._pid_file(component))
            ours = pid is not None and _alive(pid) and self._marker(component) in _cmdline(pid)
            pids[component] = pid if ours else None
        return {
            "server": self.server_url,
            "kubeconfig": str(self.admin_kubeconfig),
            "pids": pids,
            "ready": pids["kube-apiserver"] is not None and self._readyz(timeout_seconds=2.0),
        }

    # ---- using it ---------------------------------------------------------

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl, as the admin unless ``kubeconfig`` says otherwise."""
        command = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
            # Discovery cache under root, not in ~/.kube of whoever runs the tests.
            f"--cache-dir={self.root / 'kubectl-cache'}",
            *args,
        ]
        try:
            result = subprocess.run(command, input=input, capture_output=True, text=True,
                                    timeout=KUBECTL_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired as error:
            raise ControlPlaneError(f"kubectl {' '.join(args)} hung for {error.timeout}s") from error
        if check and result.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}",
                result=result,
            )
        return result

    def install_operator_manifests(self, repo: Path) -> None:
        """What the README's install without helm applies: the CRDs, the RBAC and the
        peering object, once the CRDs are served."""
        for manifest in ("crds/", "deploy/rbac.yaml"):
            self.kubectl("apply", "-f", str(repo / manifest))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     "crd/vmmigrations.vmmigration.dev", "crd/hypervisors.vmmigration.dev",
                     "crd/hypervisorpools.vmmigration.dev",
                     "crd/clusterkopfpeerings.kopf.dev")
        self.kubectl("apply", "-f", str(repo / "deploy/peering.yaml"))

    def server_version(self) -> str:
        """The server's gitVersion, as kubectl parses it (an unparsable one breaks clients)."""
        result = self.kubectl("version", "-o", "json")
        try:
            version = json.loads(result.stdout)["serverVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError) as error:
            raise ControlPlaneError(f"kubectl version gave no server version: {result.stdout!r}") from error
        if not isinstance(version, str) or not version.startswith("v1."):
            raise ControlPlaneError(f"the server reports an unusable version {version!r}")
        return version

    def service_account_kubeconfig(self, *, namespace: str, name: str, path: Path,
                                   duration_seconds: int = 86400) -> Path:
        """Create (if need be) NAMESPACE and ServiceAccount NAME, and write a kubeconfig
        that authenticates as it with a TokenRequest token. Grants nothing."""
        if duration_seconds < MIN_TOKEN_SECONDS:
            raise ControlPlaneError(f"a token must last at least {MIN_TOKEN_SECONDS}s, not {duration_seconds}s")
        manifest = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": name, "namespace": namespace}},
            ],
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        token = self.kubectl("create", "token", name, "-n", namespace,
                             f"--duration={duration_seconds}s").stdout.strip()
        if not token:
            raise ControlPlaneError(f"kubectl create token gave no token for {namespace}/{name}")
        self._write_kubeconfig(path, user={"token": token}, user_name=f"{namespace}-{name}",
                               namespace=namespace)
        return path

    # ---- internals --------------------------------------------------------

    def _make_pki(self) -> None:
        pki = self.pki
        ca = pki_.ensure_ca(pki, name="vmmigration-sandbox-ca", cert_name="ca.crt", key_name="ca.key")
        pki_.issue(ca, subject="/CN=kube-apiserver", cert=pki / "apiserver.crt",
                   key=pki / "apiserver.key", alt_names=(
                       f"IP:{self.address}", "IP:127.0.0.1", f"IP:{KUBERNETES_SERVICE_IP}",
                       "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
                       "DNS:kubernetes.default.svc"))
        # system:masters is the group RBAC always lets through: the admin.
        pki_.issue(ca, subject="/O=system:masters/CN=vmmigration-admin", cert=pki / "admin.crt",
                   key=pki / "admin.key")
        if self.node:
            # How the API server authenticates to the kubelet (logs, exec,
            # port-forward); the kubelet's webhook authorizer asks RBAC, which
            # lets system:masters through.
            pki_.issue(ca, subject="/O=system:masters/CN=kube-apiserver-kubelet-client",
                       cert=pki / "apiserver-kubelet-client.crt",
                       key=pki / "apiserver-kubelet-client.key")
        pki_.private_key(pki / "service-account.key")
        pki_.openssl("rsa", "-in", str(pki / "service-account.key"), "-pubout",
                     "-out", str(pki / "service-account.pub"))

    def _write_audit_policy(self) -> None:
        if not self.audit_users:
            return
        # JSON is YAML. The final rule drops everyone else's requests, which
        # keeps the log small and the API server fast.
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata", "users": list(self.audit_users)}, {"level": "None"}],
        }
        (self.pki / "audit-policy.yaml").write_text(json.dumps(policy, indent=2) + "\n")

    def _audit_args(self) -> list[str]:
        if not self.audit_users:
            return []
        return [f"--audit-policy-file={self.pki / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}", "--audit-log-format=json"]

    def _etcd_args(self) -> list[str]:
        peer = f"http://{self.address}:{ETCD_PEER_PORT}"
        return [
            str(self.bin_dir / "etcd"),
            "--name=vmmigration",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=vmmigration={peer}",
            "--initial-cluster-state=new",
            # The data is thrown away at the next up; fsync only slows tests.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _node_args(self) -> list[str]:
        """What the API server needs to serve a node; the defaults without one."""
        if not self.node:
            return [
                f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
                f"--disable-admission-plugins={','.join(DISABLED_ADMISSION_PLUGINS)}",
                # The kubernetes Service's endpoints would be this loopback address,
                # which Endpoints validation rejects, so the reconciler would retry
                # forever; nothing runs in-cluster to need them.
                "--endpoint-reconciler-type=none",
            ]
        pki = self.pki
        return [
            f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS + DISABLED_ADMISSION_PLUGINS)}",
            # The kubernetes Service points at this address and port, which
            # kube-proxy makes 10.96.0.1:443 for the pods.
            "--endpoint-reconciler-type=lease",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            # The kubelet serves a certificate from this same CA, for its node IP.
            f"--kubelet-certificate-authority={self.ca_file}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _apiserver_args(self) -> list[str]:
        pki = self.pki
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            # Never /var/run/kubernetes: everything stays under root.
            f"--cert-dir={pki}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.port}",
            f"--etcd-servers={self.etcd_url}",
            f"--client-ca-file={self.ca_file}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server_url}",
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki / 'service-account.key'}",
            f"--api-audiences={self.server_url}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            *self._node_args(),
            "--profiling=false",
            *self._audit_args(),
        ]

    def _start_components(self) -> None:
        """etcd, then kube-apiserver once etcd is healthy; returns when the API is ready."""
        self._wait_etcd(self._start("etcd", command=self._etcd_args()))
        self._wait_ready(self._start("kube-apiserver", command=self._apiserver_args()))

    def _start(self, component: str, *, command: list[str]) -> int:
        # Appended: a restart (a fault in the tests) keeps the earlier run's log.
        log = open(self.log_dir / f"{component}.log", "ab")
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            raise ControlPlaneError(f"cannot start {component}: {error}") from error
        finally:
            log.close()
        self._pid_file(component).write_text(f"{process.pid}\n")
        return process.pid

    def _wait_etcd(self, pid: int) -> None:
        deadline = time.monotonic() + ETCD_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._check_alive("etcd", pid=pid)
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as reply:
                    if json.loads(reply.read()).get("health") == "true":
                        return
            time.sleep(0.2)
        raise ControlPlaneError(f"etcd did not become healthy in {ETCD_TIMEOUT_SECONDS:.0f}s:\n"
                                + self._tail("etcd"))

    def _wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._check_alive("kube-apiserver", pid=pid)
            if self._readyz(timeout_seconds=2.0):
                return
            time.sleep(0.3)
        raise ControlPlaneError(f"kube-apiserver was not ready in {READY_TIMEOUT_SECONDS:.0f}s:\n"
                                + self._tail("kube-apiserver"))

    def _readyz(self, *, timeout_seconds: float) -> bool:
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            with urllib.request.urlopen(f"{self.server_url}/readyz", timeout=timeout_seconds,
                                        context=context) as reply:
                return bool(reply.read().strip() == b"ok")
        except (OSError, ssl.SSLError):
            # Not listening yet, a 500 while post-start hooks run, or no certs.
            return False

    def _check_alive(self, component: str, *, pid: int) -> None:
        if not _alive(pid):
            _reap(pid)
            raise ControlPlaneError(f"{component} exited at start:\n{self._tail(component)}")

    def _tail(self, component: str, *, lines: int = 25) -> str:
        path = self.log_dir / f"{component}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return f"--- {path}: missing"
        return f"--- {path}\n" + "\n".join(text.splitlines()[-lines:])

    def _write_kubeconfig(self, path: Path, *, user: dict[str, str], user_name: str,
                          namespace: str = "default") -> None:
        # JSON is YAML, and kubectl reads either: no YAML library needed.
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "vmmigration", "cluster": {
                "server": self.server_url,
                "certificate-authority-data": _b64(self.ca_file),
            }}],
            "users": [{"name": user_name, "user": user}],
            "contexts": [{"name": user_name, "context": {
                "cluster": "vmmigration", "user": user_name, "namespace": namespace,
            }}],
            "current-context": user_name,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        # It holds a credential: readable by its owner only, from the start.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(config, out, indent=2)
            out.write("\n")
        path.chmod(0o600)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
