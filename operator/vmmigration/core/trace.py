"""A recording of one migration: samples over time, the moments that matter, and the outcome.

Pure: fed by the engine's updates, saved as JSON, and drawn by
:mod:`vmmigration.adapters.plot` (``vmmigration migrate --plot``, ``vmmigration report``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from vmmigration.core.model import EffectiveMode, JobProgress, MigrationResult


@dataclasses.dataclass(frozen=True)
class Sample:
    seconds: float  # since the recording began
    memory_remaining_bytes: int
    dirty_rate_bytes_per_s: int
    transfer_rate_bytes_per_s: int
    iteration: int
    mode: str


@dataclasses.dataclass(frozen=True)
class Moment:
    seconds: float
    what: str


@dataclasses.dataclass
class Trace:
    domain: str
    samples: list[Sample] = dataclasses.field(default_factory=list)
    moments: list[Moment] = dataclasses.field(default_factory=list)
    mode: str | None = None
    duration_seconds: float | None = None
    downtime_ms: int | None = None
    outcome: str = "running"

    def record(self, *, seconds: float, mode: EffectiveMode, progress: JobProgress | None,
               note: str | None) -> None:
        previous = self.samples[-1].mode if self.samples else None
        if previous is not None and previous != mode.value:
            # The source paused (hybrid) or the target took over (post-copy).
            self.moments.append(Moment(seconds, f"switch to {mode.value}"))
        if note:
            self.moments.append(Moment(seconds, note))
        if progress is not None:
            self.samples.append(Sample(
                seconds=seconds, memory_remaining_bytes=progress.memory_remaining,
                dirty_rate_bytes_per_s=progress.dirty_rate_bytes_per_s,
                transfer_rate_bytes_per_s=progress.transfer_rate_bytes_per_s,
                iteration=progress.iteration, mode=mode.value))

    def finish(self, result: MigrationResult, *, seconds: float) -> None:
        self.mode = result.mode.value
        self.duration_seconds = result.duration_seconds
        self.downtime_ms = result.downtime_ms
        self.outcome = "succeeded"
        # A live switch-over happens at the very end: the guest pauses for the
        # downtime while the last dirty pages and the device state go across.
        if self.switch_over() is not None:  # the hybrid or post-copy switched earlier
            self.moments.append(Moment(seconds, "completed"))
            return
        pause = (result.downtime_ms or 0) / 1000.0
        self.moments.append(Moment(max(0.0, seconds - pause), "switch-over"))

    def fail(self, reason: str, *, seconds: float) -> None:
        self.outcome = reason
        self.moments.append(Moment(seconds, reason))

    def switch_over(self) -> float | None:
        """When the guest stopped running on the source: the first pause or switch, else the end."""
        for moment in self.moments:
            if moment.what.startswith("switch"):
                return moment.seconds
        return None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        raw: dict[str, Any] = json.loads(text)
        try:
            return cls(domain=str(raw["domain"]),
                       samples=[Sample(**s) for s in raw.get("samples", ())],
                       moments=[Moment(**m) for m in raw.get("moments", ())],
                       mode=raw.get("mode"), duration_seconds=raw.get("duration_seconds"),
                       downtime_ms=raw.get("downtime_ms"), outcome=str(raw.get("outcome", "")))
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a vmmigration trace: {error}") from None

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())
