"""The Kubernetes API as the command line's verbs use it, with kubectl's way of finding the cluster.

The operator's own client (``client.py``) runs in the cluster; this one runs
on a user's machine: ``--kubeconfig``, then ``$KUBECONFIG``, then
``~/.kube/config``, then the in-cluster ServiceAccount, and the context's
namespace as the default. Every failure — a refusal of the API server, no
connection, no usable kubeconfig — becomes an :class:`ApiError` whose message
is one line a person can act on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vmmigration.adapters.kube.client import GROUP, VERSION

# Where a Pod finds its ServiceAccount; kubectl reads the namespace from here too.
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Connect fast, and give a list of thousands of objects time to arrive.
TIMEOUT = (10.0, 60.0)


class ApiError(Exception):
    """The Kubernetes API refused or failed a request; the message is one line for the user."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status


class NotFound(ApiError):
    pass


def describe(*, status: int | None, reason: str | None, body: str | None) -> str:
    """The API server's own Status message (it names the user, the verb and the field); else the code."""
    message = ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = str(json.loads(body or "").get("message") or "")
    if status == 401:
        return "unauthorized: the API server did not accept these credentials (expired token?)"
    return message or f"the API server answered {status} {reason or ''}".strip()


def unreachable(server: str, error: BaseException) -> str:
    """``cannot reach the API server at https://…: connection refused``, without urllib3's object reprs."""
    cause = getattr(error, "reason", None) or error
    text = str(cause)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        text = found.group(1).strip().lower()
    else:
        text = re.sub(r"<[^>]*>:?\s*", "", text).strip() or type(cause).__name__
    return f"cannot reach the API server at {server}: {text}"


