"""What the loop remembers is read back from the stored status, which a person may have edited."""

from __future__ import annotations

from typing import Any

import pytest

from vmmigration.desired import Phase
from vmmigration.k8s.runtime import _memory


@pytest.mark.parametrize("edited", [
    {"attempt": "x"}, {"attempt": ["kvm-a"]}, {"attempts": "many"}, {"attempts": -3},
    {"attempts": True}, {"conditions": 5}, {"conditions": [5, "x"]}, {"phase": ["Placed"]},
    {"phase": "Sideways"}, {"targetHypervisor": 7}, {"attempt": {"source": 1, "target": None}},
    {"nextAttemptTime": 12},
], ids=str)
def test_a_hand_edited_status_of_the_wrong_shape_is_read_as_absent_not_a_crash(
        edited: dict[str, Any]) -> None:
    memory = _memory(edited)
    assert memory.attempts == 0 and memory.attempt_source is None and not memory.drifted


def test_a_well_formed_status_is_remembered() -> None:
    memory = _memory({"phase": "Migrating", "attempt": {"source": "kvm-a", "target": "kvm-b"},
                      "attempts": 2, "targetHypervisor": "kvm-b",
                      "conditions": [{"type": "Drifted", "status": "True"}]})
    assert memory.phase is Phase.MIGRATING and memory.attempts == 2 and memory.drifted
    assert (memory.attempt_source, memory.attempt_target, memory.chosen_target) == ("kvm-a", "kvm-b", "kvm-b")
