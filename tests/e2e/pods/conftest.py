"""Pods that really run: a small real cluster of this package's own (an API server on
the pod bridge, the controllers, one kubelet node), up for this package only.

Package-scoped, not session-scoped: the node's kube-proxy owns the machine's
KUBE-* iptables chains, so no other node (the demo's) may run beside it, and its
kubelet and controllers should not load the machine during the later tiers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmmigration.core.config import Settings
from vmtestbed.controlplane import binaries
from vmtestbed.node import NodeCluster

from ...conftest import _TESTBED, TEST_SUBNET


@pytest.fixture(scope="package")
def node_cluster() -> Iterator[NodeCluster]:
    made = NodeCluster(root=Settings.from_env().test_sandbox_dir / "node-cluster",
                       subnet=TEST_SUBNET, bin_dir=binaries())
    try:
        status = made.up()
        _TESTBED.append(f"node {made.node.name} Ready in {status['node']['upSeconds']} s "  # type: ignore[index]
                        f"(API server up in {status['controlPlane']['upSeconds']} s)")  # type: ignore[index]
        yield made
    finally:
        made.down()