class Cluster:
    """One cluster and user, chosen as kubectl chooses them; VMMigrations, Hypervisors and
    HypervisorPools in it."""

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None) -> None:
        import kubernetes

        self.server = "the API server"
        configuration = kubernetes.client.Configuration()
        with self._config_errors():
            paths = _kubeconfig_paths(kubeconfig)
            if paths:
                self.namespace = _context_namespace(os.pathsep.join(paths), context)
                kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.pathsep.join(paths), context=context,
                    client_configuration=configuration, persist_config=False)
            elif _in_cluster():
                if context:
                    raise ApiError(f"--context {context}: there is no kubeconfig, only the in-cluster "
                                   "ServiceAccount")
                kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
                self.namespace = _read(SERVICE_ACCOUNT / "namespace") or "default"
            else:
                raise ApiError("no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, "
                               "or create ~/.kube/config")
        self.server = str(configuration.host)
        # Like kubectl, say at once that the server is not there; urllib3 would
        # retry three times, logging a warning each time.
        configuration.retries = 0
        self._custom = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))

    # ---- Hypervisors (cluster-scoped) ------------------------------------------------

    def hypervisors(self, *, selector: str | None = None) -> list[dict[str, Any]]:
        """All of them, or those whose labels match ``selector`` (the API server's syntax)."""
        with self._calls():
            listed = self._custom.list_cluster_custom_object(
                GROUP, VERSION, "hypervisors", label_selector=selector, _request_timeout=TIMEOUT)
        return _items(listed)

    def hypervisor(self, name: str) -> dict[str, Any]:
        with self._calls():
            return _object(self._custom.get_cluster_custom_object(
                GROUP, VERSION, "hypervisors", name, _request_timeout=TIMEOUT))

    def patch_hypervisor(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the object (not its status): ``{"spec": {"maintenance": true}}``."""
        with self._calls():
            return _object(self._custom.patch_cluster_custom_object(
                GROUP, VERSION, "hypervisors", name, dict(patch), _request_timeout=TIMEOUT))

    def delete_hypervisor(self, name: str) -> dict[str, Any]:
        """The API server's answer: the object, marked for deletion while finalizers hold it."""
        with self._calls():
            return _object(self._custom.delete_cluster_custom_object(
                GROUP, VERSION, "hypervisors", name, _request_timeout=TIMEOUT))

    # ---- HypervisorPools (cluster-scoped) --------------------------------------------

    def hypervisorpools(self) -> list[dict[str, Any]]:
        with self._calls():
            listed = self._custom.list_cluster_custom_object(
                GROUP, VERSION, "hypervisorpools", _request_timeout=TIMEOUT)
        return _items(listed)

    def hypervisorpool(self, name: str) -> dict[str, Any]:
        with self._calls():
            return _object(self._custom.get_cluster_custom_object(
                GROUP, VERSION, "hypervisorpools", name, _request_timeout=TIMEOUT))

    # ---- VMMigrations ---------------------------------------------------------------

    def vmmigrations(self, namespace: str | None, *, selector: str | None = None) -> list[dict[str, Any]]:
        """Those of one namespace, or of all (``None``); only those ``selector`` matches, if given."""
        with self._calls():
            if namespace is None:
                listed = self._custom.list_cluster_custom_object(
                    GROUP, VERSION, "vmmigrations", label_selector=selector, _request_timeout=TIMEOUT)
            else:
                listed = self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "vmmigrations", label_selector=selector,
                    _request_timeout=TIMEOUT)
        return _items(listed)

    def vmmigration(self, namespace: str, name: str) -> dict[str, Any]:
        with self._calls():
            return _object(self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "vmmigrations", name, _request_timeout=TIMEOUT))

    def create_vmmigration(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self._calls():
            return _object(self._custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "vmmigrations", dict(body), _request_timeout=TIMEOUT))

    def patch_vmmigration(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the object (not its status)."""
        with self._calls():
            return _object(self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "vmmigrations", name, dict(patch),
                _request_timeout=TIMEOUT))

    # ---- errors ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _calls(self) -> Iterator[None]:
        import kubernetes
        import urllib3

        try:
            yield
        except kubernetes.client.ApiException as error:
            kind = NotFound if error.status == 404 else ApiError
            raise kind(describe(status=error.status, reason=error.reason, body=error.body),
                       status=error.status) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ApiError(unreachable(self.server, error)) from None

    @contextlib.contextmanager
    def _config_errors(self) -> Iterator[None]:
        import kubernetes

        try:
            yield
        except kubernetes.config.ConfigException as error:
            raise ApiError(f"kubeconfig: {error}") from None
        except OSError as error:
            raise ApiError(f"kubeconfig: cannot read {error.filename or ''}: {error.strerror}") from None
        except ValueError as error:  # YAML that is not a kubeconfig (yaml's errors are ValueErrors too)
            raise ApiError(f"kubeconfig: {error}") from None


def _kubeconfig_paths(flag: str | None) -> list[str]:
    """The kubeconfig files to merge, as kubectl finds them; empty when there are none."""
    if flag:
        if not Path(flag).expanduser().is_file():
            raise ApiError(f"kubeconfig {flag} does not exist")
        return [str(Path(flag).expanduser())]
    listed = os.environ.get("KUBECONFIG")
    candidates = listed.split(os.pathsep) if listed else ["~/.kube/config"]
    return [str(Path(p).expanduser()) for p in candidates if p and Path(p).expanduser().is_file()]


def _context_namespace(config_file: str, context: str | None) -> str:
    import kubernetes

    contexts, current = kubernetes.config.list_kube_config_contexts(config_file)  # type: ignore[no-untyped-call]
    if context is not None:
        current = next((c for c in contexts or () if c.get("name") == context), None)
        if current is None:
            raise ApiError(f"context {context!r} is not in the kubeconfig")
    namespace = ((current or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT / "token").is_file()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _items(listed: Any) -> list[dict[str, Any]]:
    items = listed.get("items") if isinstance(listed, Mapping) else None
    return [dict(i) for i in items or () if isinstance(i, Mapping)]


def _object(found: Any) -> dict[str, Any]:
    return dict(found) if isinstance(found, Mapping) else {}
