"""A credential path planted in a Hypervisor's URI appears in no status, Event or log line.

The runtime is wired to the real libvirt adapter (a probe and a pre-check that
really try to connect, and fail: nothing listens on the port), its credentials
come from a Secret and are written where libvirt reads them (``pkipath`` and
``keyfile`` in the URI), and everything the operator says is searched for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from vmmigration.adapters import libvirt as virt
from vmmigration.adapters.prometheus import Metrics
from vmmigration.core.config import Settings
from vmmigration.core.model import HostReport, redacted
from vmmigration.core.spec import HypervisorSpec, SecretRef
from vmmigration.service.runtime import Runtime

from .conftest import domain
from .test_runtime import FakeKube, NeverStopped

# Garbage in the files: libvirt's TLS set-up fails on them and names them in its error.
SECRET = {"ca.crt": b"not a certificate", "tls.crt": b"not a certificate",
          "tls.key": b"not a key", "ssh-privatekey": b"not a key"}


class SecretKube(FakeKube):
    def read_secret(self, *, namespace: str, name: str) -> dict[str, bytes]:
        return SECRET


def everything_said(kube: FakeKube, events: list[dict[str, Any]], logged: list[str],
                    hypervisors: list[dict[str, Any]]) -> str:
    return json.dumps([kube.patches, events, logged, hypervisors])


@pytest.mark.parametrize("scheme", ["qemu+tls", "qemu+ssh"])
def test_a_planted_pkipath_or_keyfile_reaches_no_status_event_or_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, scheme: str) -> None:
    planted = tmp_path / "planted-credentials"
    events: list[dict[str, Any]] = []
    kube = SecretKube()
    ref = SecretRef(name="kvm-creds")
    real_probe = virt.prober(timeout_seconds=5)

    def prober(uri: str) -> HostReport:
        # The real probe, so libvirt's own error is what gets reported; then, to drive a
        # migration to its pre-check, the source pretends to hold the domain.
        report = real_probe(uri)
        assert not report.reachable
        if "127.0.0.1:1/" in uri:
            return HostReport(reachable=True, probed_at=0.0, memory_free_bytes=2**33,
                              domains=(domain("web-01"),))
        return HostReport(reachable=True, probed_at=0.0, memory_free_bytes=2**33)

    runtime = Runtime(
        settings=Settings(credentials_dir=planted), kube=kube,
        post_event=lambda body, **event: events.append(event),
        engine=virt.engine(libvirt_timeout_seconds=5), prober=prober,
        metrics=Metrics.isolated())
    for name, port in (("kvm-a", 1), ("kvm-b", 2)):
        runtime.hypervisor_seen(HypervisorSpec(name=name, uri=f"{scheme}://127.0.0.1:{port}/system",
                                               credentials=ref))
    body = {"metadata": {"name": "web", "namespace": "default", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"domain": "web-01", "targetHypervisor": "kvm-b"}}
    hypervisor_patches = []
    caplog.set_level(logging.DEBUG)

    async def passes() -> None:
        for name in ("kvm-a", "kvm-b"):
            report = await runtime.probe(name)
            assert report is not None
            hypervisor_patches.append(await runtime.hypervisor_status(name, previous={}, generation=1,
                                                                      report=report))
        await runtime.pass_once(key="default/web", body=body, stopped=NeverStopped())

    asyncio.run(passes())
    said = everything_said(kube, events, [r.getMessage() for r in caplog.records]
                           + [str(r.exc_info) for r in caplog.records], hypervisor_patches)
    # The files were really written and really named in the URI libvirt was given ...
    assert any(planted.rglob("*")), "the credentials were never written"
    failure = kube.patches[-1]["lastFailure"]
    assert failure["reason"] == "SourceUnreachable", failure
    # ... and nothing the operator said names them.
    assert str(planted) not in said and "pkipath=" not in said and "keyfile=" not in said
    assert "127.0.0.1:1" in failure["message"], "the host must still be named"


def test_redacted_hides_the_uri_query_and_each_credential_path_in_libvirts_message() -> None:
    uri = "qemu+tls://kvm-a/system?pkipath=/run/creds/kvm-a&no_verify=0"
    said = redacted(f"Unable to read /run/creds/kvm-a/cacert.pem for {uri}", uri=uri)
    assert said == "Unable to read <pkipath>/cacert.pem for qemu+tls://kvm-a/system"
