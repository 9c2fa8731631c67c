"""Why a migration ended, classified from libvirt's error and what our monitor did."""

from __future__ import annotations

import pytest

from vmmigration.core.convergence import Trigger
from vmmigration.core.errors import HostUnreachable, MigrationAborted, MigrationFailed, MigrationUnsafe
from vmmigration.core.location import Location
from vmmigration.core.errors import LinkBroken, PeerUnreachable
from vmmigration.core.reasons import Reason, classify, hint


@pytest.mark.parametrize(("error", "trigger", "reason"), [
    pytest.param(MigrationAborted("cancelled"), Trigger.REQUESTED, Reason.ABORTED, id="our-abort-on-request"),
    pytest.param(MigrationAborted("cancelled"), Trigger.STALLED, Reason.TIMED_OUT, id="stalled"),
    pytest.param(MigrationAborted("cancelled"), Trigger.OVERDUE, Reason.TIMED_OUT, id="overdue"),
    pytest.param(MigrationAborted("cancelled"), Trigger.HARD_TIMEOUT, Reason.TIMED_OUT, id="hard-timeout"),
    pytest.param(MigrationAborted("cancelled"), None, Reason.ABORTED_OUTSIDE,
                 id="aborted-by-someone-else-is-not-a-timeout"),
    pytest.param(MigrationAborted("cancelled"), Trigger.NONE, Reason.ABORTED_OUTSIDE,
                 id="no-trigger-is-no-trigger"),
    pytest.param(MigrationFailed("connection lost"), None, Reason.MIGRATION_FAILED, id="a-fault"),
    pytest.param(MigrationUnsafe("unsafe"), None, Reason.MIGRATION_FAILED, id="unsafe-storage"),
    pytest.param(HostUnreachable("gone"), None, Reason.MIGRATION_FAILED, id="host-gone"),
    pytest.param(MigrationFailed("raced"), Trigger.STALLED, Reason.TIMED_OUT,
                 id="our-abort-wins-over-the-error-it-caused"),
    pytest.param(MigrationAborted("cancelled"), Trigger.LINK_STALLED, Reason.LINK_BROKEN,
                 id="a-link-that-carried-nothing-is-a-broken-link-not-a-timeout"),
    pytest.param(LinkBroken("reset"), None, Reason.LINK_BROKEN, id="a-reset-stream-is-a-broken-link"),
    pytest.param(PeerUnreachable("no route"), None, Reason.PEER_UNREACHABLE,
                 id="the-source-could-not-reach-the-target"),
])
def test_classify_names_why_a_migration_did_not_complete(error: Exception, trigger: Trigger | None,
                                                          reason: Reason) -> None:
    assert classify(error, trigger) is reason


def test_only_faults_count_as_libvirt_errors_and_only_aborts_as_aborted() -> None:
    assert {r for r in Reason if r.libvirt_fault} == {Reason.MIGRATION_FAILED, Reason.LIBVIRT_ERROR}
    assert {r for r in Reason if r.aborted} == {Reason.ABORTED, Reason.ABORTED_OUTSIDE}


def test_only_blocks_that_probe_skew_can_fake_are_skew_prone() -> None:
    assert {r for r in Reason if r.skew_prone} == {
        Reason.RUNNING_TWICE, Reason.DEFINED_TWICE, Reason.DOMAIN_NOT_FOUND}


def test_a_hint_says_what_to_do_for_split_and_unsafe_migrations() -> None:
    assert "postcopy-resume" in hint(MigrationFailed("x"), Location.SPLIT_POST_COPY)
    assert "allow_unsafe" in hint(MigrationUnsafe("x"), Location.SOURCE)
    assert hint(MigrationFailed("x"), Location.SOURCE) == ""


def test_every_reason_is_a_condition_reason_the_api_accepts() -> None:
    # Kubernetes condition reasons: CamelCase, letters only.
    assert all(r.value.isalpha() and r.value[0].isupper() for r in Reason)
    assert len({r.value for r in Reason}) == len(Reason)
