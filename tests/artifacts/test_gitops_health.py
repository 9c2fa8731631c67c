"""The Argo CD health checks, run under Lua 5.1 (Argo CD's dialect) on resources
shaped as the operator writes them, and the argocd-cm example that carries them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT

ARGO = ROOT / "deploy" / "gitops" / "argocd"


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def health(lua: str, script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    # Argo CD runs the script with the resource as the global `obj` and reads the table it returns.
    harness = (f"obj = {lua_literal(obj)}\n"
               f"local hs = assert(loadfile({lua_literal(str(script))}))()\n"
               "io.write(hs.status, '\\t', hs.message or '')\n")
    result = subprocess.run([lua, "-"], input=harness, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\t")
    return status, message


def vmm(phase: str | None, *conditions: tuple[str, str, str, str], generation: int = 2,
        observed: int | None = 2, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "web", "generation": generation}}
    if phase is not None:
        obj["status"] = {"phase": phase, "observedGeneration": observed, **status,
                         "conditions": [{"type": t, "status": s, "reason": r, "message": m}
                                        for t, s, r, m in conditions]}
    return obj


READY = ("Ready", "True", "Placed", "domain web runs on kvm-b")


@pytest.mark.parametrize("obj,expected,words", [
    (vmm(None), "Progressing", "Waiting"),
    (vmm("Placed", READY), "Healthy", "runs on kvm-b"),
    (vmm("Placed", READY, observed=1), "Progressing", "generation 2"),
    (vmm("Migrating", ("Ready", "False", "Migrating", "migrating web"),
         ("Progressing", "True", "Migrating", "copying memory"), progressText="42%"),
     "Progressing", "42% copying memory"),
    (vmm("Pending", ("Ready", "False", "Queued", "waiting"), ("Queued", "True", "ConcurrencyLimit",
                                                           "2 migrations already run")),
     "Progressing", "2 migrations already run"),
    (vmm("Failed", ("Ready", "False", "TimedOut", "timed out"),
         lastFailure={"reason": "TimedOut", "message": "no progress for 150 s"}),
     "Degraded", "TimedOut: no progress for 150 s"),
    (vmm("Pending", ("Ready", "False", "Conflict", "x"), ("Blocked", "True", "Conflict", "older claim")),
     "Degraded", "Conflict: older claim"),
    (vmm("Placed", ("Ready", "False", "Drifted", "x"), ("Drifted", "True", "NotOnTarget", "runs on kvm-a")),
     "Degraded", "runs on kvm-a"),
    (vmm("Aborted", ("Ready", "False", "Aborted", "spec.abort is set")), "Suspended", "spec.abort"),
    (vmm("Displaced", ("Ready", "False", "Displaced", "runs on kvm-b while kvm-a is in maintenance")),
     "Suspended", "maintenance"),
])
def test_the_vmmigration_health_check_maps_each_state_as_argo_cd_expects(
        lua: str, obj: dict[str, Any], expected: str, words: str) -> None:
    status, message = health(lua, ARGO / "vmmigration-health.lua", obj)
    assert status == expected, message
    assert words in message


@pytest.mark.parametrize("obj,expected", [
    ({"spec": {"uri": "qemu:///system"}}, "Progressing"),
    ({"spec": {}, "status": {"conditions": [{"type": "Reachable", "status": "True", "message": "ok"}]}},
     "Healthy"),
    ({"spec": {}, "status": {"conditions": [{"type": "Reachable", "status": "False", "message": "refused"}]}},
     "Degraded"),
    ({"spec": {"maintenance": True}, "status": {"conditions": [{"type": "Reachable", "status": "True"}]}},
     "Suspended"),
])
def test_the_hypervisor_health_check_maps_reachability_and_maintenance(
        lua: str, obj: dict[str, Any], expected: str) -> None:
    assert health(lua, ARGO / "hypervisor-health.lua", obj)[0] == expected


def test_the_argocd_cm_example_carries_the_same_scripts() -> None:
    data = yaml.safe_load((ARGO / "argocd-cm.yaml").read_text())["data"]
    assert data["resource.customizations.health.vmmigration.dev_VMMigration"] == (
        ARGO / "vmmigration-health.lua").read_text()
    assert data["resource.customizations.health.vmmigration.dev_Hypervisor"] == (
        ARGO / "hypervisor-health.lua").read_text()


def test_the_flux_example_checks_both_kinds() -> None:
    flux = yaml.safe_load((ROOT / "deploy" / "gitops" / "flux" / "kustomization.yaml").read_text())
    kinds = {check["kind"] for check in flux["spec"]["healthCheckExprs"]}
    assert kinds == {"VMMigration", "Hypervisor"} and flux["spec"]["wait"] is True
