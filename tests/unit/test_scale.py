"""What keeps a pass cheap at a thousand VMMigrations: indexes instead of scans."""

from __future__ import annotations

import asyncio
from typing import Any

from vmmigration.config import Settings
from vmmigration.k8s.runtime import Runtime
from vmmigration.model import HostReport
from vmmigration.scheduling import Claim

from .conftest import domain


class _NoKube:
    def patch_vmmigration_status(self, *, namespace: str, name: str, patch: dict[str, Any]) -> None:
        raise AssertionError("not used")

    def read_secret(self, *, namespace: str, name: str) -> dict[str, bytes]:
        raise AssertionError("not used")


def _runtime() -> Runtime:
    return Runtime(settings=Settings(), kube=_NoKube(),
                   post_event=lambda body, *, type, reason, message: None)


def test_host_report_indexes_its_domains_by_name() -> None:
    report = HostReport(reachable=True, probed_at=0.0, domains=(domain("a"), domain("b")))
    assert report.by_name == {"a": (domain("a"),), "b": (domain("b"),)}
    twice = HostReport(reachable=True, probed_at=0.0, domains=(domain("a"), domain("a", uuid="2")))
    assert twice.by_name == {"a": (domain("a"), domain("a", uuid="2"))}
    assert report.by_name is report.by_name  # built once per report
    assert HostReport(reachable=False, probed_at=0.0).by_name == {}


def test_claims_are_indexed_by_domain_through_renames_and_releases() -> None:
    runtime = _runtime()
    runtime.claim(key="ns/a", domain="web", created="2026-01-01T00:00:00Z")
    runtime.claim(key="ns/b", domain="web", created="2026-01-02T00:00:00Z")
    runtime.claim(key="ns/c", domain="db", created="2026-01-01T00:00:00Z")
    assert set(runtime._claims_by_domain) == {"web", "db"}
    assert set(runtime._claims_by_domain["web"]) == {"ns/a", "ns/b"}
    # The spec's domain changed: the claim moves to the other bucket.
    runtime.claim(key="ns/a", domain="db", created="2026-01-01T00:00:00Z")
    assert set(runtime._claims_by_domain["web"]) == {"ns/b"}
    assert runtime._claims_by_domain["db"]["ns/a"] == Claim(key="ns/a", domain="db",
                                                            created="2026-01-01T00:00:00Z")
    # No domain any more, then deleted: nothing lingers.
    runtime.claim(key="ns/b", domain=None, created="2026-01-02T00:00:00Z")
    runtime.release("ns/a")
    runtime.release("ns/c")
    runtime.release("ns/never-seen")
    assert runtime._claims_by_domain == {} and runtime.claims == {}


def test_wake_domain_wakes_only_that_domains_loops() -> None:
    runtime = _runtime()
    for key, dom in (("ns/a", "web"), ("ns/b", "web"), ("ns/c", "db")):
        runtime.claim(key=key, domain=dom, created="2026-01-01T00:00:00Z")
        runtime._wakers[key] = asyncio.Event()
    runtime.wake_domain("web")
    assert {k for k, e in runtime._wakers.items() if e.is_set()} == {"ns/a", "ns/b"}
