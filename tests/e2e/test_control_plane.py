"""The local control plane is a real Kubernetes API server: the pinned
release, real ServiceAccount tokens and real RBAC."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmtestbed.controlplane import REPO_ROOT, ControlPlane, binaries

pytestmark = pytest.mark.e2e

# Beside the demo's 127.0.10.1, so both can run at once.
ADDRESS = "127.0.11.1"
NAMESPACE = "vmmigration-e2e"
ACCOUNT = "operator"


def _pinned_release() -> str:
    # go.mod is the one place the release is written down.
    for line in (REPO_ROOT / "tests" / "controlplane" / "go.mod").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["k8s.io/kubernetes"]:
            return parts[1]
    raise AssertionError("go.mod pins no k8s.io/kubernetes")


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    control_plane = ControlPlane(root=tmp_path_factory.mktemp("controlplane"), address=ADDRESS,
                                 port=_free_port(ADDRESS), bin_dir=binaries())
    try:
        control_plane.up()
        yield control_plane
    finally:
        control_plane.down()


@pytest.fixture(scope="module")
def account_kubeconfig(plane: ControlPlane) -> Path:
    return plane.service_account_kubeconfig(namespace=NAMESPACE, name=ACCOUNT,
                                            path=plane.root / "operator.kubeconfig")


def _can_list_secrets(plane: ControlPlane, kubeconfig: Path | None = None) -> str:
    # can-i prints yes/no and exits 1 on "no": the answer is the output.
    result = plane.kubectl("auth", "can-i", "list", "secrets", "-n", NAMESPACE,
                           kubeconfig=kubeconfig, check=False)
    return result.stdout.strip()


def test_the_server_reports_the_release_pinned_in_go_mod(plane: ControlPlane) -> None:
    version = json.loads(plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == _pinned_release() == "v1.34.4"


def test_the_admin_kubeconfig_is_a_system_masters_client_certificate(plane: ControlPlane) -> None:
    review = json.loads(plane.kubectl("auth", "whoami", "-o", "json").stdout)
    assert "system:masters" in review["status"]["userInfo"]["groups"]
    assert _can_list_secrets(plane) == "yes"


def test_a_service_account_kubeconfig_authenticates_as_that_service_account_with_a_token(
    plane: ControlPlane, account_kubeconfig: Path
) -> None:
    config = json.loads(account_kubeconfig.read_text())
    user = config["users"][0]["user"]
    assert set(user) == {"token"}, "no admin certificate may leak into it"
    review = json.loads(plane.kubectl("auth", "whoami", "-o", "json",
                                      kubeconfig=account_kubeconfig).stdout)
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"


def test_asking_twice_for_a_service_account_kubeconfig_is_harmless(
    plane: ControlPlane, account_kubeconfig: Path
) -> None:
    again = plane.service_account_kubeconfig(namespace=NAMESPACE, name=ACCOUNT,
                                             path=plane.root / "again.kubeconfig")
    review = json.loads(plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=again).stdout)
    assert review["status"]["userInfo"]["username"].endswith(f":{NAMESPACE}:{ACCOUNT}")


def test_rbac_denies_the_service_account_secrets_until_a_role_grants_them(
    plane: ControlPlane, account_kubeconfig: Path
) -> None:
    assert _can_list_secrets(plane, account_kubeconfig) == "no"
    denied = plane.kubectl("get", "secrets", "-n", NAMESPACE, kubeconfig=account_kubeconfig,
                           check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "read-secrets", "namespace": NAMESPACE},
         "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "read-secrets", "namespace": NAMESPACE},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
         "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}]},
    ]}))
    # The authorizer reads RBAC objects from an informer: a grant lands
    # within moments, not synchronously with the apply.
    deadline = time.monotonic() + 10
    while _can_list_secrets(plane, account_kubeconfig) != "yes" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _can_list_secrets(plane, account_kubeconfig) == "yes"
    plane.kubectl("get", "secrets", "-n", NAMESPACE, kubeconfig=account_kubeconfig)
    # A Role is namespaced: every other namespace stays closed.
    elsewhere = plane.kubectl("auth", "can-i", "list", "secrets", "-n", "default",
                              kubeconfig=account_kubeconfig, check=False)
    assert elsewhere.stdout.strip() == "no"
