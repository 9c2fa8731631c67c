"""The defaults live in the model; the CRD and the CLI repeat them, and must agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from vmmigration.cli.migrate import migrate
from vmmigration.core.model import OnTimeout, Persistence, Policy
from vmmigration.core.spec import Desired, parse_policy, parse_vmmigration

CRD = Path(__file__).resolve().parents[2] / "crds" / "vmmigrations.vmmigration.dev.yaml"


def crd_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """What the API server fills in for an object that sets nothing, as a nested mapping."""
    filled: dict[str, Any] = {}
    for name, field in (schema.get("properties") or {}).items():
        if "properties" in field and "default" in field:
            filled[name] = crd_defaults(field)
        elif "default" in field:
            filled[name] = field["default"]
    return filled


def spec_defaults() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return crd_defaults(schema)


def test_the_crd_fills_in_exactly_the_models_policy() -> None:
    defaults = spec_defaults()
    assert set(defaults["policy"]) >= {"onTimeout", "progressTimeoutSeconds",
                                       "completionTimeoutSecondsPerGiB", "hardTimeoutSeconds"}
    assert parse_policy(defaults["policy"]) == Policy() == parse_policy({})


def test_the_crd_fills_in_the_models_mode_storage_persistence_and_placement() -> None:
    filled = parse_vmmigration({**spec_defaults(), "domain": "web-01", "targetHypervisor": "kvm-b"})
    bare = parse_vmmigration({"domain": "web-01", "targetHypervisor": "kvm-b"})
    assert filled == bare == Desired(domain="web-01", target="kvm-b")
    assert filled.persistence == Persistence()


def test_the_cli_offers_the_models_policy_as_its_defaults() -> None:
    options = {p.name: p.default for p in migrate.params if isinstance(p, click.Option)}
    policy = Policy()
    assert options["progress_timeout"] == policy.progress_timeout_seconds
    assert options["completion_timeout_per_gib"] == policy.completion_timeout_seconds_per_gib
    assert options["hard_timeout"] == policy.hard_timeout_seconds
    assert options["bandwidth"] == policy.bandwidth_mib_per_s
    assert options["max_downtime"] == policy.max_downtime_ms
    assert options["parallel"] == policy.parallel_connections
    assert options["p2p"] is policy.peer_to_peer
    assert OnTimeout(options["on_timeout"].title()) is policy.on_timeout
    assert options["persist"] is Persistence().persist_on_target
    assert options["undefine_source"] is Persistence().undefine_on_source
