"""What the API verbs (get, move, abort, watch, delete) share: the cluster, and one VMMigration in it."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from vmmigration.adapters.kube.api import ApiError, Cluster, NotFound
from vmmigration.core.moves import get

F = TypeVar("F", bound=Callable[..., object])


@dataclasses.dataclass(frozen=True)
class Where:
    """The cluster and namespace the user pointed at, as kubectl's flags do."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None

    def connect(self) -> tuple[Cluster, str]:
        """The cluster, and the namespace to use: -n, else the context's, else ``default``."""
        cluster = Cluster(kubeconfig=self.kubeconfig, context=self.context)
        return cluster, self.namespace or cluster.namespace


def cluster_options(command: F) -> F:
    """--kubeconfig, --context and -n/--namespace, handed to the command as one ``where``."""

    @functools.wraps(command)
    def wrapper(*args: Any, kubeconfig: str | None, context: str | None, namespace: str | None,
                **kwargs: Any) -> object:
        return command(*args, where=Where(kubeconfig, context, namespace), **kwargs)

    wrapped: Any = wrapper
    for option in (
        click.option("-n", "--namespace", default=None, metavar="NAMESPACE",
                     help="Namespace of the VMMigrations (default: the context's)."),
        click.option("--context", default=None, metavar="NAME",
                     help="kubeconfig context to use (default: the current one)."),
        click.option("--kubeconfig", default=None, metavar="PATH",
                     help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)."),
    ):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]


def find(cluster: Cluster, namespace: str, ref: str) -> dict[str, Any]:
    """The VMMigration named ``ref``, or else the one that manages the domain ``ref``."""
    try:
        return cluster.vmmigration(namespace, ref)
    except NotFound:
        pass
    mine = [i for i in cluster.vmmigrations(namespace) if get(i, "spec", "domain") == ref]
    if len(mine) == 1:
        return mine[0]
    if mine:
        names = ", ".join(sorted(str(get(i, "metadata", "name")) for i in mine))
        raise ApiError(f"domain {ref} has {len(mine)} VMMigrations in namespace {namespace} ({names}); "
                       "name one")
    raise NotFound(f"no VMMigration named {ref}, or managing a domain {ref}, in namespace {namespace}",
                   status=404)


def key(obj: Mapping[str, Any]) -> str:
    return f"{get(obj, 'metadata', 'namespace')}/{get(obj, 'metadata', 'name')}"
