"""A real node beside the control plane: the scheduler places pods, the kubelet
starts them in containerd, kube-proxy routes Services, and pods reach the API
server and the sandbox's libvirt hosts as they would in a real cluster.

The cluster is the package's node cluster (the pod bridge of TEST_SUBNET, an API server
on its address, a node), up once for the package. Images come from docker
archives imported into containerd: there is no registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from vmtestbed.controlplane import ControlPlane
from vmtestbed.daemons import _alive
from vmtestbed.node import Node, NodeCluster, images
from vmtestbed.testbed import Sandbox

from ...conftest import _TESTBED
from ..conftest import wait_until

pytestmark = pytest.mark.e2e

# The busybox image runs as this user, as the operator's chart does.
NONROOT = 65532
LIBVIRT_TLS_PORT = 16514


@pytest.fixture(scope="module")
def plane(node_cluster: NodeCluster) -> ControlPlane:
    return node_cluster.plane


@pytest.fixture(scope="module")
def node(node_cluster: NodeCluster) -> Node:
    return node_cluster.node


@pytest.fixture(scope="module")
def busybox(node: Node) -> str:
    return node.load_image(images() / "busybox.tar")


@pytest.fixture(scope="module")
def pause(node: Node) -> str:
    return node.load_image(images() / "pause.tar")


def apply(plane: ControlPlane, *objects: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": list(objects)}))


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def one_shot_pod(name: str, image: str, script: str, *, account: str = "default") -> dict[str, Any]:
    """A busybox pod that runs ``script`` once, locked down as the operator's chart is."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "serviceAccountName": account,
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": NONROOT, "runAsGroup": NONROOT, "runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }


def finished_logs(plane: ControlPlane, name: str, *, timeout: float = 60.0) -> str:
    """Wait for the one-shot pod to end, then what ``kubectl logs`` shows of it."""
    def ended() -> str | None:
        phase = get(plane, "pod", name)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(ended, timeout=timeout, what=f"pod {name} to finish")
    logs = plane.kubectl("logs", name).stdout
    assert phase == "Succeeded", f"pod {name} {phase}:\n{logs}"
    return logs


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def condition_time(pod: dict[str, Any], kind: str) -> float:
    for condition in pod["status"].get("conditions", []):
        if condition["type"] == kind and condition["status"] == "True":
            return _seconds(condition["lastTransitionTime"])
    raise AssertionError(f"pod {pod['metadata']['name']} has no {kind} condition: {pod['status']}")


