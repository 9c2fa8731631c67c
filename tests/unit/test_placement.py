"""Where a VM runs, from what each host reports: the after-the-fact rule."""

import pytest

from vmmigration.core.model import DomainSummary, JobDirection, PauseReason, PowerState
from vmmigration.core.location import Location, is_incoming, is_leaving, locate

from .conftest import domain

RUNNING = domain()
SHUT_OFF = domain(state=PowerState.SHUT_OFF)
INCOMING = domain(state=PowerState.PAUSED, reason=PauseReason.MIGRATION, job=JobDirection.INCOMING)
SUSPENDED_BY_MIGRATION = domain(state=PowerState.PAUSED, reason=PauseReason.MIGRATION,
                                job=JobDirection.OUTGOING)
USER_PAUSED = domain(state=PowerState.PAUSED, reason=PauseReason.USER)
POST_COPY = domain(state=PowerState.PAUSED, reason=PauseReason.POST_COPY)


@pytest.mark.parametrize(
    ("source", "target", "where"),
    [
        pytest.param(RUNNING, None, Location.SOURCE, id="not-started"),
        pytest.param(RUNNING, INCOMING, Location.SOURCE, id="live-copy-in-flight"),
        pytest.param(RUNNING, domain(state=PowerState.PAUSED, reason=PauseReason.STARTING_UP),
                     Location.SOURCE, id="incoming-domain-starting-up"),
        pytest.param(SUSPENDED_BY_MIGRATION, INCOMING, Location.SOURCE, id="non-live-copy-in-flight"),
        pytest.param(SUSPENDED_BY_MIGRATION, RUNNING, Location.TARGET, id="switch-over"),
        pytest.param(None, RUNNING, Location.TARGET, id="moved-and-undefined"),
        pytest.param(SHUT_OFF, RUNNING, Location.TARGET, id="moved-source-kept"),
        pytest.param(POST_COPY, RUNNING, Location.SPLIT_POST_COPY, id="post-copy"),
        pytest.param(USER_PAUSED, None, Location.SOURCE, id="user-paused-at-home"),
        pytest.param(RUNNING, RUNNING, Location.BOTH, id="split-brain"),
        pytest.param(SHUT_OFF, None, Location.SOURCE, id="offline-not-moved"),
        pytest.param(None, SHUT_OFF, Location.TARGET, id="offline-moved"),
        pytest.param(SHUT_OFF, SHUT_OFF, Location.BOTH, id="offline-defined-twice"),
        pytest.param(None, None, Location.NOWHERE, id="lost"),
    ],
)
def test_locate_reads_both_hosts(
    source: DomainSummary | None, target: DomainSummary | None, where: Location
) -> None:
    assert locate(source=source, target=target) is where


@pytest.mark.parametrize(
    ("summary", "incoming", "leaving"),
    [
        pytest.param(INCOMING, True, False, id="the-receiving-end-is-a-copy"),
        pytest.param(SUSPENDED_BY_MIGRATION, False, True, id="the-sending-end-paused-is-the-vm"),
        pytest.param(domain(state=PowerState.PAUSED, reason=PauseReason.MIGRATION), False, True,
                     id="paused-for-a-migration-with-no-job-left-is-the-vm"),
        pytest.param(RUNNING, False, False, id="running"),
        pytest.param(USER_PAUSED, False, False, id="paused-by-a-user"),
    ],
)
def test_only_libvirts_job_tells_an_incoming_copy_from_a_paused_source(
    summary: DomainSummary, incoming: bool, leaving: bool
) -> None:
    assert is_incoming(summary) is incoming
    assert is_leaving(summary) is leaving
