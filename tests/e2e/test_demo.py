"""`make demo`'s run command, end to end: what a newcomer sees on a fresh machine.

It runs scripts/demo (everything but the installs, which the test suite's own
bootstrap has done) in a sandbox directory of its own, then tears it down.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

from .conftest import REPO


def test_the_demo_moves_both_example_vms_under_the_operator_and_tells_the_user_where_to_look() -> None:
    # A short root: containerd's socket under it must fit a unix socket address.
    root = tempfile.mkdtemp(prefix="vmm-demo-")
    env = {**os.environ, "VMMIGRATION_SANDBOX_DIR": root}
    testbed = [sys.executable, "-m", "vmtestbed.cli"]
    try:
        shown = subprocess.run([str(REPO / "scripts" / "demo")], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=600)
        assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
        out = shown.stdout
        for step in ("two libvirt hosts", "a kubelet node", "the operator image", "helm install vmmigration",
                     "the operator, under the chart's ServiceAccount, in the pods the kubelet started",
                     "2 pods Ready", "Prometheus on http://127.0.10.1:9090", "kubectl apply examples/live.yaml"):
            assert step in out, step
        happened = out[out.index("What happened"):]
        rows = {m.group(1): m.group(0) for m in re.finditer(r"│ (demo-\w+) .*", happened)}
        assert set(rows) == {"demo-web", "demo-hot"}, happened
        assert all("Placed" in row and "kvm-b" in row for row in rows.values()), happened
        assert "LiveSuspended" in rows["demo-hot"] and "Live " in rows["demo-web"]
        assert happened.count("1 boot, no corruption") == 2, happened
        # The busy guest was planned by measurement, and the summary sets forecast against actual.
        assert "demo-hot planned Hybrid: forecast" in happened, happened
        assert "Live/succeeded: 1" in out and "LiveSuspended/succeeded: 1" in out
        assert "export KUBECONFIG=" in out and "/metrics" in out and "make demo-down" in out
    except AssertionError:
        print(_operator_logs(out=shown.stdout))
        raise
    finally:
        down = subprocess.run([*testbed, "demo", "down"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "kube-apiserver" in down.stdout and "kubelet" in down.stdout and "libvirtd" in down.stdout
    shutil.rmtree(root, ignore_errors=True)


def _operator_logs(*, out: str) -> str:
    """The pods' own logs, for a failed run: the demo prints the kubeconfig and PATH to read them with."""
    config = re.search(r"export KUBECONFIG=(\S+)", out)
    path = re.search(r"export PATH=([^:\s]+):", out)
    if not (config and path):
        return "(no cluster to read the operator's logs from)"
    done = subprocess.run([f"{path.group(1)}/kubectl", f"--kubeconfig={config.group(1)}", "logs", "-n",
                           "vmmigration-system", "-l", "app.kubernetes.io/name=vmmigration-operator",
                           "--prefix", "--tail=300"], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr
