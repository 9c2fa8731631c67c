"""What `vmmigration move`, `abort` and `watch` decide from the objects the API returns."""

from __future__ import annotations

from typing import Any

from vmmigration.core import moves

import pytest

from vmmigration.core.moves import (
    Ending,
    Expect,
    Move,
    MoveError,
    existing,
    object_name,
    parse_selector,
    selector_text,
    verdict,
)


def vmm(name: str, domain: str, *, generation: int = 1, observed: int | None = 1,
        **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "generation": generation,
                         "resourceVersion": "7"},
            "spec": {"domain": domain, "targetHypervisor": "kvm-b"},
            "status": {**({"observedGeneration": observed} if observed is not None else {}), **status}}


# ---- which VMMigration a move patches -------------------------------------------------


def test_a_domain_without_a_vmmigration_gets_a_new_one_named_after_it() -> None:
    assert existing([vmm("db", "db-01")], domain="web-01", name=None) is None
    assert object_name("Web_01.prod") == "web-01-prod"


def test_the_vmmigration_that_manages_the_domain_is_patched_not_duplicated() -> None:
    mine = vmm("placement-of-web", "web-01")
    assert existing([vmm("db", "db-01"), mine], domain="web-01", name=None) is mine
    assert existing([mine], domain="web-01", name="placement-of-web") is mine


@pytest.mark.parametrize(("items", "name", "words"), [
    pytest.param([vmm("a", "web-01"), vmm("b", "web-01")], None, "has 2 VMMigrations (a, b); pick one",
                 id="two-already"),
    pytest.param([vmm("web", "db-01")], "web", "manages domain db-01, not web-01", id="name-of-another"),
    pytest.param([vmm("old", "web-01")], "new", "already managed by VMMigration default/old",
                 id="a-second-name"),
    pytest.param([{**vmm("web", "web-01", phase="Placed", currentHypervisor="kvm-b"),
                   "spec": {"domain": "web-01", "placement": "Once"}}], None, "placement Once and is done",
                 id="once-and-done"),
])
def test_a_move_that_would_be_ignored_or_blocked_is_refused_with_what_to_do(
        items: list[dict[str, Any]], name: str | None, words: str) -> None:
    with pytest.raises(MoveError, match=words.replace("(", r"\(").replace(")", r"\)")):
        existing(items, domain="web-01", name=name)


def test_an_unnameable_domain_asks_for_a_name() -> None:
    with pytest.raises(MoveError, match="pass --name"):
        object_name("___")


# ---- the spec a move writes -------------------------------------------------------------


def test_a_new_vmmigration_names_the_target_and_only_what_was_asked() -> None:
    made = Move(domain="web-01", target="kvm-b", mode="Live").manifest(namespace="ops", name="web-01")
    assert made["metadata"] == {"name": "web-01", "namespace": "ops"}
    assert made["spec"] == {"domain": "web-01", "targetHypervisor": "kvm-b", "mode": "Live"}


def test_a_patch_swaps_a_selector_for_a_host_and_clears_abort_and_dry_run() -> None:
    old = {"metadata": {"resourceVersion": "42"},
           "spec": {"domain": "web-01", "targetSelector": {"matchLabels": {"zone": "a", "tier": "x"}},
                    "abort": True, "dryRun": True, "policy": {"maxDowntimeMs": 100}}}
    patch = Move(domain="web-01", target="kvm-c", bandwidth_mib_per_s=16).patch(old)
    assert patch == {"metadata": {"resourceVersion": "42"},
                     "spec": {"targetSelector": None, "targetHypervisor": "kvm-c", "abort": False,
                              "dryRun": False, "policy": {"bandwidthMiBPerSecond": 16}}}


def test_a_patch_to_another_selector_drops_the_labels_no_longer_asked_for() -> None:
    old = {"spec": {"domain": "web-01", "targetSelector": {"matchLabels": {"zone": "a", "tier": "x"},
                                                           "matchExpressions": [{"key": "k"}]}}}
    patch = Move(domain="web-01", selector={"zone": "b"}).patch(old)
    assert patch == {"spec": {"targetSelector": {"matchLabels": {"zone": "b", "tier": None},
                                                 "matchExpressions": None}}}


def test_moving_back_to_the_pinned_source_unpins_it() -> None:
    old = {"spec": {"domain": "web-01", "sourceHypervisor": "kvm-a", "targetHypervisor": "kvm-b"}}
    assert Move(domain="web-01", target="kvm-a").patch(old) == {
        "spec": {"sourceHypervisor": None, "targetHypervisor": "kvm-a"}}


def test_a_move_to_where_the_spec_already_points_changes_nothing() -> None:
    old = {"spec": {"domain": "web-01", "targetHypervisor": "kvm-b"}}
    assert Move(domain="web-01", target="kvm-b").patch(old) == {"spec": {}}


def test_a_move_needs_exactly_one_kind_of_target() -> None:
    with pytest.raises(MoveError):
        Move(domain="web-01")
    with pytest.raises(MoveError):
        Move(domain="web-01", target="kvm-b", selector={"zone": "a"})


@pytest.mark.parametrize(("text", "words"), [
    pytest.param("zone", "not key=value", id="no-value"),
    pytest.param("zone!=a", "not key=value", id="inequality"),
    pytest.param("zone==a", "not key=value", id="double-equals"),
    pytest.param("zo ne=a", "not a valid label key", id="bad-key"),
    pytest.param("zone=a;b", "not a valid label value", id="bad-value"),
    pytest.param("zone=a,zone=b", "given twice", id="contradiction"),
])
def test_selectors_other_than_equalities_are_refused_with_the_reason(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_selector(text)


def test_a_selector_reads_back_as_kubectl_writes_it() -> None:
    assert parse_selector("vmmigration.dev/zone=lab, tier=web") == {"vmmigration.dev/zone": "lab",
                                                                   "tier": "web"}
    assert selector_text({"matchLabels": {"zone": "lab"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["a", "b"]},
        {"key": "gpu", "operator": "DoesNotExist"}]}) == "zone=lab,tier in (a,b),!gpu"


