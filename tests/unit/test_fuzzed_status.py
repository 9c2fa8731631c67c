"""Statuses read back as stored, fuzzed: the status code never crashes on what it finds."""

from __future__ import annotations

import math
from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from vmmigration.core import status
from vmmigration.core.spec import (
    Phase,
)
from vmmigration.core.model import (
    HostReport,
)
from vmmigration.core.memory import Condition

from .fuzzing import Json, Spec, hostile_text, json_trees, reports


# ==== statuses read back as stored =============================================

status_fields = st.sampled_from(["conditions", "phase", "attempt", "attempts", "targetHypervisor",
                                 "nextAttemptTime", "memoryFreeBytes", "lastProbeTime", "domains"])
stored_statuses = st.dictionaries(status_fields | st.text(max_size=8), json_trees, max_size=5)
wanted_conditions = st.dictionaries(
    st.sampled_from(status.CONDITION_TYPES),
    st.tuples(st.booleans(), st.from_regex(r"[A-Z][A-Za-z]{0,12}", fullmatch=True), hostile_text),
    max_size=3).map(lambda by_type: tuple(Condition(kind, *rest) for kind, rest in by_type.items()))


def apply_merge_patch(target: Json, patch: Json) -> Json:
    """RFC 7386, to check that a patch really turns the old status into the new."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = apply_merge_patch(result.get(name), value)
    return result


def without_nulls(value: Json) -> Json:
    # A merge patch cannot write null into an object (null deletes), so a
    # stored status's nulls inside changed objects are not comparable.
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


class TestAStoredStatus:
    """A status edited by hand, or written by an older version, never crashes the status code."""

    @given(stored_statuses, st.sampled_from(Phase), wanted_conditions, st.integers(0, 2**40))
    def test_compose_always_writes_all_five_conditions_and_a_patch_that_gets_there(
            self, previous: Spec, phase: Phase, wanted: tuple[Condition, ...],
            generation: int) -> None:
        new = status.compose(previous=previous, phase=phase, generation=generation, now=1000.0,
                             wanted=wanted)
        assert [c["type"] for c in new["conditions"]] == list(status.CONDITION_TYPES)
        for condition in new["conditions"]:
            assert condition["status"] in ("True", "False")
            assert isinstance(condition["lastTransitionTime"], str)
        patch = status.merge_patch(previous, new)
        assert without_nulls(apply_merge_patch(previous, patch)) == without_nulls(new)

    @given(stored_statuses, reports, st.integers(0, 10))
    def test_a_hypervisor_status_is_computed_whatever_was_stored_before(
            self, previous: Spec, report: HostReport, inbound: int) -> None:
        new = status.hypervisor(previous=previous, report=report, generation=1, now=1000.0,
                                inbound=inbound, outbound=0)
        # Exactly one Reachable condition; any other kind stored (Drained) is kept for its owner.
        (reachable,) = [c for c in new["conditions"] if c["type"] == "Reachable"]
        assert isinstance(reachable["lastTransitionTime"], str)
        assert all(isinstance(c, Mapping) for c in new["conditions"])

    @given(json_trees)
    def test_a_stored_timestamp_of_any_shape_reads_as_a_time_or_as_none(self, stored: Json) -> None:
        parsed = status.parse_timestamp(stored)
        assert parsed is None or math.isfinite(parsed)
