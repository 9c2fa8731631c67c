"""A move in flight that is no longer wanted is cancelled; one still wanted is left alone."""

from __future__ import annotations

import pytest

from vmmigration.core.model import OnTimeout, Policy
from vmmigration.core.replan import replan, retunable
from vmmigration.core.scheduling import HypervisorView
from vmmigration.core.spec import Desired, HypervisorSpec, Selector

HOSTS = {name: HypervisorView(spec=HypervisorSpec(name=name, uri=f"test:///{name}",
                                                  labels=(("zone", zone),)))
         for name, zone in (("kvm-a", "a"), ("kvm-b", "b"), ("kvm-c", "b"))}


def wanted(target: str | None = None, zone: str | None = None) -> Desired:
    selector = Selector(match_labels=(("zone", zone),)) if zone else None
    return Desired(domain="web-01", target=target, selector=selector)


@pytest.mark.parametrize(("desired", "hosts", "post_copy", "eta", "cancel", "words"), [
    pytest.param(wanted("kvm-b"), HOSTS, False, 5.0, False, "", id="still-wanted"),
    pytest.param(wanted("kvm-a"), HOSTS, False, 5.0, True, "wanted on kvm-a again",
                 id="target-set-back-to-where-it-runs"),
    pytest.param(wanted("kvm-b"), {k: v for k, v in HOSTS.items() if k != "kvm-b"}, False, 5.0, True,
                 "kvm-b was deleted", id="target-hypervisor-deleted"),
    pytest.param(wanted("kvm-c"), HOSTS, False, 5.0, True, "go there directly",
                 id="a-third-host-is-reached-directly"),
    pytest.param(wanted("kvm-c"), HOSTS, False, 0.5, False, "", id="a-move-about-to-end-is-finished"),
    pytest.param(wanted("kvm-a"), HOSTS, True, 5.0, False, "", id="post-copy-is-never-cancelled"),
    pytest.param(wanted(zone="b"), HOSTS, False, 5.0, False, "", id="selector-still-matches"),
    pytest.param(wanted(zone="a"), HOSTS, False, 5.0, True, "no longer matches",
                 id="selector-now-matches-the-source"),
    pytest.param(None, HOSTS, False, 5.0, False, "", id="a-spec-that-no-longer-parses-changes-nothing"),
])
def test_a_move_is_cancelled_only_when_it_is_no_longer_the_one_wanted(
        desired: Desired | None, hosts: dict[str, HypervisorView], post_copy: bool, eta: float,
        cancel: bool, words: str) -> None:
    verdict = replan(desired=desired, source="kvm-a", target="kvm-b", hypervisors=hosts,
                     in_post_copy=post_copy, eta_seconds=eta)
    assert verdict.cancel is cancel and words in verdict.why


@pytest.mark.parametrize(("wanted", "post_copy", "followed"), [
    pytest.param(Policy(bandwidth_mib_per_s=0), False, True, id="cap-lifted"),
    pytest.param(Policy(bandwidth_mib_per_s=4, max_downtime_ms=500), False, True, id="downtime-limit"),
    pytest.param(Policy(bandwidth_mib_per_s=4, on_timeout=OnTimeout.SUSPEND), False, True,
                 id="escalation-is-the-monitors"),
    pytest.param(Policy(bandwidth_mib_per_s=4, on_timeout=OnTimeout.POST_COPY), False, False,
                 id="post-copy-needs-the-flag-at-start"),
    pytest.param(Policy(bandwidth_mib_per_s=4, on_timeout=OnTimeout.POST_COPY), True, True,
                 id="post-copy-allowed-from-the-start"),
    pytest.param(Policy(bandwidth_mib_per_s=4, parallel_connections=4), False, False,
                 id="parallel-is-fixed-at-start"),
])
def test_a_running_job_follows_a_changed_policy_only_where_libvirt_lets_it(
        wanted: Policy, post_copy: bool, followed: bool) -> None:
    assert retunable(running=Policy(bandwidth_mib_per_s=4), wanted=wanted,
                     post_copy_allowed=post_copy) is followed
