"""How a migrate call that failed is reported depends on what can still be read."""

from __future__ import annotations

import pytest

from vmmigration.core.errors import HostUnreachable, MigrationFailed
from vmmigration.core.location import Location
from vmmigration.core.model import (
    DomainSummary,
    JobProgress,
    MigrationRequest,
    PauseReason,
    PowerState,
)
from vmmigration.service.outcomes import LostContact, MigrationError, failure

REQUEST = MigrationRequest(domain="web", source_uri="qemu+tcp://10.0.0.2/system",
                           target_uri="qemu+tcp://10.0.0.3/system")


class Host:
    """A host as the aftermath reads it: a domain, or a connection that is gone."""

    def __init__(self, uri: str, *, domain: DomainSummary | None = None, gone: bool = False) -> None:
        self.uri, self._domain, self._gone = uri, domain, gone

    def find(self, name: str) -> DomainSummary | None:
        if self._gone:
            raise HostUnreachable("client socket is closed")
        return self._domain

    def job(self, name: str) -> JobProgress | None:
        return None

    def completed_job(self, name: str) -> JobProgress | None:
        return None


RUNNING = DomainSummary(name="web", uuid="u", state=PowerState.RUNNING, pause_reason=PauseReason.NONE,
                        memory_bytes=1, persistent=True)


def test_a_lost_connection_to_a_source_that_cannot_be_read_is_lost_contact_not_a_failure() -> None:
    # The peer-to-peer job may run on without us: it is adopted later, never failed now.
    with pytest.raises(LostContact, match=r"lost contact with qemu\+tcp://10.0.0.2/system") as lost:
        failure(MigrationFailed("connection closed due to keepalive timeout"), REQUEST, None,
                source=Host(REQUEST.source_uri, gone=True),  # type: ignore[arg-type]
                target=Host(REQUEST.target_uri), last=None)  # type: ignore[arg-type]
    assert lost.value.found.unreachable == ("qemu+tcp://10.0.0.2/system",)


def test_a_failure_with_the_source_readable_is_a_failure_that_says_where_the_vm_runs() -> None:
    error = failure(MigrationFailed("qemu said no"), REQUEST, None,
                    source=Host(REQUEST.source_uri, domain=RUNNING),  # type: ignore[arg-type]
                    target=Host(REQUEST.target_uri), last=None)  # type: ignore[arg-type]
    assert isinstance(error, MigrationError) and error.location is Location.SOURCE
    assert "the VM runs on the source" in str(error)