def test_a_deployment_of_two_replicas_becomes_two_running_pods(plane: ControlPlane, pause: str) -> None:
    started = time.monotonic()
    apply(plane, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pausers"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pausers"}},
                 "template": {"metadata": {"labels": {"app": "pausers"}}, "spec": {"containers": [
                     {"name": "pause", "image": pause, "imagePullPolicy": "Never"}]}}},
    })
    plane.kubectl("wait", "--for=condition=Available", "--timeout=60s", "deployment/pausers")
    wall = time.monotonic() - started
    pods = get(plane, "pods", "-l", "app=pausers")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running", "Running"]
    assert len({p["status"]["podIP"] for p in pods}) == 2
    # Scheduled to Ready, as the API records it (whole seconds).
    startup = max(condition_time(p, "Ready") - condition_time(p, "PodScheduled") for p in pods)
    _TESTBED.append(f"pod start-up: scheduled to Ready in {startup:.0f} s (API's whole seconds); "
                    f"Deployment applied to Available in {wall:.1f} s")
    assert startup <= 10


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(
        plane: ControlPlane, busybox: str) -> None:
    # The pod's own ServiceAccount token, allowed to read pods: what it reads
    # proves who the API server took it for.
    apply(plane,
          {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
           "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": "reader"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
           "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}]},
          one_shot_pod("api-client", busybox, account="reader", script=(
              "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT && "
              "token=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token) && "
              # busybox's wget speaks TLS but verifies no certificate, and says so
              # on stderr; that note is shown only if the request fails.
              "{ wget -q -O /scratch/pod.json --header \"Authorization: Bearer $token\" "
              "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/default/pods/api-client"
              " 2>/scratch/wget.err || { cat /scratch/wget.err; exit 1; }; } && cat /scratch/pod.json")))
    address, body = finished_logs(plane, "api-client").split("\n", 1)
    # The kubernetes Service, which kube-proxy sends to the API server on the bridge.
    assert address == "10.96.0.1:443"
    pod = json.loads(body)
    assert (pod["metadata"]["name"], pod["spec"]["serviceAccountName"]) == ("api-client", "reader")


def test_kubectl_logs_shows_what_a_pod_printed(plane: ControlPlane, busybox: str) -> None:
    word = f"hello-{os.getpid()}-{time.monotonic_ns()}"
    apply(plane, one_shot_pod("printer", busybox, script=f"echo {word}; id -u"))
    assert finished_logs(plane, "printer").split() == [word, str(NONROOT)]


def test_a_cluster_ip_service_routes_from_the_root_namespace_to_a_pod(
        plane: ControlPlane, busybox: str) -> None:
    server = one_shot_pod("web", busybox, script=(
        "mkdir -p /scratch/www && hostname > /scratch/www/index.html && "
        "exec httpd -f -p 8080 -h /scratch/www"))
    server["spec"]["restartPolicy"] = "Always"
    server["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080},
                                                         "periodSeconds": 1}
    apply(plane, server, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                          "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    plane.kubectl("wait", "--for=condition=Ready", "--timeout=60s", "pod/web")
    address = get(plane, "service", "web")["spec"]["clusterIP"]

    def answer() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{address}/", timeout=3) as reply:
                return reply.read().decode().strip()  # type: ignore[no-any-return]
        except OSError:
            return None  # kube-proxy may not have written the rules yet

    assert wait_until(answer, timeout=30, what=f"the web Service at {address}") == "web"


def test_a_pod_reaches_a_sandbox_host_masqueraded_as_the_management_address(
        plane: ControlPlane, busybox: str, sandbox: Sandbox) -> None:
    host = sandbox.hosts[0]
    assert host.netns is not None
    # A one-connection TCP server in the host's namespace, which reports its peer.
    listener = subprocess.Popen(
        [*sandbox.network.exec_prefix(0), "python3", "-c",
         "import socket, sys\n"
         f"s = socket.create_server(('{host.address}', 18080))\n"
         "print('ready', flush=True)\n"
         "c, peer = s.accept()\n"
         "c.sendall(b'hello from the host\\n')\n"
         "print(peer[0], flush=True)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        libvirt = " && ".join(f"nc -w 5 {h.address} {LIBVIRT_TLS_PORT} </dev/null && echo tls {h.address}"
                              for h in sandbox.hosts)
        apply(plane, one_shot_pod("host-client", busybox,
                                  script=f"nc -w 5 {host.address} 18080 </dev/null && {libvirt}"))
        logs = finished_logs(plane, "host-client")
        peer = listener.stdout.readline().strip()
    finally:
        listener.kill()
        listener.wait()
    assert logs.splitlines() == ["hello from the host"] + [f"tls {h.address}" for h in sandbox.hosts]
    # The hosts have no route to the pods: the node masquerades, as a cluster's would.
    assert peer == sandbox.network.gateway


def test_down_after_a_killed_run_leaves_nothing_behind(node: Node) -> None:
    # It takes the node down, then up again for the package's later module.
    status = node.status()
    assert status["ready"] is True
    assert isinstance(status["pids"], dict)
    pids = [pid for pid in status["pids"].values() if pid]
    assert len(pids) == 5
    # What the machine had before the node (and the kubelet) changed it.
    sysctls = json.loads((node.root / "sysctl.json").read_text())
    for pid in pids:
        os.kill(pid, 9)
    stopped = node.down()
    assert any("container processes" in item for item in stopped), stopped
    assert not [p for p in pids if _alive(p)]
    socket = f"-address\0{node.socket}\0".encode()
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and socket in _read(p / "cmdline")], "containerd shims survived"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(node.root) not in mounts
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{node.cgroup}"))
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert not re.search(r"^:KUBE-", rules, re.MULTILINE)
    now = {name: Path("/proc/sys", *name.split(".")).read_text().strip() for name in sysctls}
    assert now == sysctls
    # The kubelet's fixed paths, outside its root.
    assert not Path("/var/lib/kubelet/device-plugins/kubelet.sock").exists()
    assert not [link for link in Path("/var/log/containers").glob("*.log")
                if str(node.root) in os.readlink(link)]
    assert node.up()["ready"] is True


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
