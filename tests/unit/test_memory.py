"""What the loop remembers is read back from the stored status, which a person may have edited."""

from __future__ import annotations

from typing import Any

import pytest

from vmmigration.core.memory import Attempt, Condition, Memory
from vmmigration.core.spec import Phase


@pytest.mark.parametrize("edited", [
    {"attempt": "x"}, {"attempt": ["kvm-a"]}, {"attempts": "many"}, {"attempts": -3},
    {"attempts": True}, {"conditions": 5}, {"conditions": [5, "x"]}, {"phase": ["Placed"]},
    {"phase": "Sideways"}, {"targetHypervisor": 7}, {"attempt": {"source": 1, "target": None}},
    {"nextAttemptTime": 12}, {"conditions": [{"type": 3, "status": "True"}]},
], ids=str)
def test_a_hand_edited_status_of_the_wrong_shape_is_read_as_absent_not_a_crash(
        edited: dict[str, Any]) -> None:
    memory = Memory.from_status(edited)
    assert memory.attempts == 0 and memory.attempt is None and not memory.was_drifted


def test_a_well_formed_status_is_remembered() -> None:
    memory = Memory.from_status({
        "phase": "Migrating", "attempt": {"source": "kvm-a", "target": "kvm-b"},
        "attempts": 2, "targetHypervisor": "kvm-b",
        "conditions": [{"type": "Drifted", "status": "True", "reason": "NotOnTarget"},
                       {"type": "Blocked", "status": "False", "reason": "AsExpected"}]})
    assert memory.phase is Phase.MIGRATING and memory.attempts == 2 and memory.was_drifted
    assert memory.attempt == Attempt(source="kvm-a", target="kvm-b")
    assert memory.chosen_target == "kvm-b" and memory.blocked is None


@pytest.mark.parametrize("memory", [
    pytest.param(Memory(), id="nothing"),
    pytest.param(Memory(phase=Phase.MIGRATING, attempt=Attempt("kvm-a", "kvm-b", 1_767_225_600.0),
                        chosen_target="kvm-b", attempts=3), id="an-attempt-in-flight"),
    pytest.param(Memory(phase=Phase.FAILED, next_attempt_at=1_767_225_610.0, attempts=1,
                        blocked=Condition("Blocked", True, "InsufficientMemory", "96 MiB free")),
                 id="blocked-in-backoff"),
    pytest.param(Memory(phase=Phase.PLACED, chosen_target="kvm-a",
                        drifted=Condition("Drifted", True, "NotOnTarget", "on kvm-b")),
                 id="drifted"),
    pytest.param(Memory(phase=Phase.PLACED, chosen_target="kvm-a", ready=False), id="placed-not-ready"),
])
def test_the_codec_round_trips_what_it_writes(memory: Memory) -> None:
    assert Memory.from_status(memory.as_fields()) == memory
