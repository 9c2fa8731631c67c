"""Pure: a move's plan — what was measured, what each strategy would cost, what runs — and its codec.

The plan is made in the Validating phase and written to ``status.plan``
before anything moves, so a user sees the choice, the reason and the numbers
first. The engine runs the chosen strategy (:func:`strategy.execution`), and
the monitor acts on its :meth:`MovePlan.expectation`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vmmigration.core import forecast, units
from vmmigration.core import strategy as strategies
from vmmigration.core.channels import Channels
from vmmigration.core.convergence import Expectation
from vmmigration.core.dirtyrate import DirtyRate
from vmmigration.core.forecast import Forecast, Inputs, Overheads, Strategy
from vmmigration.core.strategy import Execution
from vmmigration.core.memory import timestamp
from vmmigration.core.model import MigrationResult, Mode, Policy

# Where the figures came from, as the status names them.
LINK_POLICY, LINK_HISTORY, LINK_UNKNOWN = "PolicyCap", "RecentMoves", "Unknown"
IN_USE_LAST_MOVE, IN_USE_MEMORY = "LastMove", "MemorySize"


@dataclasses.dataclass(frozen=True)
class LinkRate:
    bytes_per_s: float | None
    source: str  # LINK_POLICY, LINK_HISTORY or LINK_UNKNOWN
    # Under a cap: what recent moves between the pair achieved without one, if any.
    uncapped_bytes_per_s: float | None = None


@dataclasses.dataclass(frozen=True)
class InUse:
    bytes: int
    source: str  # IN_USE_LAST_MOVE or IN_USE_MEMORY (an upper bound)


@dataclasses.dataclass(frozen=True)
class Measured:
    memory_bytes: int
    in_use: InUse
    link: LinkRate
    dirty: DirtyRate | None  # None: not measured (an explicit mode takes no time for it)
    running: bool = True
    # Why a post-copy into the target could not be resumed after a link failure
    # (its libvirt crashes on a resume, or resuming is turned off); None: it can.
    post_copy_blocker: str | None = None


@dataclasses.dataclass(frozen=True)
class MovePlan:
    requested: Mode
    strategy: Strategy | None  # None: blocked, nothing fits the budget
    why: str
    measured: Measured
    max_downtime_seconds: float  # the policy's budget, which QEMU's switch-over also follows
    forecasts: tuple[Forecast, ...] = ()
    within_budget: bool = True
    # An Offline move that carries its disks: each copy, as status.plan.volumes shows it.
    volumes: tuple[Mapping[str, Any], ...] = ()
    # The streams the chosen execution runs with (core.channels); None offline.
    channels: Channels | None = None

    @property
    def chosen(self) -> Forecast | None:
        return next((f for f in self.forecasts if f.strategy is self.strategy), None)

    def execution(self, policy: Policy) -> Execution:
        """How the engine runs it: Auto's choice changes mode and policy; an explicit mode runs as asked."""
        if self.requested is Mode.AUTO and self.strategy is not None:
            return strategies.execution(self.strategy, policy=policy)
        mode = self.requested if self.requested is not Mode.AUTO else (
            Mode.LIVE if self.measured.running else Mode.OFFLINE)
        return Execution(mode, policy)

    def expectation(self, policy: Policy) -> Expectation:
        dirty = self.measured.dirty
        chosen = self.chosen
        return Expectation(
            dirty_rate_bytes_per_s=dirty.bytes_per_s if dirty else None,
            hot_set_bytes=dirty.hot_set_bytes if dirty and dirty.hot_set_known else None,
            expected_bytes=expected_bytes(self.measured, chosen) if chosen else None,
            post_copy_at_start=self.execution(policy).post_copy_at_start,
            max_downtime_seconds=self.max_downtime_seconds)

    def as_fields(self, *, generation: int) -> dict[str, Any]:
        """``status.plan``."""
        m = self.measured
        inputs: dict[str, Any] = {
            "memoryBytes": m.memory_bytes, "inUseBytes": m.in_use.bytes, "inUseSource": m.in_use.source,
            "linkSource": m.link.source, "maxDowntimeMs": round(self.max_downtime_seconds * 1000)}
        if m.link.bytes_per_s is not None:
            inputs["linkBytesPerSecond"] = int(m.link.bytes_per_s)
        if m.link.uncapped_bytes_per_s is not None:
            inputs["linkUncappedBytesPerSecond"] = int(m.link.uncapped_bytes_per_s)
        if m.dirty is not None:
            inputs.update({
                "dirtyRateBytesPerSecond": int(m.dirty.bytes_per_s),
                "dirtyRateHighBytesPerSecond": int(m.dirty.high_bytes_per_s),
                "hotSetBytes": m.dirty.hot_set_bytes, "hotSetKnown": m.dirty.hot_set_known,
                "dirtyRatePeriodsSeconds": [r.period_seconds for r in m.dirty.readings],
                "measuredTime": timestamp(m.dirty.measured_at)})
        body: dict[str, Any] = {
            "requestedMode": self.requested.value, "reason": self.why[:1000],
            "withinBudget": self.within_budget, "observedGeneration": generation, "inputs": inputs,
            "candidates": [_candidate(f) for f in self.forecasts]}
        if self.strategy is not None:
            body["strategy"] = self.strategy.value
        if self.volumes:
            body["volumes"] = [dict(v) for v in self.volumes]
        if self.channels is not None:
            body["channels"] = self.channels.as_fields()
        chosen = self.chosen
        if chosen is not None and chosen.duration_seconds is not None:
            body["durationSeconds"] = round(chosen.duration_seconds, 2)
            body["downtimeMs"] = round((chosen.downtime_seconds or 0.0) * 1000)
        return body

    def summary(self) -> str:
        """One line for an Event."""
        carried = ""
        if self.volumes:
            data = sum(int(v.get("bytes") or 0) for v in self.volumes)
            carried = f"; carries {len(self.volumes)} volume(s), {units.size(data)} of data"
        return self._summary() + carried

    def _summary(self) -> str:
        chosen = self.chosen
        if self.strategy is None:
            return f"cannot move within budget: {self.why}"
        if chosen is None or chosen.duration_seconds is None:
            return f"{self.why}"
        return (f"{self.strategy.value}: forecast {chosen.duration_seconds:.1f} s, downtime "
                f"{(chosen.downtime_seconds or 0) * 1000:.0f} ms ({self.why})")


