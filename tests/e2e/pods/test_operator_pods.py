"""The operator as users run it: the image built from our Dockerfile, in pods that a
real kubelet starts from the Helm chart, moving real guests over libvirt TLS.

``helm install`` → two pods Running and Ready by the kubelet's own probes, under
the chart's securityContext → a VMMigration moves a guest and ``kubectl logs``
shows it → the metrics Service is scraped through its ClusterIP → the active
pod is deleted mid-move: the Deployment replaces it, the other replica takes
over through peering and nothing moves twice → the PDB refuses an eviction that
would leave no replica → ``helm upgrade`` with a changed value rolls the pods
mid-move and the move's outcome is kept → ``helm uninstall``.

The tests run in this order and share one release (a module's story, as a user
lives it). The cluster is the package's node cluster (``node_cluster``): its own
API server on the pod bridge, so the session's local operator never sees these
resources, and the pods reach the sandbox's hosts through the bridge as a real
cluster's would. Counts of migrations come from libvirt's own records.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmtestbed.controlplane import ControlPlane
from vmtestbed.node import NodeCluster
from vmtestbed.pki import ensure_ca, issue
from vmtestbed.prometheus import PrometheusServer
from vmtestbed.records import incoming_migrations
from vmtestbed.testbed import Sandbox

from ...conftest import _TESTBED, REPO, GuestWatch, cached_tool
from ..conftest import Kubectl, _free_port, migrating, running_on, wait_until

RELEASE = "vmmigration"
NAMESPACE = "vmm-pods"
CHART = REPO / "charts" / "vmmigration-operator"
SECRET = "kvm-tls"
SELECTOR = "app.kubernetes.io/name=vmmigration-operator"
PEERING = "vmmigration"
# Slow enough (several seconds) that a pod is deleted or rolled in the middle of
# the copy; convergent, so the move completes once a replica adopts it.
STEADY = {"mode": "Live", "policy": {"bandwidthMiBPerSecond": 4}}


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _condition_time(pod: dict[str, Any], kind: str) -> float:
    for condition in pod["status"].get("conditions", []):
        if condition["type"] == kind and condition["status"] == "True":
            return _seconds(condition["lastTransitionTime"])
    raise AssertionError(f"pod {pod['metadata']['name']} has no {kind} condition: {pod['status']}")


class Release:
    """The installed chart, and what a user would ask of it."""

    def __init__(self, *, plane: ControlPlane, helm: str, values: Path) -> None:
        self.plane = plane
        self.kubectl = Kubectl(plane)
        self.helm_binary = helm
        self.values = values

    def helm(self, *args: str) -> str:
        done = subprocess.run([self.helm_binary, f"--kubeconfig={self.plane.admin_kubeconfig}", *args],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def pods(self) -> list[dict[str, Any]]:
        listed = json.loads(self.kubectl("get", "pods", "-n", NAMESPACE, "-l", SELECTOR, "-o", "json").stdout)
        return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if p["status"].get("phase") == "Running" and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]

    def wait_ready(self, count: int = 2, *, timeout: float = 120.0,
                   without: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """``count`` Ready pods, none of them named in ``without``, and no others."""
        def ready() -> list[dict[str, Any]] | None:
            pods = self.ready_pods()
            names = {p["metadata"]["name"] for p in pods}
            return pods if len(pods) == count == len(self.pods()) and not names & without else None
        return wait_until(ready, timeout=timeout, what=f"{count} Ready operator pods", interval=0.5)

    def peers(self) -> dict[str, int]:
        """The replicas in the peering object, by pod name (the chart's POD_ID), with priorities."""
        peering = json.loads(self.kubectl("get", "clusterkopfpeering", PEERING, "-o", "json").stdout)
        return {name: int(peer.get("priority", 0)) for name, peer in (peering.get("status") or {}).items()}

    def active(self) -> str:
        """The replica that acts: kopf pauses every peer that sees a higher priority."""
        peers = self.peers()
        live = {p["metadata"]["name"] for p in self.ready_pods()}
        candidates = {name: priority for name, priority in peers.items() if name in live}
        assert candidates, f"no live pod in the peering object: {peers}, pods {sorted(live)}"
        return max(candidates, key=lambda name: candidates[name])

    def logs(self, pod: str) -> str:
        return self.kubectl("logs", pod, "-n", NAMESPACE, check=False).stdout

    def exec(self, pod: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("exec", pod, "-n", NAMESPACE, "--", *command, check=False)


def values(sandbox: Sandbox, image: str) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    a, b = sandbox.hosts[0], sandbox.hosts[1]
    return {
        # Loaded into containerd from the archive: there is no registry to pull from.
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicaCount": 2,
        # The Prometheus Operator's API is installed: its objects are checked for real.
        "metrics": {"serviceMonitor": {"enabled": True}},
        "dashboard": {"enabled": True},
        # A replica killed without a goodbye is waited for this long.
        "peering": {"lifetimeSeconds": 12},
        "settings": {"probeIntervalSeconds": 2, "resyncIntervalSeconds": 2, "progressIntervalSeconds": 0.5,
                     "retryBaseSeconds": 2, "retryMaxSeconds": 10, "measureIntervalSeconds": 0},
        "hypervisors": [
            {"name": name, "uri": host.tls_uri, "migrationAddress": host.migration_host,
             "credentialsSecretRef": {"name": SECRET}, "labels": {"vmmigration.dev/zone": "lab"}}
            for name, host in (("kvm-a", a), ("kvm-b", b))],
    }


@pytest.fixture(scope="module")
def release(node_cluster: NodeCluster, helm: str, sandbox: Sandbox,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    plane = node_cluster.plane
    kubectl = Kubectl(plane)
    image = node_cluster.node.load_image(Path(subprocess.run(
        [str(REPO / "scripts" / "build-image")], check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]))
    out = tmp_path_factory.mktemp("operator-pods")
    # A client certificate for the operator from the CA the sandbox hosts trust, in
    # the Secret the Hypervisors name: the hosts refuse a TLS client without one.
    cert = issue(ensure_ca(sandbox.hosts[0].ca_dir), subject="/O=vmmigration/CN=vmmigration-operator",
                 cert=out / "tls.crt", key=out / "tls.key")
    # The Prometheus Operator's CRDs (scripts/fetch-monitoring-crds), so the chart's
    # ServiceMonitor and PrometheusRule are validated by the API server.
    kubectl("apply", "--server-side", "-f", str(cached_tool("fetch-monitoring-crds")))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/prometheusrules.monitoring.coreos.com", "crd/servicemonitors.monitoring.coreos.com")
    kubectl("create", "namespace", NAMESPACE)
    kubectl.apply(json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "data": {k: base64.b64encode(p.read_bytes()).decode()
                 for k, p in (("tls.crt", cert.cert), ("tls.key", cert.key), ("ca.crt", cert.ca_cert))}}))
    chosen = out / "values.yaml"
    chosen.write_text(yaml.safe_dump(values(sandbox, image)))
    made = Release(plane=plane, helm=helm, values=chosen)
    try:
        yield made
    finally:
        # The VMMigrations first, while an operator still runs to release their finalizers.
        kubectl("delete", "vmmigrations", "--all", "-n", "default", "--wait=true", "--timeout=60s",
                check=False)
        made.helm("uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found", "--wait", "--timeout=120s")


@pytest.fixture
def move(release: Release, sandbox: Sandbox, name: str) -> Iterator[Callable[..., GuestWatch]]:
    """Boot ``name`` on kvm-a and declare it on kvm-b; the VMMigration goes after the test."""
    def start(**spec: Any) -> GuestWatch:
        guest = {k: spec.pop(k) for k in ("dirty_mib", "dirty_rate_mib") if k in spec}
        watch = GuestWatch(sandbox.boot(sandbox.guest_spec(name, **guest), host=sandbox.hosts[0]))
        release.kubectl.apply(json.dumps({
            "apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"domain": name, "targetHypervisor": "kvm-b", **spec}}))
        return watch

    yield start
    release.kubectl("delete", "vmmigration", name, "-n", "default", "--ignore-not-found",
                    "--wait=true", "--timeout=60s", check=False)


def assert_moved_once(release: Release, sandbox: Sandbox, watch: GuestWatch, name: str) -> dict[str, Any]:
    """Placed on kvm-b, running there only, from its first boot, by one migration as libvirt
    itself recorded it, and one MigrationStarted."""
    placed = release.kubectl.wait_phase(name, "Placed", timeout=150)
    assert placed["currentHypervisor"] == "kvm-b", placed
    assert placed["attempts"] == 1, placed
    assert running_on(sandbox, name) == ["kvm-b"]
    assert incoming_migrations(sandbox.hosts, name) == 1
    assert release.kubectl.reasons(name).count("MigrationStarted") == 1
    watch.assert_kept_running(after=watch.count())
    return placed


def test_helm_install_starts_two_operator_pods_that_the_kubelets_probes_make_ready(
        release: Release) -> None:
    started = time.monotonic()
    installed = release.helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(release.values))
    assert "STATUS: deployed" in installed
    # The chart installed the CRDs into a cluster that had none, and its own objects.
    kubectl = release.kubectl
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/vmmigrations.vmmigration.dev")
    assert {h["metadata"]["name"] for h in json.loads(kubectl("get", "hypervisors", "-o", "json").stdout)[
        "items"]} == {"kvm-a", "kvm-b"}
    rule = kubectl.get("prometheusrule", RELEASE, NAMESPACE)
    plain = yaml.safe_load((REPO / "deploy" / "prometheus" / "vmmigration-rules.yaml").read_text())
    assert rule["spec"] == plain, "the installed PrometheusRule differs from the plain rules file"
    assert kubectl.get("servicemonitor", RELEASE, NAMESPACE)["spec"]["endpoints"][0]["port"] == "metrics"
    dashboard = kubectl.get("configmap", f"{RELEASE}-dashboard", NAMESPACE)
    assert json.loads(dashboard["data"]["vmmigration.json"])["panels"]
    pods = release.wait_ready(2)
    took = time.monotonic() - started
    startup = [_condition_time(p, "Ready") - _condition_time(p, "PodScheduled") for p in pods]
    _TESTBED.append(f"operator pods: helm install to 2 Ready in {took:.1f} s; scheduled to Ready "
                    f"{', '.join(f'{s:.0f}' for s in startup)} s (API's whole seconds)")
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, release.logs(name)
        # The chart's securityContext, as the kubelet and runc applied it, seen from inside.
        assert release.exec(name, "id", "-u").stdout.strip() == "65532"
        refused = release.exec(name, "touch", "/written")
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
        assert "CapEff:\t0000000000000000" in release.exec(name, "cat", "/proc/1/status").stdout
        # The emptyDirs are where the chart put them, and writable.
        assert release.exec(name, "touch", "/tmp/written").returncode == 0
    # Both replicas joined the peering object under their pod names; one acts.
    wait_until(lambda: set(release.peers()) >= {p["metadata"]["name"] for p in pods},
               timeout=60, what="both pods in the peering object")
    active = release.active()
    wait_until(lambda: all(
        any(c["type"] == "Reachable" and c["status"] == "True"
            for c in (release.kubectl.get("hypervisor", h, None).get("status") or {}).get("conditions") or ())
        for h in ("kvm-a", "kvm-b")), timeout=90,
        what=f"the active pod {active} to probe both Hypervisors over TLS")


def test_a_vmmigration_moves_a_real_guest_and_kubectl_logs_shows_it(
        release: Release, sandbox: Sandbox, move: Callable[..., GuestWatch], name: str) -> None:
    watch = move()
    release.kubectl("wait", "--for=condition=Ready", f"vmm/{name}", "-n", "default", "--timeout=150s")
    assert_moved_once(release, sandbox, watch, name)
    active = release.active()
    logged = wait_until(lambda: name in release.logs(active) and release.logs(active), timeout=30,
                        what=f"kubectl logs {active} to mention {name}")
    assert "Forbidden" not in logged, "the chart's RBAC refused the operator"


def test_the_metrics_service_is_scraped_through_its_cluster_ip(
        release: Release, tmp_path: Path) -> None:
    service = release.kubectl.get("service", f"{RELEASE}-metrics", NAMESPACE)
    address = f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"

    def scrape() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=3) as reply:
                return reply.read().decode()  # type: ignore[no-any-return]
        except OSError:
            return None
    text = wait_until(scrape, timeout=30, what=f"the metrics Service at {address}")
    assert "vmmigration_" in text
    assert "_created" not in text, "prometheus-client's _created series are off"
    # A real Prometheus, scraping through kube-proxy's rules as any in-cluster one would.
    plane = release.plane
    prometheus = PrometheusServer(root=tmp_path / "prometheus", address=plane.address,
                                  port=_free_port(plane.address), targets=[address],
                                  rules=REPO / "deploy" / "prometheus" / "vmmigration-rules.yaml")
    prometheus.up()
    try:
        wait_until(lambda: [r for r in prometheus.query("up") if r["value"][1] == "1"], timeout=30,
                   what="Prometheus to scrape the Service")
        wait_until(lambda: prometheus.query('{__name__=~"vmmigration_.+"}'), timeout=30,
                   what="vmmigration_ series in Prometheus")
    finally:
        prometheus.down()


def test_deleting_the_active_pod_mid_move_hands_the_move_to_the_other_replica_once(
        release: Release, sandbox: Sandbox, move: Callable[..., GuestWatch], name: str) -> None:
    watch = move(dirty_mib=24, dirty_rate_mib=1, **STEADY)
    migrating(release.kubectl, name)
    active = release.active()
    standby = next(p["metadata"]["name"] for p in release.ready_pods() if p["metadata"]["name"] != active)
    deleted = time.monotonic()
    release.kubectl("delete", "pod", active, "-n", NAMESPACE, "--wait=false")
    # kopf says goodbye on SIGTERM: the standby is alone at the top of the peering at once.
    wait_until(lambda: active not in release.peers() and release.active() == standby, timeout=60,
               what=f"{standby} to take over from {active}", interval=0.2)
    failover = time.monotonic() - deleted
    placed = assert_moved_once(release, sandbox, watch, name)
    settled = time.monotonic() - deleted
    assert placed["sourceHypervisor"] == "kvm-a"
    # The Deployment replaced the deleted pod.
    release.wait_ready(2, without=frozenset({active}))
    _TESTBED.append(f"failover: active pod deleted mid-move, standby active after {failover:.1f} s, "
                    f"move Placed {settled:.1f} s after the delete")
    assert name in release.logs(standby)


def test_the_pdb_refuses_an_eviction_that_would_leave_no_replica(release: Release) -> None:
    pdb = wait_until(lambda: (found := release.kubectl.get("pdb", RELEASE, NAMESPACE))["status"].get(
        "disruptionsAllowed") == 1 and found, timeout=60, what="the PDB to allow one disruption")
    assert pdb["spec"]["minAvailable"] == 1
    active = release.active()
    standby = next(p["metadata"]["name"] for p in release.ready_pods() if p["metadata"]["name"] != active)

    def evict(pod: str) -> subprocess.CompletedProcess[str]:
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": pod, "namespace": NAMESPACE}}
        return release.kubectl("create", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/eviction",
                               "-f", "-", input=json.dumps(eviction), check=False)

    first = evict(standby)
    assert first.returncode == 0, first.stderr
    second = evict(active)
    assert second.returncode != 0 and "disruption budget" in second.stderr, second
    assert active in {p["metadata"]["name"] for p in release.ready_pods()}, "a refused eviction evicts nothing"
    release.wait_ready(2, without=frozenset({standby}))
    # The replacement joins as the standby: the elder replica keeps acting.
    wait_until(lambda: len(release.peers()) == 2, timeout=30, what="the replacement in the peering object")
    assert release.active() == active, "a new replica preempted the one acting"


def test_helm_upgrade_with_a_changed_value_rolls_the_pods_and_keeps_the_moves_outcome(
        release: Release, sandbox: Sandbox, move: Callable[..., GuestWatch], name: str) -> None:
    before = {p["metadata"]["name"] for p in release.ready_pods()}
    watch = move(dirty_mib=24, dirty_rate_mib=1, **STEADY)
    migrating(release.kubectl, name)
    release.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(release.values),
                 "--set", "settings.probeIntervalSeconds=3")
    release.kubectl("rollout", "status", f"deployment/{RELEASE}", "-n", NAMESPACE, "--timeout=180s")
    assert_moved_once(release, sandbox, watch, name)
    pods = release.wait_ready(2, without=frozenset(before))
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["VMMIGRATION_PROBE_INTERVAL_SECONDS"] == "3"


def test_helm_uninstall_removes_the_operator_pods(release: Release) -> None:
    release.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=120s")
    wait_until(lambda: not release.pods(), timeout=90, what="the operator pods to go")
    assert not json.loads(release.kubectl("get", "hypervisors", "-o", "json").stdout)["items"]
