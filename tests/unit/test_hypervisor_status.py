"""A Hypervisor's status stays small and quiet however many domains its host runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from vmmigration.core import status
from vmmigration.core.model import GIB, MIB, DomainSummary, HostReport, PauseReason, PowerState


CRD = Path(__file__).resolve().parents[2] / "crds" / "hypervisors.vmmigration.dev.yaml"


def vm(index: int, *, state: PowerState = PowerState.RUNNING, memory: int = 2 * GIB) -> DomainSummary:
    return DomainSummary(name=f"vm-{index:04d}", uuid=f"00000000-0000-0000-0000-{index:012d}", state=state,
                         pause_reason=PauseReason.USER if state is PowerState.PAUSED else PauseReason.NONE,
                         memory_bytes=memory, persistent=state is not PowerState.OTHER)


def big_host() -> tuple[DomainSummary, ...]:
    """500 domains: most running, and some paused, shut off or crashed among them."""
    def state(i: int) -> PowerState:
        if i % 50 == 7:
            return PowerState.PAUSED
        if i % 20 == 3:
            return PowerState.SHUT_OFF
        if i == 499:
            return PowerState.OTHER
        return PowerState.RUNNING
    return tuple(vm(i, state=state(i)) for i in range(500))


def report(domains: tuple[DomainSummary, ...], *, at: float = 1000.0, free: int = 64 * GIB) -> HostReport:
    return HostReport(reachable=True, probed_at=at, libvirt_version="11.3.0", hypervisor_version="10.0.0",
                      cpu_model="EPYC", memory_total_bytes=1024 * GIB, memory_free_bytes=free, domains=domains)


def probe(previous: dict[str, Any], domains: tuple[DomainSummary, ...], *, at: float) -> dict[str, Any]:
    return status.hypervisor(previous=previous, report=report(domains, at=at), generation=1, now=at,
                             inbound=0, outbound=0)


def test_a_host_of_500_domains_has_a_status_of_a_few_kb_with_the_not_running_ones_named_first() -> None:
    new = probe({}, big_host(), at=1000.0)
    assert len(json.dumps(new)) < 4096
    assert new["domainCount"] == 500 and new["domainsTruncated"] is True
    assert len(new["domains"]) == status.DOMAINS_IN_STATUS
    # 10 paused, 25 shut off, 1 crashed: the 20 named are all among them, by name.
    assert all(d["state"] != "Running" for d in new["domains"])
    assert [d["name"] for d in new["domains"]] == sorted(d["name"] for d in new["domains"])


def test_each_named_domain_keeps_the_shape_readers_of_status_domains_know() -> None:
    new = probe({}, (vm(1, state=PowerState.PAUSED, memory=512 * MIB),), at=0.0)
    assert new["domains"] == [{"name": "vm-0001", "uuid": "00000000-0000-0000-0000-000000000001",
                               "state": "Paused", "memoryBytes": 512 * MIB, "persistent": True}]


def test_a_small_host_names_every_domain_not_running_first_and_says_nothing_of_truncation() -> None:
    domains = (vm(3), vm(1, state=PowerState.SHUT_OFF), vm(2), vm(4, state=PowerState.PAUSED))
    new = probe({}, domains, at=0.0)
    assert [d["name"] for d in new["domains"]] == ["vm-0001", "vm-0004", "vm-0002", "vm-0003"]
    assert "domainsTruncated" not in new


def test_the_domains_are_counted_by_state_and_the_memory_of_the_active_ones_summed() -> None:
    new = probe({}, big_host(), at=0.0)
    assert new["domainStates"] == {"running": 464, "paused": 10, "shutOff": 25, "other": 1}
    assert sum(new["domainStates"].values()) == new["domainCount"]
    # Shut off domains hold no memory; paused and crashed ones still do.
    assert new["activeMemoryBytes"] == 475 * 2 * GIB


def test_a_host_that_shrinks_below_the_bound_drops_the_truncation_flag() -> None:
    big = probe({}, big_host(), at=0.0)
    small = probe(big, big_host()[:5], at=1.0)
    assert "domainsTruncated" not in small and len(small["domains"]) == 5
    assert status.merge_patch(big, small)["domainsTruncated"] is None


def test_a_status_written_by_an_older_version_loses_its_full_list_at_the_next_probe() -> None:
    older = {"domains": [{"name": f"vm-{i:04d}", "uuid": "", "state": "Running", "memoryBytes": 0,
                          "persistent": True} for i in range(500)], "domainCount": 500}
    new = probe(older, big_host(), at=0.0)
    assert len(new["domains"]) == status.DOMAINS_IN_STATUS


def test_a_running_domains_balloon_resize_on_a_big_host_does_not_rewrite_the_status() -> None:
    domains = big_host()
    first = probe({}, domains, at=1000.0)
    resized = tuple(dataclasses.replace(d, memory_bytes=3 * GIB) if d.name == "vm-0100" else d
                    for d in domains)
    assert domains[100].state is PowerState.RUNNING
    second = probe(first, resized, at=1010.0)
    assert status.merge_patch(first, second) == {}


def test_a_domain_that_stops_rewrites_its_count_and_the_exact_active_memory() -> None:
    domains = big_host()
    first = probe({}, domains, at=1000.0)
    stopped = tuple(dataclasses.replace(d, state=PowerState.SHUT_OFF) if d.name == "vm-0400" else d
                    for d in domains)
    patch = status.merge_patch(first, probe(first, stopped, at=1010.0))
    assert patch["domainStates"] == {"running": 463, "shutOff": 26}
    # 2 GiB of 950 GiB is under 1 %, written all the same along with the counts.
    assert patch["activeMemoryBytes"] == 474 * 2 * GIB
    # vm-0400 sorts after the 20 named: the list itself is unchanged.
    assert "domains" not in patch


def test_a_quiet_big_host_is_rewritten_only_by_its_heartbeat() -> None:
    first = probe({}, big_host(), at=1000.0)
    assert status.merge_patch(first, probe(first, big_host(), at=1010.0)) == {}
    assert set(status.merge_patch(first, probe(first, big_host(), at=1100.0))) == {"lastProbeTime"}


def test_an_unreachable_host_keeps_its_last_counts_and_summary() -> None:
    up = probe({}, big_host(), at=0.0)
    down = status.hypervisor(previous=up, report=HostReport(reachable=False, probed_at=5.0, error="refused"),
                             generation=1, now=5.0, inbound=0, outbound=0)
    assert {k: down[k] for k in ("domainCount", "domainStates", "domains", "domainsTruncated",
                                 "activeMemoryBytes")} == {
        k: up[k] for k in ("domainCount", "domainStates", "domains", "domainsTruncated", "activeMemoryBytes")}


def test_every_field_the_status_writes_is_in_the_crds_schema_so_none_is_pruned() -> None:
    # A field the schema lacks is dropped by the API server: the next probe would find it
    # missing and write it again, on every probe.
    schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = schema["properties"]["status"]["properties"]
    new = probe({}, big_host(), at=0.0)
    assert set(new) <= set(fields)
    assert set(new["domainStates"]) == set(fields["domainStates"]["properties"])
    assert set(new["domains"][0]) == set(fields["domains"]["items"]["properties"])
    assert f"at most {status.DOMAINS_IN_STATUS}," in fields["domains"]["description"]
