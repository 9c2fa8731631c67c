"""Driving one migration for the loop: the pre-checks, then the engine in a worker thread
while progress is written at a bounded rate and an abort is watched for.

Each step ends in the :class:`~vmmigration.core.effects.Effects` its outcome
calls for; the loop carries it out. Nothing here decides what to write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from vmmigration.core import effects as fx
from vmmigration.core import plans
from vmmigration.core import strategy as strategies
from vmmigration.core.config import Settings
from vmmigration.core.errors import VirtError
from vmmigration.core.model import (
    EffectiveMode,
    MigrationRequest,
    MigrationResult,
    Mode,
    OnTimeout,
    Policy,
    Update,
)
from vmmigration.core.replan import replan, retunable
from vmmigration.core.reasons import Reason, classify_check
from vmmigration.core.spec import Desired, SpecError, parse_vmmigration
from vmmigration.service.annotations import rebalance_hint
from vmmigration.service.engine import (
    Engine,
    LostContact,
    MigrationCancelled,
    MigrationError,
    NoJobToAdopt,
    PrecheckFailed,
)
from vmmigration.service.fleet import Fleet
from vmmigration.service.ports import Metrics, Stopped
from vmmigration.service.probes import Probes

log = logging.getLogger(__name__)

# The values of the result label of vmmigration_migrations_total.
SUCCEEDED, FAILED, ABORTED = "succeeded", "failed", "aborted"


@dataclasses.dataclass
class Control:
    """The handles on one migration this process drives or watches."""

    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    detach: threading.Event = dataclasses.field(default_factory=threading.Event)
    latest: Update | None = None
    replanned: str | None = None  # why the move was cancelled as no longer wanted
    # The spec generation and the user's policy the job follows; a policy changed
    # since, waiting for the monitor to apply it (handed over once).
    generation: int | None = None
    policy: Policy | None = None
    retune: Policy | None = None
    refused: int | None = None  # a generation whose change the job cannot follow (said once)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def take_retune(self) -> Policy | None:
        with self.lock:
            wanted, self.retune = self.retune, None
            return wanted


class Driver:
    def __init__(self, *, fleet: Fleet, probes: Probes, engine: Engine, metrics: Metrics,
                 settings: Settings, clock: Callable[[], float]) -> None:
        self.fleet = fleet
        self.probes = probes
        self.engine = engine
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.retry = fx.Retry(base_seconds=settings.retry_base_seconds,
                              cap_seconds=settings.retry_max_seconds)
        self.controls: dict[str, Control] = {}

    async def request(self, desired: Desired, *, source: str, target: str) -> MigrationRequest:
        return MigrationRequest(
            domain=desired.domain,
            source_uri=await self.probes.connection_uri(source),
            target_uri=await self.probes.connection_uri(target),
            mode=desired.mode,
            policy=desired.policy,
            storage=desired.storage,
            persistence=desired.persistence,
            volumes=desired.volumes,
            migration_address=self.fleet.hypervisors[target].spec.migration_address,
        )

    async def validate(self, command: fx.Validate, *, desired: Desired, generation: int = 0) -> fx.Effects:
        source, target, attempts = command.source, command.target, command.attempts
        try:
            request = await self.request(desired, source=source, target=target)
            plan = await asyncio.to_thread(self.engine.check, request, measure=desired.dry_run)
        except PrecheckFailed as refused:
            return fx.refused(selector=desired.selector is not None, source=source, target=target,
                              attempts=attempts, reason=refused.findings[0].reason,
                              message=str(refused), now=self.clock(), retry=self.retry,
                              hold_seconds=self.settings.retry_max_seconds)
        except Exception as error:  # credentials, a host gone: a failure to report and retry
            if isinstance(error, VirtError):
                self.metrics.libvirt_error("check")
            return fx.failed(source=source, target=target, attempts=attempts - 1,
                             reason=classify_check(error),
                             message=str(error)[:300], current=source, now=self.clock(),
                             retry=self.retry)
        if desired.dry_run:
            return fx.dry_run(domain=desired.domain, source=source, target=target, plan=plan,
                              generation=generation)
        if plan.strategy is None:
            return fx.over_budget(source=source, target=target, attempts=attempts, plan=plan,
                                  generation=generation, now=self.clock(), retry=self.retry)
        return fx.checked(domain=desired.domain, source=source, target=target, attempts=attempts,
                          now=self.clock(), plan=plan, generation=generation)

    async def run(self, command: fx.Start, *, key: str, body: Any, desired: Desired,
                  stopped: Stopped, progressed: Callable[[fx.Effects], Awaitable[None]],
                  generation: int | None = None) -> fx.Effects | None:
        """Start (or adopt) and watch the migration; the Effects of its end, or None when
        this process let go of a job that keeps running. ``generation``: the spec
        generation the job is started for; its status claims no newer one it does not follow."""
        control = self.controls[key] = Control(generation=generation, policy=desired.policy)
        ended = await self._run(command, key=key, body=body, desired=desired, stopped=stopped,
                                progressed=progressed, control=control)
        return None if ended is None else dataclasses.replace(ended, generation=control.generation)

    async def _run(self, command: fx.Start, *, key: str, body: Any, desired: Desired,
                   stopped: Stopped, progressed: Callable[[fx.Effects], Awaitable[None]],
                   control: Control) -> fx.Effects | None:
        source, target, attempts = command.source, command.target, command.attempts
        self.fleet.limiter.running(key, running=True)
        operation = "adopt" if command.adopt else "migrate"

        def on_update(update: Update) -> None:
            control.latest = update  # from the engine's thread; read by the loop below

        try:
            request = await self.request(desired, source=source, target=target)
            if command.adopt:
                # Adopted, a job runs as its plan chose (the hybrid's suspend, …).
                if command.strategy is not None and request.mode is Mode.AUTO:
                    execution = strategies.execution(command.strategy, policy=request.policy)
                    request = dataclasses.replace(request, mode=execution.mode, policy=execution.policy)
                call = functools.partial(self.engine.adopt, request)
            else:
                call = functools.partial(self.engine.migrate, request, planned=command.plan,
                                         retune=control.take_retune)
            task = asyncio.ensure_future(asyncio.to_thread(call, on_update=on_update,
                                                           cancel=control.cancel,
                                                           detach=control.detach))
            # A detached task ends after we stopped listening; fetch its outcome so
            # asyncio does not warn about it.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            written: Update | None = None
            last_write = 0.0
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if stopped and not stopped.is_deleted():
                    # The operator is exiting or handing over to a peer: leave the
                    # job running (it is peer-to-peer) and its attempt in the status,
                    # so whoever runs next adopts it instead of waiting here.
                    log.info("%s: leaving the migration of %s running for the next operator",
                             key, desired.domain)
                    control.detach.set()
                    return None
                spec = body.get("spec") or {}
                if (spec.get("abort") or (stopped and stopped.is_deleted())) and not control.cancel.is_set():
                    log.info("%s: abort requested; cancelling the migration of %s", key, desired.domain)
                    control.cancel.set()
                latest = control.latest
                if not control.cancel.is_set():
                    # The spec as it is now, parsed once for both (None: it no longer parses).
                    try:
                        now: Desired | None = parse_vmmigration(spec)
                    except SpecError:
                        now = None
                    self._replan(key, control, now=now, source=source, target=target,
                                 hint=rebalance_hint(body, now=self.clock()))
                    self._follow(key, control, started=desired, now=now,
                                 generation=int(body["metadata"].get("generation") or 0),
                                 post_copy=self._post_copy_allowed(command, desired))
                if latest is not None:
                    self.metrics.sample(key, latest.progress, percent=latest.percent)
                if (latest is not None and latest is not written
                        and self.clock() - last_write >= self.settings.progress_interval_seconds):
                    written, last_write = latest, self.clock()
                    try:
                        await progressed(dataclasses.replace(fx.progressed(latest),
                                                             generation=control.generation))
                    except Exception as error:  # progress is best effort; the outcome is not
                        # One line, no traceback: the API's message spans lines and is not ours.
                        log.debug("%s: progress not written (%s)", key, type(error).__name__)
            result: MigrationResult = task.result()
        except NoJobToAdopt as nothing:
            moved = fx.found_after_restart(nothing.found)
            if moved is not None:
                self._ended(key, moved)
            return fx.unwatched(nothing.found, source=source, target=target, attempts=attempts,
                                now=self.clock(), retry=self.retry)
        except LostContact as lost:
            # The job is not over for libvirt: keep the attempt (so nothing starts
            # another) and adopt it once the host answers.
            log.warning("%s: %s", key, lost)
            return fx.unreadable(lost.found.unreachable)
        except PrecheckFailed as refused:
            return fx.failed(source=source, target=target, attempts=attempts - 1,
                             reason=refused.findings[0].reason, message=str(refused),
                             current=source, now=self.clock(), retry=self.retry, blocked=True)
        except MigrationCancelled as cancelled:
            self.metrics.ended(key, mode=self._mode(control, desired), result=ABORTED)
            if control.replanned:
                self.fleet.wake(key)  # decide again at once, from where the VM is
                return fx.replanned(source=source, target=target, location=cancelled.location,
                                    message=control.replanned, now=self.clock())
            return fx.cancelled(source=source, target=target, location=cancelled.location,
                                message=str(cancelled), now=self.clock())
        except MigrationError as failed:
            if failed.reason.libvirt_fault:
                self.metrics.libvirt_error(operation)
            self.metrics.ended(key, mode=self._mode(control, desired), result=FAILED)
            return fx.stopped(source=source, target=target, attempts=attempts, reason=failed.reason,
                              message=str(failed), location=failed.location, now=self.clock(),
                              retry=self.retry)
        except VirtError as error:
            self.metrics.libvirt_error(operation)
            self.metrics.ended(key, mode=self._mode(control, desired), result=FAILED)
            return fx.failed(source=source, target=target, attempts=attempts,
                             reason=Reason.LIBVIRT_ERROR, message=str(error), current=source,
                             now=self.clock(), retry=self.retry)
        finally:
            self.controls.pop(key, None)
            self.fleet.limiter.running(key, running=False)
            self.metrics.left(key)
        self._ended(key, result)
        for quantity, ratio in plans.forecast_errors(command.plan, result).items():
            self.metrics.forecast_checked(quantity=quantity, ratio=ratio)
        return fx.succeeded(domain=desired.domain, source=source, target=target, result=result,
                            now=self.clock(), plan=command.plan, generation=command.generation)

    def _replan(self, key: str, control: Control, *, now: Desired | None, source: str,
                target: str, hint: str | None) -> None:
        """Cancel the move in flight when it is no longer the one wanted (core.replan)."""
        latest = control.latest
        verdict = replan(desired=now, source=source, target=target, hint=hint,
                         hypervisors=self.fleet.hypervisors,
                         in_post_copy=latest is not None and latest.mode is EffectiveMode.POST_COPY,
                         eta_seconds=latest.eta_seconds if latest else None)
        if verdict.cancel:
            log.info("%s: %s", key, verdict.why)
            control.replanned = verdict.why
            control.cancel.set()

    @staticmethod
    def _post_copy_allowed(command: fx.Start, desired: Desired) -> bool:
        policy = command.plan.execution(desired.policy).policy if command.plan else desired.policy
        return policy.on_timeout is OnTimeout.POST_COPY

    @staticmethod
    def _follow(key: str, control: Control, *, started: Desired, now: Desired | None,
                generation: int, post_copy: bool) -> None:
        """A newer spec that changes only what the running job can take on: hand its policy
        to the monitor, and the status may then claim that generation. Anything else a
        newer spec changes applies to the next move, and the claim stays where it was."""
        if (now is None or control.generation is None or generation == control.generation
                or control.policy is None):
            return
        if dataclasses.replace(now, policy=started.policy) != started:
            return
        if now.policy != control.policy:
            if not retunable(running=control.policy, wanted=now.policy, post_copy_allowed=post_copy):
                if control.refused != generation:
                    control.refused = generation
                    log.info("%s: the changed policy cannot apply to the running job; it "
                             "applies to the next move", key)
                return
            with control.lock:
                control.retune = now.policy
            control.policy = now.policy
        control.generation = generation

    def cancel(self, key: str) -> None:
        control = self.controls.get(key)
        if control is not None:
            control.cancel.set()

    @staticmethod
    def _mode(control: Control, desired: Desired) -> str:
        latest = control.latest
        return latest.mode.value if latest is not None else desired.mode.value

    def _ended(self, key: str, result: MigrationResult) -> None:
        self.metrics.ended(key, mode=result.mode.value, result=SUCCEEDED,
                           duration_seconds=result.duration_seconds,
                           downtime_ms=result.downtime_ms,
                           transferred_bytes=result.bytes_transferred)