def forecast_errors(plan: MovePlan | None, result: MigrationResult) -> dict[str, float]:
    """Actual over forecast, for each quantity the plan forecast (none when it forecast nothing)."""
    chosen = plan.chosen if plan else None
    if chosen is None:
        return {}
    errors: dict[str, float] = {}
    if chosen.duration_seconds:
        errors["duration"] = result.duration_seconds / chosen.duration_seconds
    if chosen.downtime_seconds and result.downtime_ms is not None:
        errors["downtime"] = result.downtime_ms / 1000.0 / chosen.downtime_seconds
    return errors


def _candidate(f: Forecast) -> dict[str, Any]:
    out: dict[str, Any] = {"strategy": f.strategy.value, "converges": f.converges}
    if f.duration_seconds is not None:
        out["durationSeconds"] = round(f.duration_seconds, 2)
    if f.downtime_seconds is not None:
        out["downtimeMs"] = round(f.downtime_seconds * 1000)
    if f.passes is not None:
        out["passes"] = f.passes
    if f.degraded_seconds:
        out["degradedSeconds"] = round(f.degraded_seconds, 2)
    if f.note:
        out["note"] = f.note[:300]
    return out


def expected_bytes(measured: Measured, chosen: Forecast) -> int | None:
    """Every byte the chosen strategy sends: the first pass, then each leftover."""
    dirty = measured.dirty
    if chosen.strategy in (Strategy.POST_COPY, Strategy.NON_LIVE, Strategy.OFFLINE) or dirty is None:
        return measured.in_use.bytes
    link = measured.link.bytes_per_s
    if link is None or chosen.duration_seconds is None:
        return None
    # The strategy's time on the wire at the link rate is its bytes.
    fixed = Overheads()
    wire = chosen.duration_seconds - fixed.setup_seconds - fixed.finish_seconds
    return max(measured.in_use.bytes, int(wire * link))


def make(*, requested: Mode, policy: Policy, measured: Measured,
         overheads: Overheads = Overheads()) -> MovePlan:
    """Forecast every strategy from what was measured and choose (or keep the explicit mode)."""
    link, dirty = measured.link.bytes_per_s, measured.dirty
    budget = strategies.budget_seconds(policy)
    if not measured.running:
        offline = forecast.offline(Inputs(memory_bytes=measured.memory_bytes, in_use_bytes=0,
                                          dirty_rate_bytes_per_s=0, hot_set_bytes=0,
                                          link_bytes_per_s=1.0, overheads=overheads))
        return MovePlan(requested=requested, strategy=Strategy.OFFLINE,
                        why="the domain is shut off: only its definition moves", measured=measured,
                        forecasts=(offline,), max_downtime_seconds=budget)
    if link is None or dirty is None:
        missing = "link rate" if link is None else "dirty rate"
        live = requested in (Mode.AUTO, Mode.LIVE)
        kept = Strategy.LIVE if live else Strategy.NON_LIVE
        why = (f"{kept.value}: {missing} not known before the move"
               + ("; the job's own figures decide any escalation at the end of its first pass"
                  if live else ""))
        return MovePlan(requested=requested, strategy=kept, why=why, measured=measured,
                        max_downtime_seconds=budget)
    in_use = min(measured.in_use.bytes, measured.memory_bytes)
    inputs = Inputs(
        memory_bytes=measured.memory_bytes, in_use_bytes=in_use,
        dirty_rate_bytes_per_s=dirty.bytes_per_s,
        # Unknown, the least the readings show: a larger one shows in the move itself.
        hot_set_bytes=min(in_use, dirty.hot_set_bytes),
        link_bytes_per_s=link, max_downtime_seconds=budget,
        capped=measured.link.source == LINK_POLICY,
        switch_bytes_per_s=measured.link.uncapped_bytes_per_s, overheads=overheads)
    forecasts = forecast.every_strategy(inputs)
    choice = strategies.choose(forecasts, requested=requested, policy=policy, running=True,
                               post_copy_blocker=measured.post_copy_blocker)
    return MovePlan(requested=requested, strategy=choice.strategy, why=choice.why, measured=measured,
                    forecasts=forecasts, within_budget=choice.within_budget,
                    max_downtime_seconds=budget)