# ---- when a watch ends -----------------------------------------------------------------


@pytest.mark.parametrize(("obj", "expect", "ending", "words"), [
    pytest.param(vmm("w", "web", phase="Placed", currentHypervisor="kvm-b", effectiveMode="Live",
                     downtimeMs=45, durationSeconds=3.21),
                 Expect.PLACED, Ending.SUCCEEDED, "placed on kvm-b (Live, downtime 45ms, took 3.2s)",
                 id="placed"),
    pytest.param(vmm("w", "web", generation=2, observed=1, phase="Placed", currentHypervisor="kvm-a"),
                 Expect.PLACED, None, "waiting for the operator to see generation 2",
                 id="placed-but-before-the-patch"),
    pytest.param(vmm("w", "web", observed=None), Expect.PLACED, None, "waiting for the operator",
                 id="just-created"),
    pytest.param(vmm("w", "web", phase="Failed", nextAttemptTime="1970-01-01T00:00:30Z",
                     lastFailure={"reason": "InsufficientMemory", "message": "kvm-b has 96 MiB free"}),
                 Expect.PLACED, Ending.FAILED,
                 "failed: InsufficientMemory: kvm-b has 96 MiB free (the operator retries in 20s)",
                 id="failed"),
    pytest.param(vmm("w", "web", phase="Aborted", currentHypervisor="kvm-a"), Expect.PLACED,
                 Ending.ABORTED, "aborted; the domain stays on kvm-a", id="aborted-by-someone"),
    pytest.param(vmm("w", "web", phase="Aborted", currentHypervisor="kvm-a"), Expect.ABORTED,
                 Ending.SUCCEEDED, "aborted", id="aborted-as-asked"),
    pytest.param(vmm("w", "web", phase="Placed", currentHypervisor="kvm-b"), Expect.ABORTED,
                 Ending.SUCCEEDED, "nothing to abort", id="abort-came-too-late"),
    pytest.param({**vmm("w", "web", generation=3, observed=1, phase="Placed", currentHypervisor="kvm-b"),
                  "spec": {"domain": "web", "placement": "Once"}}, Expect.ABORTED, Ending.SUCCEEDED,
                 "nothing to abort: placed on kvm-b (placement Once)", id="once-and-done-is-never-rewritten"),
    pytest.param(vmm("w", "web", phase="Pending", conditions=[
        {"type": "Queued", "status": "True", "reason": "ConcurrencyLimit", "message": "kvm-b is full"}]),
                 Expect.PLACED, None, "Pending: ConcurrencyLimit: kvm-b is full", id="queued"),
    pytest.param(vmm("w", "web", phase="Migrating", sourceHypervisor="kvm-a", targetHypervisor="kvm-b",
                     progress={"percent": 42.0, "memoryTotalBytes": 2**30,
                               "memoryRemainingBytes": 310 * 2**20, "transferRateBytesPerSecond": 120 * 2**20,
                               "dirtyRateBytesPerSecond": 8 * 2**20, "iteration": 3, "etaSeconds": 4.0}),
                 Expect.PLACED, None,
                 "Migrating kvm-a → kvm-b: 310Mi left of 1.0Gi · 120Mi/s · dirty 8.0Mi/s · pass 3 · ETA 4.0s",
                 id="migrating"),
    pytest.param({"metadata": {"generation": 1}, "status": ["hand", "edited"]}, Expect.PLACED, None,
                 "waiting for the operator", id="a-status-that-is-not-a-mapping"),
])
def test_a_watch_ends_on_the_outcome_of_the_latest_spec_only(
        obj: dict[str, Any], expect: Expect, ending: Ending | None, words: str) -> None:
    judged = verdict(obj, expect=expect, now=10.0)
    assert judged.ending is ending
    assert judged.line.startswith(words)


def test_the_progress_of_a_copy_the_spec_has_moved_on_from_is_not_shown_as_this_moves() -> None:
    stale = vmm("w", "web", generation=2, observed=1, phase="Migrating",
                progress={"percent": 3.0, "memoryTotalBytes": 2**27, "memoryRemainingBytes": 2**26})
    judged = verdict(stale, expect=Expect.ABORTED, now=0.0)
    assert (judged.ending, judged.copying) == (None, False)
    assert judged.line == "waiting for the operator to see generation 2"
    current = verdict({**stale, "metadata": {"generation": 1}}, expect=Expect.PLACED, now=0.0)
    assert current.copying and current.line.startswith("Migrating ? → ?: 64Mi left of 128Mi")


def test_a_carry_in_flight_reads_as_which_disk_and_the_data_left() -> None:
    status = {"phase": "Migrating", "sourceHypervisor": "a", "targetHypervisor": "b",
              "progress": {"percent": 40.0, "dataTotalBytes": 1024 * 1024 * 1024,
                           "dataRemainingBytes": 310 * 1024 * 1024,
                           "disks": [{"state": "Verified"}, {"state": "Copying"}]}}
    assert moves.copying(status)
    assert moves.progress_text(status).startswith("disk 2/2 · 310")
    assert "left of 1.0" in moves.progress_text(status)
