"""Pure: what a VMMigration's status remembers, decoded and encoded in one place.

The status is the operator's only memory that survives a restart: the attempt
in flight (so a restarted operator adopts it instead of starting another), the
backoff, the attempt count, and the conditions a later pass must keep (why it
is blocked, that it drifted). :meth:`Memory.from_status` reads it as stored;
someone may have edited it by hand, so a field of the wrong shape counts as
absent instead of crashing the loop. :meth:`Memory.as_fields` writes the same
fields back, and the two round-trip.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from vmmigration.core.forecast import Strategy
from vmmigration.core.spec import Phase


def timestamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: Any) -> float | None:
    if not text or not isinstance(text, str):
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class Condition:
    """One condition as the operator means it; status.py adds times and generations."""

    type: str
    status: bool
    reason: str
    message: str = ""

    @classmethod
    def from_status(cls, stored: Any) -> Condition | None:
        if not isinstance(stored, Mapping) or not isinstance(stored.get("type"), str):
            return None
        reason, message = stored.get("reason"), stored.get("message")
        return cls(type=stored["type"], status=stored.get("status") == "True",
                   reason=reason if isinstance(reason, str) else "",
                   message=message if isinstance(message, str) else "")

    def as_fields(self) -> dict[str, Any]:
        return {"type": self.type, "status": "True" if self.status else "False",
                "reason": self.reason, "message": self.message}


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A migration that was started source -> target and has not been settled."""

    source: str
    target: str
    started_at: float | None = None

    @classmethod
    def from_status(cls, stored: Any) -> Attempt | None:
        if not isinstance(stored, Mapping):
            return None
        source, target = _text(stored.get("source")), _text(stored.get("target"))
        if source is None or target is None:
            return None
        return cls(source=source, target=target, started_at=parse_timestamp(stored.get("startTime")))

    def as_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"source": self.source, "target": self.target}
        if self.started_at is not None:
            fields["startTime"] = timestamp(self.started_at)
        return fields


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the resource's status remembers; it survives an operator restart."""

    phase: Phase | None = None
    attempt: Attempt | None = None
    chosen_target: str | None = None  # status.targetHypervisor
    next_attempt_at: float | None = None  # backoff after a failure, epoch seconds
    attempts: int = 0
    # The True conditions a later pass keeps while it only waits.
    blocked: Condition | None = None
    drifted: Condition | None = None
    # The stored plan: the strategy a job in flight runs, and the generation planned for.
    strategy: Strategy | None = None
    plan_generation: int | None = None
    # The Ready condition is True (a status without conditions counts as ready: nothing
    # in it is stale).
    ready: bool = True

    @property
    def was_drifted(self) -> bool:
        return self.drifted is not None

    @property
    def placed_before(self) -> bool:
        """The VM was placed once: a move now is a drift correction, counted afresh."""
        return self.phase is Phase.PLACED or self.drifted is not None

    @classmethod
    def from_status(cls, stored: Mapping[str, Any]) -> Memory:
        try:
            phase = Phase(stored["phase"]) if stored.get("phase") else None
        except (ValueError, TypeError):
            phase = None
        attempts = stored.get("attempts")
        conditions = stored.get("conditions")
        true = {c.type: c for c in (Condition.from_status(s) for s in (
            conditions if isinstance(conditions, list) else ())) if c is not None and c.status}
        return cls(
            phase=phase,
            attempt=Attempt.from_status(stored.get("attempt")),
            chosen_target=_text(stored.get("targetHypervisor")),
            next_attempt_at=parse_timestamp(stored.get("nextAttemptTime")),
            attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool)
            and attempts >= 0 else 0,
            blocked=true.get("Blocked"),
            drifted=true.get("Drifted"),
            strategy=_strategy(stored.get("plan")),
            plan_generation=_generation(stored.get("plan")),
            ready="Ready" in true or not isinstance(conditions, list) or not conditions,
        )

    def as_fields(self) -> dict[str, Any]:
        """The status fields this memory is read from (None clears a field)."""
        return {
            "phase": self.phase.value if self.phase else None,
            "attempt": self.attempt.as_fields() if self.attempt else None,
            "targetHypervisor": self.chosen_target,
            "nextAttemptTime": (timestamp(self.next_attempt_at)
                                if self.next_attempt_at is not None else None),
            "attempts": self.attempts,
            "conditions": [c.as_fields() for c in (
                self.blocked, self.drifted, Condition("Ready", self.ready, "Remembered"))
                if c is not None],
        }


def _strategy(plan: Any) -> Strategy | None:
    try:
        return Strategy(plan.get("strategy")) if isinstance(plan, Mapping) else None
    except ValueError:
        return None


def _generation(plan: Any) -> int | None:
    value = plan.get("observedGeneration") if isinstance(plan, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
