"""What `vmmigration delete hv --wait` makes of the API's answers: what to wait for, and what holds it."""

from __future__ import annotations

from typing import Any

import pytest

from vmmigration.core.deletion import OPERATOR_FINALIZER, Deleted, holdup, pending, remaining
from vmmigration.core.memory import timestamp

NOW = 1_800_000_000.0


def hv(name: str, uid: str = "u1", *, finalizers: tuple[str, ...] = (),
       deleting_since: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid}
    if finalizers:
        meta["finalizers"] = list(finalizers)
    if deleting_since is not None:
        meta["deletionTimestamp"] = timestamp(deleting_since)
    return {"kind": "Hypervisor", "metadata": meta}


@pytest.mark.parametrize(("answer", "expected"), [
    pytest.param(hv("kvm-a", finalizers=(OPERATOR_FINALIZER,), deleting_since=NOW),
                 Deleted("kvm-a", "u1"), id="held-by-a-finalizer"),
    pytest.param(hv("kvm-a"), None, id="removed-at-once"),
    pytest.param({"kind": "Status", "status": "Success", "details": {"name": "kvm-a", "uid": "u1"}},
                 None, id="a-status"),
    pytest.param({"kind": "Hypervisor", "metadata": {"finalizers": ["x"]}}, None, id="no-name-no-wait"),
])
def test_a_deletion_is_waited_for_only_while_a_finalizer_keeps_the_object(
        answer: dict[str, Any], expected: Deleted | None) -> None:
    assert pending(answer) == expected


def test_an_object_created_again_under_the_same_name_is_not_the_one_waited_for() -> None:
    deleted = [Deleted("kvm-a", "u1"), Deleted("kvm-b", "u2"), Deleted("kvm-c", "u3")]
    present = [hv("kvm-c", "u3"), hv("kvm-a", "new"), hv("kvm-z", "u9")]
    assert remaining(deleted, present) == [hv("kvm-c", "u3")]


@pytest.mark.parametrize(("obj", "line"), [
    pytest.param(hv("kvm-a", finalizers=(OPERATOR_FINALIZER,), deleting_since=NOW - 150),
                 "kvm-a: still holding finalizer vmmigration.dev/finalizer for 2m30s; the operator removes "
                 "it when it sees the deletion: is the operator running?", id="the-operators"),
    pytest.param(hv("kvm-a", finalizers=("backup.example/keep", OPERATOR_FINALIZER), deleting_since=NOW - 5),
                 "kvm-a: still holding finalizer vmmigration.dev/finalizer (and backup.example/keep) for 5s; "
                 "the operator removes it when it sees the deletion: is the operator running?",
                 id="the-operators-and-another"),
    pytest.param(hv("kvm-a", finalizers=("backup.example/keep",), deleting_since=NOW - 5),
                 "kvm-a: still holding finalizer backup.example/keep for 5s", id="another-only"),
    pytest.param(hv("kvm-a", deleting_since=NOW - 1), "kvm-a: being deleted for 1s, no finalizer left",
                 id="none-left"),
])
def test_a_hypervisor_that_outlives_the_wait_is_explained_by_its_finalizers(obj: dict[str, Any],
                                                                              line: str) -> None:
    assert holdup(obj, now=NOW) == line
