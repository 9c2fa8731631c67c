"""What GitOps tools read: observedGeneration and Ready stay honest across a change of
target, `kubectl wait` works on them, and the Argo CD health check agrees."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from typing import Any

from vmtestbed.testbed import Sandbox

from ..artifacts.test_gitops_health import ARGO, health
from ..conftest import GuestWatch
from .conftest import Kubectl, running_on, wait_until


def manifest(name: str, target: str) -> str:
    return json.dumps({"apiVersion": "vmmigration.dev/v1alpha1", "kind": "VMMigration",
                       "metadata": {"name": name, "namespace": "default"},
                       "spec": {"domain": name, "targetHypervisor": target}})


def test_a_new_target_from_git_is_waited_for_honestly_and_argo_cd_sees_it_progress_then_heal(
        kubectl: Kubectl, sandbox: Sandbox, boot: Callable[..., GuestWatch], name: str,
        vmm: Callable[..., str]) -> None:
    lua = shutil.which("lua5.1")
    assert lua, "scripts/bootstrap installs lua5.1"
    watch = boot(name)
    vmm(name, domain=name, targetHypervisor="kvm-b")
    kubectl("wait", "--for=condition=Ready", f"vmm/{name}", "-n", "default", "--timeout=90s")
    first = kubectl.get("vmmigration", name)
    assert health(lua, ARGO / "vmmigration-health.lua", first)[0] == "Healthy"

    # Watch every status the API server serves while the new commit is applied.
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.append(kubectl.get("vmmigration", name))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        kubectl.apply(manifest(name, "kvm-c"))  # the next commit moves it
        generation = int(kubectl.get("vmmigration", name)["metadata"]["generation"])
        assert generation == 2
        kubectl("wait", f"--for=jsonpath={{.status.observedGeneration}}={generation}", f"vmm/{name}",
                "-n", "default", "--timeout=60s")
        kubectl("wait", "--for=condition=Ready", f"vmm/{name}", "-n", "default", "--timeout=120s")
        wait_until(lambda: kubectl.status(name).get("currentHypervisor") == "kvm-c", timeout=10,
                   what="the status to name kvm-c")
    finally:
        stop.set()
        sampler.join()
    placed = kubectl.get("vmmigration", name)
    status = placed["status"]
    assert status["observedGeneration"] == 2 and status["currentHypervisor"] == "kvm-c"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 2
    assert running_on(sandbox, name) == ["kvm-c"]
    watch.assert_kept_running(after=watch.count())

    # Honest: no status ever claimed the new generation Ready while the VM was elsewhere.
    lies = [s["status"] for s in seen if (s.get("status") or {}).get("observedGeneration") == 2
            and any(c["type"] == "Ready" and c["status"] == "True" for c in s["status"]["conditions"])
            and s["status"].get("currentHypervisor") != "kvm-c"]
    assert not lies, lies[:2]
    verdicts = [health(lua, ARGO / "vmmigration-health.lua", s)[0] for s in seen]
    assert "Progressing" in verdicts, "Argo CD never saw the move in progress"
    # (The sampler's last read may predate Ready by a moment; `placed` is read after it.)
    assert health(lua, ARGO / "vmmigration-health.lua", placed)[0] == "Healthy"
    assert "Degraded" not in verdicts
