"""The Helm chart, with the real helm: lint, a template snapshot, and what it must contain.

Refresh the snapshots after an intended change with
``VMMIGRATION_UPDATE_SNAPSHOTS=1 pytest tests/artifacts/test_chart.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from .conftest import CHART, ROOT

SNAPSHOTS = ROOT / "tests" / "artifacts" / "snapshots"
FULL = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "dashboard.enabled=true",
        "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
        "--set", "hypervisors[0].name=kvm-a", "--set", "hypervisors[0].uri=qemu+tls://kvm-a.lab/system",
        "--set", "hypervisors[0].credentialsSecretRef.name=kvm-a-tls",
        "--set", "hypervisors[0].labels.vmmigration\\.dev/zone=lab"]


# The release the local control plane runs (tests/controlplane/go.mod).
KUBE_VERSION = "v1.34.4"


def template(helm: str, *args: str) -> str:
    result = subprocess.run([helm, "template", "vmmigration", str(CHART), "--namespace",
                             "vmmigration-system", "--include-crds", "--kube-version", KUBE_VERSION,
                             *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_helm_lint_is_clean(helm: str) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name,args", [("default", []), ("full", FULL)])
def test_the_rendered_manifests_match_their_snapshot(helm: str, name: str, args: list[str]) -> None:
    rendered = template(helm, *args)
    snapshot = SNAPSHOTS / f"chart-{name}.yaml"
    if os.environ.get("VMMIGRATION_UPDATE_SNAPSHOTS"):
        snapshot.write_text(rendered)
    assert snapshot.exists(), "no snapshot yet: run with VMMIGRATION_UPDATE_SNAPSHOTS=1"
    assert rendered == snapshot.read_text(), (
        f"helm template differs from {snapshot.name}; if intended, refresh with "
        "VMMIGRATION_UPDATE_SNAPSHOTS=1")


def test_the_chart_carries_exactly_the_crds_in_crds() -> None:
    shipped = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    charted = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert charted == shipped, "copy crds/*.yaml to charts/vmmigration-operator/crds/"


# What an OpenAPI schema node of a CRD may hold. Anything else is a slip the API
# server only warns about: an unquoted comma in a YAML flow mapping makes the
# rest of a description a key of its own.
SCHEMA_KEYWORDS = {
    "type", "description", "properties", "items", "enum", "format", "minimum", "maximum", "required",
    "additionalProperties", "default", "pattern", "maxLength", "minLength", "nullable", "minItems",
    "maxItems", "oneOf", "anyOf", "allOf", "not", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "uniqueItems", "minProperties", "maxProperties", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string", "x-kubernetes-validations", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-embedded-resource",
}


def _strays(node: Any, path: str) -> list[str]:
    if not isinstance(node, dict):
        return []
    found = [f"{path}: {sorted(set(node) - SCHEMA_KEYWORDS)}"] if set(node) - SCHEMA_KEYWORDS else []
    for name, child in (node.get("properties") or {}).items():
        found += _strays(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        found += _strays(node.get(key), f"{path}.{key}")
    return found


def test_every_crd_schema_node_holds_only_schema_keywords() -> None:
    strays = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for version in yaml.safe_load(path.read_text())["spec"]["versions"]:
            strays += _strays(version["schema"]["openAPIV3Schema"], f"{path.name} {version['name']}")
    assert not strays, "keys that are no schema keyword (quote descriptions with commas):\n" + "\n".join(strays)


def test_the_chart_grants_exactly_the_rbac_of_deploy_rbac_yaml(helm: str) -> None:
    deploy = objects((ROOT / "deploy" / "rbac.yaml").read_text())
    chart = objects(template(helm))
    for kind in ("ClusterRole", "Role"):
        want = [r for d in find(deploy, kind) for r in d["rules"]]
        got = [r for d in find(chart, kind) for r in d["rules"]]
        assert got == want, kind
    binding = find(chart, "ClusterRoleBinding")[0]
    account = find(chart, "ServiceAccount")[0]["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": "vmmigration-system"}]
    assert binding["roleRef"]["name"] == find(chart, "ClusterRole")[0]["metadata"]["name"]


def test_the_operator_pod_is_restricted_and_probed_on_kopfs_health_endpoint(helm: str) -> None:
    deployment = find(objects(template(helm)), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert env["VMMIGRATION_PEERING"]["value"] == "vmmigration"
    assert env["VMMIGRATION_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert deployment["spec"]["replicas"] == 2
    budget = find(objects(template(helm)), "PodDisruptionBudget")[0]
    assert budget["spec"]["minAvailable"] == 1
    assert not find(objects(template(helm, "--set", "replicaCount=1")), "PodDisruptionBudget")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", env["VMMIGRATION_CREDENTIALS_DIR"]["value"]} <= mounts


def test_monitoring_objects_render_only_where_they_can_be_applied(helm: str) -> None:
    plain = objects(template(helm))
    assert not find(plain, "PrometheusRule") and not find(plain, "ServiceMonitor")
    assert find(plain, "Service")[0]["spec"]["ports"][0]["port"] == 8000
    full = objects(template(helm, *FULL))
    rule = find(full, "PrometheusRule")[0]
    plain_rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "vmmigration-rules.yaml").read_text())
    assert rule["spec"] == plain_rules
    monitor = find(full, "ServiceMonitor")[0]
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    service = find(full, "Service")[0]
    assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "vmmigration-operator"
    dashboard = find(full, "ConfigMap")[0]
    assert json.loads(dashboard["data"]["vmmigration.json"])["uid"] == "vmmigration-overview"
    hypervisor = find(full, "Hypervisor")[0]
    assert hypervisor["metadata"]["name"] == "kvm-a"
    assert hypervisor["spec"]["credentialsSecretRef"] == {"name": "kvm-a-tls"}
    assert hypervisor["metadata"]["labels"]["vmmigration.dev/zone"] == "lab"


HYPERVISORS = ["--set", "hypervisors[0].name=kvm-a", "--set", "hypervisors[0].uri=qemu+tcp://kvm-a/system",
               "--set", "hypervisors[1].name=kvm-b", "--set", "hypervisors[1].uri=qemu+tcp://kvm-b/system"]


def hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]


def test_the_uninstall_hook_renders_only_for_hypervisors_of_the_release_and_runs_before_deletion(
        helm: str) -> None:
    assert not hooks(objects(template(helm)))
    assert not hooks(objects(template(helm, *HYPERVISORS, "--set", "uninstallHook.enabled=false")))
    rendered = hooks(objects(template(helm, *HYPERVISORS)))
    assert sorted(d["kind"] for d in rendered) == ["ClusterRole", "ClusterRoleBinding", "Job", "ServiceAccount"]
    weight = {}
    for doc in rendered:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        weight[doc["kind"]] = int(annotations["helm.sh/hook-weight"])
    # Helm creates hooks by weight: the Job's rights exist before the Job starts.
    assert weight["Job"] > max(w for kind, w in weight.items() if kind != "Job")


def test_the_uninstall_hook_may_only_delete_the_releases_hypervisors_and_waits_for_them(helm: str) -> None:
    docs = objects(template(helm, *HYPERVISORS, "--set", "uninstallHook.timeoutSeconds=90"))
    [role] = hooks(find(docs, "ClusterRole"))
    assert role["rules"] == [
        {"apiGroups": ["vmmigration.dev"], "resources": ["hypervisors"], "resourceNames": ["kvm-a", "kvm-b"],
         "verbs": ["delete"]},
        {"apiGroups": ["vmmigration.dev"], "resources": ["hypervisors"], "verbs": ["list"]}]
    [account] = hooks(find(docs, "ServiceAccount"))
    [binding] = hooks(find(docs, "ClusterRoleBinding"))
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "vmmigration-system"}]
    [job] = find(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    [container] = pod["containers"]
    assert container["args"] == ["delete", "hv", "kvm-a", "kvm-b", "--wait", "--timeout", "90"]
    assert job["spec"]["backoffLimit"] <= 2 and 90 < job["spec"]["activeDeadlineSeconds"] <= 300
    # The operator's image, run as restricted as the operator.
    operator_pod = find(docs, "Deployment")[0]["spec"]["template"]["spec"]
    [operator] = operator_pod["containers"]
    assert (container["image"], container["imagePullPolicy"]) == (operator["image"], operator["imagePullPolicy"])
    assert container["securityContext"] == operator["securityContext"]
    assert pod["securityContext"] == operator_pod["securityContext"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    # Not one of the operator's pods to its Service and PodDisruptionBudget.
    selector = find(docs, "Deployment")[0]["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("bad,message", [
    (["--set", "replicaCount=-1"], "replicaCount"),
    (["--set", "settings.maxConcurrentMigrations=0"], "maxConcurrentMigrations"),
    (["--set", "metrics.port=70000"], "port"),
    (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set", "hypervisors[0].name=kvm-a"], "uri"),
    (["--set", "peering.name=Not_A_Name"], "peering"),
    (["--set", "unknownKey=1"], "unknownKey"),
    (["--set", "uninstallHook.timeoutSeconds=0"], "timeoutSeconds"),
    (["--set", "uninstallHook.wait=true"], "wait"),
])
def test_bad_values_are_refused_by_the_schema_with_the_field_named(helm: str, bad: list[str],
                                                                   message: str) -> None:
    result = subprocess.run([helm, "template", "x", str(CHART), "--kube-version", KUBE_VERSION, *bad],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
