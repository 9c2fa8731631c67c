"""The few Kubernetes API calls the runtime makes itself (kopf makes the rest).

kopf daemons cannot return a status patch the way handlers do, so progress
and outcomes are written here with JSON merge patches on the status
subresource. The client is synchronous; callers run it in a thread.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from vmmigration.core.config import SHARD_LABEL
from vmmigration.core.errors import CredentialsError

GROUP = "vmmigration.dev"
VERSION = "v1alpha1"


class KubeClient:
    """``shard``: the replica's shard (see Settings.shard); it lists only its own
    resources and labels what it creates, so another shard never sees them."""

    def __init__(self, *, connections: int = 32, shard: str = "") -> None:
        # Imported here so the pure layers never pull in the client.
        import kubernetes

        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        config = kubernetes.client.Configuration.get_default_copy()
        # One pooled connection per worker thread that writes statuses; the
        # default (5 per CPU) is fewer, and each extra connection would be a
        # new TLS handshake per status patch in a burst.
        config.connection_pool_maxsize = connections
        api = kubernetes.client.ApiClient(config)
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self._core = kubernetes.client.CoreV1Api(api)
        self._shard = shard
        self._selector = f"{SHARD_LABEL}={shard}" if shard else f"!{SHARD_LABEL}"

    def patch_vmmigration_status(self, *, namespace: str, name: str,
                                 patch: Mapping[str, Any]) -> None:
        self._custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "vmmigrations", name, {"status": patch})

    def list_vmmigrations(self) -> list[Mapping[str, Any]]:
        listed = self._custom.list_cluster_custom_object(GROUP, VERSION, "vmmigrations",
                                                         label_selector=self._selector)
        return list(listed.get("items") or ()) if isinstance(listed, Mapping) else []

    def create_vmmigration(self, *, namespace: str, body: Mapping[str, Any]) -> bool:
        import kubernetes

        made = dict(body)
        if self._shard:
            metadata = dict(made.get("metadata") or {})
            metadata["labels"] = {**dict(metadata.get("labels") or {}), SHARD_LABEL: self._shard}
            made["metadata"] = metadata
        try:
            self._custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "vmmigrations",
                                                         made)
        except kubernetes.client.ApiException as error:
            if error.status == 409:  # made by an earlier pass (or an earlier replica)
                return False
            raise
        return True

    def delete_vmmigration(self, *, namespace: str, name: str) -> None:
        import kubernetes

        try:
            self._custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "vmmigrations", name)
        except kubernetes.client.ApiException as error:
            if error.status != 404:  # gone already is what we wanted
                raise

    def patch_vmmigration_annotations(self, *, namespace: str, name: str,
                                      annotations: Mapping[str, str | None]) -> None:
        self._custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "vmmigrations", name,
            {"metadata": {"annotations": dict(annotations)}})

    def list_hypervisor_pools(self) -> list[Mapping[str, Any]]:
        listed = self._custom.list_cluster_custom_object(GROUP, VERSION, "hypervisorpools",
                                                         label_selector=self._selector)
        return list(listed.get("items") or ()) if isinstance(listed, Mapping) else []

    def patch_pool_status(self, *, name: str, patch: Mapping[str, Any]) -> None:
        self._custom.patch_cluster_custom_object_status(GROUP, VERSION, "hypervisorpools", name,
                                                        {"status": dict(patch)})

    def read_secret(self, *, namespace: str, name: str) -> dict[str, bytes]:
        import kubernetes

        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except kubernetes.client.ApiException as error:
            # Status and reason only: the response body is not ours to repeat.
            raise CredentialsError(f"cannot read Secret {namespace}/{name}: "
                                   f"{error.status} {error.reason}") from None
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
