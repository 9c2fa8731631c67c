"""The fault-injection tier: real migrations while processes are killed and restarted.

It runs beside the e2e tier, never inside it: its own control plane, its own
three libvirt hosts and its own operator, because it kills and restarts all of
them. The e2e fixtures that only build on these (``kubectl``, ``operator``,
``vmm``, ``boot``, ``name``) are reused: pytest resolves their dependencies to
the overrides below for tests in this directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from vmmigration.core.config import Settings
from vmtestbed.controlplane import ControlPlane, binaries
from vmtestbed.testbed import Sandbox

from ..conftest import REPO
from ..e2e.conftest import HOSTS, OPERATOR_ENV, Kubectl, Operator, _free_port, start_operator
from ..e2e.conftest import kubectl, operator, vmm  # noqa: F401  (fixtures, re-registered here)
from .helpers import refused_outside_outages

ADDRESS = os.environ.get("VMMIGRATION_FAULTS_ADDRESS", "127.0.16.1")
# Subnets in use elsewhere: 0 the demo, 1 the e2e and integration tiers, 2 the benches,
# 3 the test bed's own recovery test.
SUBNET = int(os.environ.get("VMMIGRATION_FAULTS_SUBNET", "6"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from .test_link_faults import TIMINGS

    for label, seconds in TIMINGS.items():
        terminalreporter.write_line(f"link fault timing: {label}: {seconds:.1f} s")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(root=Settings.from_env().test_sandbox_dir / "faults", count=3, subnet=SUBNET)
    box.up()
    yield box
    box.down()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    root = Settings.from_env().test_sandbox_dir / "faults-controlplane"
    plane = ControlPlane(root=root, address=ADDRESS, port=_free_port(ADDRESS), bin_dir=binaries())
    plane.up()
    try:
        plane.install_operator_manifests(REPO)
        yield plane
    finally:
        plane.down()


def hypervisors(sandbox: Sandbox) -> str:
    return "\n---\n".join(json.dumps({
        "apiVersion": "vmmigration.dev/v1alpha1", "kind": "Hypervisor",
        "metadata": {"name": name, "labels": {"vmmigration.dev/zone": "lab"}},
        "spec": {"uri": host.uri, "migrationAddress": host.migration_host,
                 "maxInboundMigrations": 2, "maxOutboundMigrations": 2}})
        for name, host in zip(HOSTS, sandbox.hosts, strict=True))


@pytest.fixture(scope="session")
def operator_process(control_plane: ControlPlane, kubectl: Kubectl, sandbox: Sandbox,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    kubectl.apply(hypervisors(sandbox))
    env = {**OPERATOR_ENV, "VMMIGRATION_METRICS_ADDRESS": ADDRESS,
           "VMMIGRATION_METRICS_PORT": str(_free_port(ADDRESS)),
           "VMMIGRATION_HEALTH_ADDRESS": ADDRESS, "VMMIGRATION_HEALTH_PORT": str(_free_port(ADDRESS)),
           # A frozen libvirtd is reported within seconds, not the default 20.
           "VMMIGRATION_PROBE_TIMEOUT_SECONDS": "5",
           # A resume stuck in a wedged target's Prepare is handed over in 20 s, not 60
           # (a well target prepares one in about 1.5 s).
           "VMMIGRATION_POSTCOPY_RESUME_TRY_SECONDS": "20"}
    operator = start_operator(control_plane=control_plane, kubectl=kubectl,
                              logs=tmp_path_factory.mktemp("faults-operator"), env=env)
    yield operator
    operator.stop()
    forbidden = refused_outside_outages(operator.logs())
    assert not forbidden, "the operator was refused by RBAC:\n" + "\n".join(forbidden[:10])
