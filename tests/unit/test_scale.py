"""What keeps a pass cheap at a thousand VMMigrations: indexes instead of scans."""

from __future__ import annotations

from vmmigration.core.limiter import Limits
from vmmigration.service.fleet import Fleet
from vmmigration.core.model import HostReport
from vmmigration.core.scheduling import Claim

from .conftest import domain


def _fleet() -> Fleet:
    return Fleet(limits=Limits())


def test_host_report_indexes_its_domains_by_name() -> None:
    report = HostReport(reachable=True, probed_at=0.0, domains=(domain("a"), domain("b")))
    assert report.by_name == {"a": (domain("a"),), "b": (domain("b"),)}
    twice = HostReport(reachable=True, probed_at=0.0, domains=(domain("a"), domain("a", uuid="2")))
    assert twice.by_name == {"a": (domain("a"), domain("a", uuid="2"))}
    assert report.by_name is report.by_name  # built once per report
    assert HostReport(reachable=False, probed_at=0.0).by_name == {}


def test_claims_are_indexed_by_domain_through_renames_and_releases() -> None:
    fleet = _fleet()
    fleet.claim(key="ns/a", domain="web", created="2026-01-01T00:00:00Z")
    fleet.claim(key="ns/b", domain="web", created="2026-01-02T00:00:00Z")
    fleet.claim(key="ns/c", domain="db", created="2026-01-01T00:00:00Z")
    assert fleet.claims.domains() == {"web", "db"}
    assert set(fleet.claims.keys_on("web")) == {"ns/a", "ns/b"}
    # The spec's domain changed: the claim moves to the other bucket.
    fleet.claim(key="ns/a", domain="db", created="2026-01-01T00:00:00Z")
    assert fleet.claims.keys_on("web") == ("ns/b",)
    assert Claim(key="ns/a", domain="db", created="2026-01-01T00:00:00Z") in fleet.claims.on("db")
    # No domain any more, then deleted: nothing lingers.
    fleet.claim(key="ns/b", domain=None, created="2026-01-02T00:00:00Z")
    fleet.release("ns/a")
    fleet.release("ns/c")
    fleet.release("ns/never-seen")
    assert fleet.claims.domains() == frozenset() and len(fleet.claims) == 0


def test_wake_domain_wakes_only_that_domains_loops() -> None:
    fleet = _fleet()
    wakers = {}
    for key, dom in (("ns/a", "web"), ("ns/b", "web"), ("ns/c", "db")):
        fleet.claim(key=key, domain=dom, created="2026-01-01T00:00:00Z")
        wakers[key] = fleet.waker(key)
    fleet.wake_domain("web")
    assert {k for k, e in wakers.items() if e.is_set()} == {"ns/a", "ns/b"}
