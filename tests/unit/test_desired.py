"""Spec parsing: what users write becomes typed values, or a clear error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from vmmigration.core.spec import PlacementMode, SpecError, parse_hypervisor, parse_vmmigration
from vmmigration.core.model import Mode, OnTimeout, VolumeOptions


def test_a_minimal_spec_gets_the_documented_defaults() -> None:
    desired = parse_vmmigration({"domain": "web-01", "targetHypervisor": "kvm-b"})
    assert desired.mode is Mode.AUTO
    assert desired.placement is PlacementMode.CONTINUOUS
    assert desired.policy.on_timeout is OnTimeout.ABORT
    assert desired.persistence.persist_on_target and desired.persistence.undefine_on_source


def test_policy_fields_reach_the_engine_policy() -> None:
    desired = parse_vmmigration({"domain": "w", "targetHypervisor": "b", "policy": {
        "onTimeout": "Suspend", "progressTimeoutSeconds": 4, "bandwidthMiBPerSecond": 8}})
    assert desired.policy.on_timeout is OnTimeout.SUSPEND
    assert desired.policy.progress_timeout_seconds == 4
    assert desired.policy.bandwidth_mib_per_s == 8


@pytest.mark.parametrize(("spec", "words"), [
    pytest.param({"targetHypervisor": "b"}, "spec.domain", id="missing-domain"),
    pytest.param({"domain": "a; rm -rf /", "targetHypervisor": "b"}, "spec.domain", id="injection"),
    pytest.param({"domain": "w"}, "exactly one", id="no-target"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "targetSelector": {"matchLabels": {"a": "b"}}},
                 "exactly one", id="two-targets"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "mode": "Teleport"}, "spec.mode", id="bad-mode"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "policy": {"bandwidthMiBPerSecond": "fast"}},
                 "bandwidthMiBPerSecond", id="wrong-type"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "policy": {"parallelConnections": 0}},
                 "parallel", id="zero-connections"),
    pytest.param({"domain": "w", "targetSelector": {}}, "matchLabels", id="empty-selector"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "sourceHypervisor": "b"}, "same",
                 id="source-is-target"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "abort": "yes"}, "spec.abort", id="abort-not-bool"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "mode": "Live", "storage": "CopyAll",
                  "volumes": {}}, "applies to mode Offline", id="volumes-with-live"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "mode": "Offline", "volumes": {}},
                 "storage CopyAll", id="volumes-with-shared"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "mode": "Offline", "storage": "CopyAll",
                  "volumes": {"targetPool": "a/../b"}}, "targetPool", id="pool-with-slash"),
    pytest.param({"domain": "w", "targetHypervisor": "b", "mode": "Offline", "storage": "CopyAll",
                  "persistence": {"undefineOnSource": False}, "volumes": {"deleteFromSource": True}},
                 "undefineOnSource", id="delete-but-keep-definition"),
])
def test_bad_specs_are_refused_with_the_field_named(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        parse_vmmigration(spec)


def test_a_hypervisor_keeps_its_labels_and_limits() -> None:
    spec = parse_hypervisor(name="kvm-a", spec={"uri": "qemu+tcp://127.0.0.2/system",
                                                "maxInboundMigrations": 3},
                            labels={"zone": "lab"})
    assert spec.label_map == {"zone": "lab"} and spec.max_inbound == 3 and spec.max_outbound == 2


@pytest.mark.parametrize("uri", ["http://x", "qemu+tcp://h/system;reboot", "", "qemu+tcp://h/$(x)"])
def test_hypervisor_uris_that_are_not_libvirt_uris_are_refused(uri: str) -> None:
    with pytest.raises(SpecError, match="spec.uri"):
        parse_hypervisor(name="h", spec={"uri": uri}, labels=None)


def test_an_offline_move_that_copies_takes_the_volume_options_and_keeps_the_source_volumes_by_default() -> None:
    spec = {"domain": "w", "targetHypervisor": "b", "mode": "Offline", "storage": "CopyAll"}
    assert parse_vmmigration(spec).volumes == VolumeOptions()
    chosen = parse_vmmigration({**spec, "volumes": {"targetPool": "fast", "deleteFromSource": True}})
    assert chosen.volumes == VolumeOptions(target_pool="fast", delete_from_source=True)
