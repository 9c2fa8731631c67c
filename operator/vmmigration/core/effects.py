"""Pure: what one pass of a VMMigration's loop writes, posts and does.

:func:`vmmigration.core.reconcile.decide` says where the VM should go; the
functions here turn that, and each outcome the runtime reports back (a
pre-check's verdict, a migration's end), into one :class:`Effects`: the phase,
conditions and fields of the status, the Events, the metric flags, and at
most one command. The runtime carries an Effects out as it is and writes the
status once for it, so every rule of the policy is a row in a table test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vmmigration.core import reconcile
from vmmigration.core.location import Aftermath, Location
from vmmigration.core.memory import Condition, Memory, timestamp
from vmmigration.core.model import EffectiveMode, MigrationResult, PowerState, Update, display_uri
from vmmigration.core.forecast import Strategy
from vmmigration.core.plans import MovePlan
from vmmigration.core.reasons import Reason, for_location
from vmmigration.core.scheduling import HypervisorView, whereabouts
from vmmigration.core.spec import Desired, Phase
from vmmigration.core.status import progress

# A message shown in a condition, an Event and lastFailure is cut to this.
MESSAGE_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class Retry:
    """Backoff between failed attempts: base, 2·base, 4·base … up to cap (seconds)."""

    base_seconds: float = 10.0
    cap_seconds: float = 300.0

    def delay(self, *, failures: int) -> float:
        return reconcile.backoff_seconds(failures=max(1, failures), base=self.base_seconds,
                                         cap=self.cap_seconds)


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


# ---- commands: at most one per Effects ------------------------------------------

@dataclasses.dataclass(frozen=True)
class LookAgain:
    """Probe every host at one moment, then plan this pass again."""


@dataclasses.dataclass(frozen=True)
class Validate:
    """Take a migration slot and run the pre-checks for source -> target."""

    source: str
    target: str
    attempts: int


@dataclasses.dataclass(frozen=True)
class Start:
    """Start the migration (or, with ``adopt``, watch the job a restart left running)."""

    source: str
    target: str
    attempts: int
    adopt: bool = False
    plan: MovePlan | None = None  # the plan made at the pre-checks (None when adopting)
    generation: int = 0  # the spec generation the plan was made for
    strategy: Strategy | None = None  # adopting: the strategy the stored plan chose


Command = LookAgain | Validate | Start


@dataclasses.dataclass(frozen=True)
class Effects:
    phase: Phase | None  # None: the status is not written
    conditions: tuple[Condition, ...] = ()
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    events: tuple[Event, ...] = ()
    command: Command | None = None
    # Hosts to probe before the status is written, so the inventory shows the
    # move before the next decision (or the VM would look as if it drifted back).
    reprobe: tuple[str, ...] = ()
    # The per-VMMigration metric flags; None leaves one as it is.
    failed: bool | None = None
    drifted: bool | None = None
    queued: bool | None = None
    avoid: tuple[str, str] | None = None  # (host, why): skip it for a while (selectors)
    idle: bool = False  # nothing left to watch until the spec changes
    # The spec generation the status describes, when not the object's own: a
    # running job follows the spec it was started for (or last retuned to).
    generation: int | None = None


def condition(kind: str, status: bool, reason: Reason | str, message: str = "") -> Condition:
    return Condition(kind, status, reason.value if isinstance(reason, Reason) else reason,
                     message[:MESSAGE_LIMIT])


# ---- one pass ------------------------------------------------------------------

def plan(action: reconcile.Action, *, desired: Desired, memory: Memory,
         hypervisors: Mapping[str, HypervisorView], admission: str | None,
         looked_again: bool) -> Effects:
    """The effects of decide's action. ``admission`` is why no slot is free (Migrate only).

    Every status written says the domain's power state too, as the inventory has it:
    a VM stopped or started behind the operator's back shows at the next pass, which
    libvirt's event wakes.
    """
    effects = _plan(action, desired=desired, memory=memory, hypervisors=hypervisors,
                    admission=admission, looked_again=looked_again)
    if effects.phase is None or isinstance(action, reconcile.Idle):
        return effects
    where = whereabouts(desired.domain, hypervisors)
    if where.summary is not None:
        state: str | None = where.summary.state.value
    elif where.incoming:
        state = PowerState.PAUSED.value
    elif where.unknown:
        return effects  # it may be on a host we cannot see: keep what the status says
    else:
        state = None  # defined nowhere
    return dataclasses.replace(effects, fields={**effects.fields, "domainState": state})


def _plan(action: reconcile.Action, *, desired: Desired, memory: Memory,
          hypervisors: Mapping[str, HypervisorView], admission: str | None,
          looked_again: bool) -> Effects:
    domain = desired.domain
    kept_phase = (memory.phase if memory.phase in (Phase.FAILED, Phase.PLACED, Phase.DISPLACED)
                  else Phase.PENDING)
    match action:
        case reconcile.Idle():
            return Effects(phase=None, idle=True)
        case reconcile.Placed(current=current):
            return Effects(
                phase=Phase.PLACED, failed=False, drifted=False,
                conditions=(condition("Ready", True, Reason.PLACED, f"domain {domain} runs on {current}"),),
                fields={"currentHypervisor": current, "targetHypervisor": current,
                        "attempt": None, "nextAttemptTime": None, "displacedFrom": None})
        case reconcile.Displaced(current=current, home=home):
            message = (f"domain {domain} runs on {current} while {home} is in maintenance; "
                       f"it goes back when the maintenance ends")
            return Effects(
                phase=Phase.DISPLACED, failed=False, drifted=False,
                conditions=(condition("Ready", False, Reason.DISPLACED, message),),
                fields={"currentHypervisor": current, "attempt": None, "nextAttemptTime": None,
                        "displacedFrom": home},
                events=() if memory.phase is Phase.DISPLACED else (Event("Normal", "Displaced", message),))
        case reconcile.Block(reason=reason, message=message, current=current):
            if reason.skew_prone and not looked_again:
                # Each host is probed on its own clock: look at all of them at one
                # moment before believing a VM runs twice, or nowhere.
                return Effects(phase=None, command=LookAgain())
            same = memory.blocked is not None and memory.blocked.reason == reason.value
            return Effects(
                # A block does not erase what the status remembers (placed, failed).
                phase=kept_phase,
                conditions=(condition("Blocked", True, reason, message),
                            condition("Ready", False, reason, message)),
                fields={"currentHypervisor": current} if current else {},
                events=() if same else (Event("Warning", "Blocked", message),))
        case reconcile.Wait(reason=reason, message=message):
            # Waiting changes nothing about why we were blocked or drifted.
            kept = tuple(c for c in (memory.blocked, memory.drifted) if c is not None)
            return Effects(phase=kept_phase,
                           conditions=(condition("Ready", False, reason, message), *kept))
        case reconcile.Abort(current=current):
            return Effects(
                phase=Phase.ABORTED, queued=False, failed=False, idle=True,
                conditions=(condition("Ready", False, Reason.ABORTED,
                                      f"spec.abort is set; domain {domain} stays on {current}"),),
                fields={"currentHypervisor": current, "attempt": None})
        case reconcile.ReportDrift(current=current, target=target):
            message = f"domain {domain} runs on {current}, not on {target}; driftAction is Report"
            return Effects(
                phase=Phase.PLACED, drifted=True,
                conditions=(condition("Drifted", True, Reason.NOT_ON_TARGET, message),
                            condition("Ready", False, Reason.DRIFTED, message)),
                fields={"currentHypervisor": current},
                events=() if memory.was_drifted else (Event("Warning", "DriftDetected", message),))
        case reconcile.Migrate(source=source, target=target, drift=drift, why=why):
            return _migrate(domain, memory=memory, source=source, target=target, drift=drift,
                            admission=admission, why=why)
        case reconcile.Recover(source=source, target=target):
            if source not in hypervisors or target not in hypervisors:
                return Effects(phase=Phase.MIGRATING, conditions=(condition(
                    "Progressing", True, Reason.RECOVERING, "waiting for both Hypervisors to be known"),))
            # After a restart: settle the attempt the status remembers, never start another.
            return Effects(phase=None, command=Start(source=source, target=target,
                                                      attempts=memory.attempts, adopt=True,
                                                      strategy=memory.strategy))
    raise AssertionError(f"unhandled action {action!r}")


def _migrate(domain: str, *, memory: Memory, source: str, target: str, drift: bool,
             admission: str | None, why: str = "") -> Effects:
    because = f" ({why})" if why else ""
    if admission is not None:
        return Effects(
            phase=Phase.PENDING, queued=True,
            conditions=(condition("Queued", True, Reason.CONCURRENCY_LIMIT, admission + because),
                        condition("Ready", False, Reason.QUEUED, admission + because)),
            fields={"sourceHypervisor": source, "targetHypervisor": target})
    # A correction after the VM was placed counts its attempts afresh.
    attempts = 1 if memory.placed_before else memory.attempts + 1
    checking = f"checking that {domain} can move from {source} to {target}{because}"
    events = (Event("Warning", "DriftDetected", f"domain {domain} runs on {source}, not on "
                                                f"{target}; moving it back"),) if drift else ()
    return Effects(
        phase=Phase.VALIDATING, queued=False, drifted=True if drift else None, events=events,
        conditions=(condition("Progressing", True, Reason.VALIDATING, checking),
                    condition("Ready", False, Reason.VALIDATING, checking)),
        fields={"sourceHypervisor": source, "targetHypervisor": target, "currentHypervisor": source},
        command=Validate(source=source, target=target, attempts=attempts))


def invalid_spec(message: str) -> Effects:
    return Effects(phase=Phase.FAILED, idle=True,
                   conditions=(condition("Blocked", True, Reason.INVALID_SPEC, message),
                               condition("Ready", False, Reason.INVALID_SPEC, message)))


# ---- outcomes ------------------------------------------------------------------

def checked(*, domain: str, source: str, target: str, attempts: int, now: float,
            plan: MovePlan | None = None, generation: int = 0) -> Effects:
    """The pre-checks passed: record the attempt and the plan, then start (never the other way round).

    Written before libvirt is asked, so a restart finds the attempt and
    inspects libvirt instead of starting a second migration, and a user sees
    the plan before anything moves.
    """
    message = f"migrating {domain} from {source} to {target}"
    if plan is not None and plan.strategy is not None:
        message += f" ({plan.strategy.value})"
    planned = (Event("Normal", "Planned", plan.summary()[:MESSAGE_LIMIT]),) if plan else ()
    return Effects(
        phase=Phase.MIGRATING,
        conditions=(condition("Progressing", True, Reason.MIGRATING, message),
                    condition("Ready", False, Reason.MIGRATING, message)),
        fields={"sourceHypervisor": source, "targetHypervisor": target, "currentHypervisor": source,
                "attempt": {"source": source, "target": target, "startTime": timestamp(now)},
                "startTime": timestamp(now), "completionTime": None, "attempts": attempts,
                "progress": {"percent": 0.0}, "progressText": "0%", "downtimeMs": None,
                "durationSeconds": None, "nextAttemptTime": None, "effectiveMode": None,
                "plan": plan.as_fields(generation=generation) if plan else None},
        events=(*planned, Event("Normal", "MigrationStarted", message)),
        command=Start(source=source, target=target, attempts=attempts, plan=plan,
                      generation=generation))


def dry_run(*, domain: str, source: str, target: str, plan: MovePlan, generation: int) -> Effects:
    """spec.dryRun: the plan is shown and nothing moves, until dryRun is cleared."""
    message = f"dry run: {domain} would move from {source} to {target}: {plan.summary()}"
    return Effects(
        phase=Phase.PENDING, idle=True,
        conditions=(condition("Ready", False, Reason.DRY_RUN, message),),
        fields={"sourceHypervisor": source, "targetHypervisor": target, "currentHypervisor": source,
                "plan": plan.as_fields(generation=generation)},
        events=(Event("Normal", "Planned", message[:MESSAGE_LIMIT]),))


def over_budget(*, source: str, target: str, attempts: int, plan: MovePlan, generation: int,
                now: float, retry: Retry) -> Effects:
    """No allowed strategy fits the downtime budget: Blocked with the numbers, retried later
    (a guest's dirty rate changes)."""
    effects = failed(source=source, target=target, attempts=attempts - 1,
                     reason=Reason.DOWNTIME_BUDGET, message=plan.why, current=source, now=now,
                     retry=retry, blocked=True)
    return dataclasses.replace(effects, fields={**effects.fields,
                                                "plan": plan.as_fields(generation=generation)})


def refused(*, selector: bool, source: str, target: str, attempts: int, reason: str,
            message: str, now: float, retry: Retry, hold_seconds: float) -> Effects:
    """A pre-check refused the move: nothing changed. Blocked until the retry.

    The refusal does not count as an attempt. A selector skips the host that
    refused for ``hold_seconds``, so another candidate gets its turn.
    """
    effects = failed(source=source, target=target, attempts=attempts - 1, reason=reason,
                     message=message, current=source, now=now, retry=retry, blocked=True)
    if selector:
        return dataclasses.replace(effects, avoid=(target, reason))
    return effects


def failed(*, source: str, target: str, attempts: int, reason: Reason | str, message: str,
           current: str, now: float, retry: Retry, blocked: bool = False) -> Effects:
    text = message[:MESSAGE_LIMIT]
    shown = reason.value if isinstance(reason, Reason) else reason
    wanted = [condition("Ready", False, reason, text)]
    if blocked:
        wanted.append(condition("Blocked", True, reason, text))
    return Effects(
        phase=Phase.FAILED, failed=True, reprobe=(source, target), conditions=tuple(wanted),
        events=(Event("Warning", "Blocked" if blocked else "MigrationFailed", text),),
        fields={"attempt": None, "currentHypervisor": current, "attempts": max(0, attempts),
                "completionTime": timestamp(now),
                "lastFailure": {"reason": shown, "message": text, "time": timestamp(now)},
                "nextAttemptTime": timestamp(now + retry.delay(failures=attempts))})


def stopped(*, source: str, target: str, attempts: int, reason: Reason, message: str,
            location: Location, now: float, retry: Retry) -> Effects:
    """A started migration did not complete; the VM counts as on the target only if it runs there."""
    current = target if location is Location.TARGET else source
    return failed(source=source, target=target, attempts=attempts, reason=reason, message=message,
                  current=current, now=now, retry=retry)


def cancelled(*, source: str, target: str, location: Location, message: str, now: float) -> Effects:
    """Aborted on request (spec.abort, deletion): the VM stays where the abort left it."""
    current = source if location is Location.SOURCE else target
    return Effects(
        phase=Phase.ABORTED, failed=False, reprobe=(source, target),
        conditions=(condition("Ready", False, Reason.ABORTED, message),),
        events=(Event("Warning", "MigrationAborted", message),),
        fields={"attempt": None, "currentHypervisor": current, "completionTime": timestamp(now),
                "lastFailure": {"reason": Reason.ABORTED.value, "message": message[:MESSAGE_LIMIT],
                                "time": timestamp(now)}})


def replanned(*, source: str, target: str, location: Location, message: str, now: float) -> Effects:
    """The move was cancelled because it was no longer wanted: nothing failed, and the next
    pass decides afresh from where the VM is (Placed, or a move to the new target)."""
    current = source if location is Location.SOURCE else target
    return Effects(
        phase=Phase.PENDING, failed=False, reprobe=(source, target),
        conditions=(condition("Ready", False, Reason.REPLANNED, message),),
        events=(Event("Normal", "Replanned", message[:MESSAGE_LIMIT]),),
        fields={"attempt": None, "currentHypervisor": current, "completionTime": timestamp(now)})


def succeeded(*, domain: str, source: str, target: str, result: MigrationResult,
              now: float, plan: MovePlan | None = None, generation: int = 0) -> Effects:
    downtime = f", downtime {result.downtime_ms} ms" if result.downtime_ms is not None else ""
    message = (f"domain {domain} moved to {target} ({result.mode.value}) in "
               f"{result.duration_seconds:.1f} s{downtime}")
    extra: dict[str, Any] = {}
    chosen = plan.chosen if plan else None
    if plan is not None and chosen is not None and chosen.duration_seconds is not None:
        message += (f"; forecast {chosen.duration_seconds:.1f} s, "
                    f"{(chosen.downtime_seconds or 0) * 1000:.0f} ms")
        actual = {"durationSeconds": round(result.duration_seconds, 3),
                  "effectiveMode": result.mode.value}
        if result.downtime_ms is not None:
            actual["downtimeMs"] = result.downtime_ms
        if result.degraded_seconds is not None:
            actual["degradedSeconds"] = result.degraded_seconds
        extra["plan"] = {**plan.as_fields(generation=generation), "actual": actual}
    return Effects(
        phase=Phase.PLACED, failed=False, drifted=False, reprobe=(source, target),
        conditions=(condition("Ready", True, Reason.PLACED, message),),
        events=(Event("Normal", "MigrationSucceeded", message),),
        fields={"currentHypervisor": target, "targetHypervisor": target, "attempt": None,
                "completionTime": timestamp(now), "effectiveMode": result.mode.value,
                "downtimeMs": result.downtime_ms,
                "durationSeconds": round(result.duration_seconds, 3),
                # Post-copy: how long the VM ran on the target fetching pages it lacked.
                "degradedSeconds": result.degraded_seconds,
                "channels": result.channels.as_fields() if result.channels else None,
                "progress": progress(result.final, percent=100.0, eta_seconds=0.0),
                "progressText": "100%", "nextAttemptTime": None, **extra})


def found_after_restart(found: Aftermath) -> MigrationResult | None:
    """The result of an attempt that ended while no one watched, if it moved the VM."""
    if found.unreachable or found.location is not Location.TARGET:
        return None
    final = found.final
    return MigrationResult(
        domain=found.domain,
        mode=EffectiveMode.LIVE if (found.target and found.target.active) else EffectiveMode.OFFLINE,
        duration_seconds=final.elapsed_seconds if final else 0.0,
        downtime_ms=final.downtime_ms if final else None,
        bytes_transferred=final.data_processed if final else 0, final=final)


def unwatched(found: Aftermath, *, source: str, target: str, attempts: int, now: float,
              retry: Retry) -> Effects:
    """No job runs any more: the attempt ended while no one watched. Where is the VM?"""
    if found.unreachable:
        return unreadable(found.unreachable)
    moved = found_after_restart(found)
    if moved is not None:
        return succeeded(domain=found.domain, source=source, target=target, result=moved, now=now)
    if found.location is Location.SOURCE:
        # The attempt never moved the VM (or failed while we were away).
        # Nothing runs now, so the next pass may start a fresh attempt.
        return interrupted(domain=found.domain, source=source, target=target, now=now)
    return misplaced(domain=found.domain, source=source, target=target, attempts=attempts,
                     location=found.location, now=now, retry=retry)


def interrupted(*, domain: str, source: str, target: str, now: float) -> Effects:
    """A restart found the attempt over and the VM still on the source: a fresh attempt may start."""
    return Effects(
        phase=Phase.PENDING, reprobe=(source, target),
        conditions=(condition("Ready", False, Reason.INTERRUPTED,
                              "the operator restarted during the attempt; the VM is still on the source"),),
        fields={"attempt": None, "currentHypervisor": source,
                "lastFailure": {"reason": Reason.INTERRUPTED.value,
                                "message": "the operator restarted during the attempt; "
                                           f"{domain} stayed on {source}",
                                "time": timestamp(now)}})


def unreadable(uris: tuple[str, ...]) -> Effects:
    """A host of the attempt cannot be read (after a restart, or the connection to it was
    lost mid-job): keep Migrating and the attempt, and adopt the job once it answers."""
    return Effects(phase=Phase.MIGRATING, conditions=(condition(
        "Progressing", True, Reason.RECOVERING,
        f"cannot read {', '.join(display_uri(u) for u in uris)} (unreachable); a migration job "
        "may run on there without the operator, which adopts it when the host answers"),))


def misplaced(*, domain: str, source: str, target: str, attempts: int, location: Location,
              now: float, retry: Retry) -> Effects:
    """A restart found the VM in a place no rule settles (split, both, nowhere): a human must."""
    return failed(source=source, target=target, attempts=attempts, reason=for_location(location),
                  message=f"after a restart domain {domain} is {location.value} between "
                          f"{source} and {target}; resolve it by hand", current=source, now=now,
                  retry=retry)


def progressed(update: Update) -> Effects:
    return Effects(
        phase=Phase.MIGRATING,
        conditions=(condition("Progressing", True,
                              Reason.RECOVERING if update.waiting_for_link else Reason.MIGRATING,
                              update.waiting_for_link or update.note
                              or f"{update.percent:.0f}% copied"
                              + (f" of {len(update.disks)} disk(s)" if update.disks else "")),
                    condition("Ready", False, Reason.MIGRATING, f"migrating {update.domain}")),
        fields={"progress": progress(update.progress, percent=update.percent,
                                     eta_seconds=update.eta_seconds, disks=update.disks),
                "progressText": f"{update.percent:.0f}%", "effectiveMode": update.mode.value})
