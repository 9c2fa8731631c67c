"""Runs one migration: pre-checks, start (or adopt a running job), monitor, final statistics.

libvirt's migrate call blocks until the job ends (forever, for a live
migration that cannot converge), so it runs in a worker thread while this
thread runs the monitor loop of :mod:`vmmigration.service.monitor`, which polls
the job about twice a second and acts on the pure rules of
:mod:`vmmigration.core.convergence`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

from vmmigration.core import convergence, planner, recovery
from vmmigration.core.carry import rewritten
from vmmigration.core.convergence import Expectation
from vmmigration.core.plans import MovePlan
from vmmigration.core.errors import HostUnreachable, VirtError
from vmmigration.core.location import Location, in_post_copy
from vmmigration.core.model import (
    EffectiveMode,
    JobProgress,
    MigrationRequest,
    MigrationResult,
    Mode,
    PauseReason,
    Policy,
    PowerState,
    Update,
    display_uri,
)
from vmmigration.core.prechecks import Finding
from vmmigration.service import aftermath
from vmmigration.service.carrier import Carried, Carrier
from vmmigration.service.monitor import Detached, quietly, watch_job
from vmmigration.service import outcomes, planning
from vmmigration.service.forecasting import plan_move
from vmmigration.service.measure import Measurer
from vmmigration.service.outcomes import (
    LostContact,
    MigrationCancelled,
    MigrationError,
    MigrationTimedOut,
    NoJobToAdopt,
)
from vmmigration.service.planning import Plan, PrecheckFailed
from vmmigration.service.ports import Connect, LibvirtHost
from vmmigration.service.resume import Resumer

__all__ = ["Detached", "Engine", "LostContact", "MigrationCancelled", "MigrationError", "MigrationTimedOut", "NoJobToAdopt",
           "PrecheckFailed", "Update"]

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, *, connect: Connect, poll_interval_seconds: float = 0.5,
                 libvirt_timeout_seconds: float = 30.0,
                 post_copy_resume: recovery.ResumePolicy = recovery.ResumePolicy.AUTO,
                 resume_limits: recovery.ResumeLimits = recovery.ResumeLimits(),
                 sleep: Callable[[float], None] = time.sleep,
                 measurer: Measurer | None = None, carrier: Carrier | None = None) -> None:
        self.connect = connect
        self.carrier = carrier or Carrier(sleep=sleep)
        self.measurer = measurer or Measurer()
        self.poll_interval_seconds = poll_interval_seconds
        self.resumer = Resumer(connect=connect, timeout_seconds=libvirt_timeout_seconds,
                               policy=post_copy_resume, limits=resume_limits, sleep=sleep)
        # A host silent this long fails the call: a target that hangs mid-migration
        # ends in a failure that says where the VM runs, not a migration stuck forever.
        self.libvirt_timeout_seconds = libvirt_timeout_seconds

    def _post_copy_blocker(self, target: LibvirtHost) -> str | None:
        """Why a post-copy into ``target`` could not be resumed after a link failure."""
        try:
            return recovery.blocker(policy=self.resumer.policy, target=target.versions())
        except VirtError as error:
            return f"the target's libvirt version cannot be read ({error})"

    def _open(self, uri: str, *, role: str) -> LibvirtHost:
        try:
            return self.connect(uri, timeout_seconds=self.libvirt_timeout_seconds)
        except HostUnreachable as error:
            reason = "SourceUnreachable" if role == "source" else "TargetUnreachable"
            raise PrecheckFailed([Finding(reason, f"{role} {display_uri(uri)} is unreachable: "
                                                  f"{error}")]) from error

    @contextlib.contextmanager
    def _connected(self, request: MigrationRequest) -> Iterator[tuple[LibvirtHost, LibvirtHost]]:
        """Both hosts, or PrecheckFailed naming the one that cannot be reached."""
        with self._open(request.source_uri, role="source") as source, \
                self._open(request.target_uri, role="target") as target:
            yield source, target

    def _open_to_adopt(self, request: MigrationRequest, uri: str, *, role: str) -> LibvirtHost:
        """A host of the job, or NoJobToAdopt saying it cannot be read: a job that may
        run there is settled later, never failed for a host we cannot see."""
        try:
            return self._open(uri, role=role)
        except PrecheckFailed:
            raise NoJobToAdopt(aftermath.unread(request.domain, uri)) from None

    @contextlib.contextmanager
    def _connected_to_adopt(self, request: MigrationRequest) -> Iterator[tuple[LibvirtHost, LibvirtHost]]:
        with self._open_to_adopt(request, request.source_uri, role="source") as source, \
                self._open_to_adopt(request, request.target_uri, role="target") as target:
            yield source, target

    # ---- pre-checks -------------------------------------------------------

    def check(self, request: MigrationRequest, *, measure: bool = False) -> MovePlan:
        """Every pre-check, on its own, changing nothing, then the move's plan.

        The operator shows this as its Validating phase, so a refusal and the
        plan are visible before anything moves. migrate() checks again
        (cheaply) in case the world changed in between. ``measure`` measures
        the guest for an explicit mode too (a dry run wants the numbers).
        """
        with self._connected(request) as (source, target):
            plan = planning.plan(request, source=source, target=target)
            planned = plan_move(request, source=source, domain=plan.domain, measurer=self.measurer,
                                measure=measure, post_copy_blocker=self._post_copy_blocker(target))
            if plan.carry is not None:
                planned = dataclasses.replace(planned, volumes=tuple(plan.carry.as_fields()))
            try:
                _, runs = planning.resolved(request, plan, planned)
            except PrecheckFailed:
                runs = plan  # blocked: the plan says why; the streams are as asked
            return dataclasses.replace(planned, channels=runs.channels)

    # ---- the migration ----------------------------------------------------

    def migrate(
        self,
        request: MigrationRequest,
        *,
        on_update: Callable[[Update], None] | None = None,
        cancel: threading.Event | None = None,
        detach: threading.Event | None = None,
        planned: MovePlan | None = None,
        retune: Callable[[], Policy | None] | None = None,
    ) -> MigrationResult:
        """Run the move; ``planned`` is check()'s plan (made here when not given).
        ``retune()`` returns, once, a policy the user changed while the job runs."""
        with self._connected(request) as (source, target):
            plan = planning.plan(request, source=source, target=target)
            if planned is None:
                planned = plan_move(request, source=source, domain=plan.domain, measurer=self.measurer,
                                    post_copy_blocker=self._post_copy_blocker(target))
            resolved, plan = planning.resolved(request, plan, planned)
            chosen = planned

            def retuned() -> Policy | None:
                wanted = retune() if retune is not None else None
                # The strategy's own settings (the hybrid's suspend, …) hold over the user's.
                return chosen.execution(wanted).policy if wanted is not None else None

            with self.measurer.moving(plan.domain):
                return self._run(resolved, plan, source=source, target=target, on_update=on_update,
                                 cancel=cancel or threading.Event(), detach=detach,
                                 expectation=planned.expectation(request.policy), retune=retuned)

    def adopt(
        self,
        request: MigrationRequest,
        *,
        on_update: Callable[[Update], None] | None = None,
        cancel: threading.Event | None = None,
        detach: threading.Event | None = None,
    ) -> MigrationResult:
        """Take over the watch of a migration job already running, as after a restart.

        Never starts a migration. Escalates by ``request.policy`` as migrate()
        does, and ends the same way: a result if the VM ended on the target, a
        MigrationError (with where the VM runs) if not. Raises NoJobToAdopt when
        no job runs; :func:`aftermath.inspect` then tells what happened.
        """
        with self._connected_to_adopt(request) as (source, target):
            name = request.domain
            found = aftermath.inspect(domain=name, source=source, target=target)
            if (found.source is not None and found.location is Location.SPLIT_POST_COPY
                    and found.source.pause_reason is PauseReason.POST_COPY_FAILED):
                # A post-copy whose link failed before (or while) we were away.
                plan = Plan(mode=Mode.LIVE, flags=planner.MigrationFlags(
                    live=True, post_copy=True, peer_to_peer=request.policy.peer_to_peer),
                    domain=dataclasses.replace(found.source, state=PowerState.RUNNING,
                                               pause_reason=PauseReason.NONE))
                return self._resume_post_copy(
                    request, plan, VirtError("the post-copy link had failed"), source=source,
                    target=target, on_update=on_update, detach=detach,
                    started=time.monotonic(), last=found.job)
            if not found.job_active or found.source is None:
                raise NoJobToAdopt(found)
            before = found.source
            user_paused = before.pause_reason is PauseReason.USER
            # A source paused by the migration is as escalated as it gets
            # (a non-live copy or an earlier suspend: libvirt cannot tell which).
            mode = {
                PauseReason.POST_COPY: EffectiveMode.POST_COPY,
                PauseReason.MIGRATION: EffectiveMode.LIVE_SUSPENDED,
            }.get(before.pause_reason, EffectiveMode.LIVE)
            log.info("adopting the running migration of %s (%s)", name, mode.value)

            def wait_for_end(seconds: float) -> bool:
                time.sleep(seconds)
                try:
                    return source.job(name) is None
                except VirtError:
                    return True  # cannot watch a host we cannot reach; settle below

            started = time.monotonic()
            outcome = watch_job(
                source=source,
                name=name,
                policy=request.policy,
                mode=mode,
                watch=convergence.Watch(escalated=mode is not EffectiveMode.LIVE,
                                        in_post_copy=mode is EffectiveMode.POST_COPY),
                wait_for_end=wait_for_end,
                poll_interval_seconds=self.poll_interval_seconds,
                cancel=cancel or threading.Event(),
                on_update=on_update,
                detach=detach,
            )
            duration = (found.job.elapsed_seconds if found.job else 0.0) + time.monotonic() - started
            # The VM was running before the migration unless its user paused it.
            plan = Plan(mode=Mode.LIVE, flags=planner.MigrationFlags(), domain=before if user_paused
                        else dataclasses.replace(before, state=PowerState.RUNNING,
                                                 pause_reason=PauseReason.NONE))
            if aftermath.inspect(domain=name, source=source, target=target).location is Location.TARGET:
                return self._settle(request, plan, mode=outcome.mode, last=outcome.last,
                                    duration=duration, source=source, target=target,
                                    on_update=on_update)
            self._restore_after_failure(plan, source=source, target=target,
                                        suspended_by_us=not user_paused)
            raise outcomes.failure(VirtError("the job ended without moving the VM"), request,
                                outcome.abort_trigger, source=source, target=target,
                                last=outcome.last)

    def _run(
        self,
        request: MigrationRequest,
        plan: Plan,
        *,
        source: LibvirtHost,
        target: LibvirtHost,
        on_update: Callable[[Update], None] | None,
        cancel: threading.Event,
        detach: threading.Event | None = None,
        expectation: Expectation | None = None,
        retune: Callable[[], Policy | None] | None = None,
    ) -> MigrationResult:
        name = request.domain
        policy = request.policy
        mode = planner.initial_effective_mode(plan.mode)
        failure: list[BaseException] = []
        carried: Carried | None = None
        dest_xml = None
        if plan.carry is not None:
            # The disks first: libvirt moves only the definition of a shut-off domain.
            carried = self.carrier.carry(request, plan.carry, source=source, target=target,
                                         cancel=cancel, detach=detach, on_update=on_update)
            if plan.carry.rewrites:
                dest_xml = rewritten(source.domain_xml(name, inactive=True), plan.carry.rewrites)

        def worker() -> None:
            try:
                # The migrate call gets a connection of its own. libvirt's client
                # does not run keepalive for a connection on which one thread
                # waits for this call while another polls the job: when the host
                # falls silent, both calls would then hang for good. Alone, the
                # call is closed by keepalive like any other.
                with self.connect(request.source_uri,
                                  timeout_seconds=self.libvirt_timeout_seconds) as mover:
                    mover.migrate(
                        name,
                        target_uri=request.target_uri,
                        flags=plan.flags,
                        bandwidth_mib_per_s=policy.bandwidth_mib_per_s,
                        parallel_connections=policy.parallel_connections,
                        migration_address=request.migration_address,
                        dest_xml=dest_xml,
                    )
            except BaseException as error:  # handed to the monitor thread
                failure.append(error)

        created = self._precreate(plan, request, source=source, target=target)
        started = time.monotonic()
        thread = threading.Thread(target=worker, name=f"migrate-{name}", daemon=True)
        thread.start()
        log.info("migration of %s started: %s -> %s (%s)", name, display_uri(request.source_uri),
                 display_uri(request.target_uri), mode.value)

        def wait_for_end(seconds: float) -> bool:
            thread.join(seconds)
            return not thread.is_alive()

        outcome = watch_job(
            source=source,
            name=name,
            policy=policy,
            mode=mode,
            watch=convergence.initial_watch(live=plan.mode is Mode.LIVE, policy=policy),
            wait_for_end=wait_for_end,
            poll_interval_seconds=self.poll_interval_seconds,
            cancel=cancel,
            on_update=on_update,
            detach=detach,
            expectation=expectation,
            retune=retune,
        )
        mode, last = outcome.mode, outcome.last
        duration = time.monotonic() - started
        if failure:
            found = aftermath.inspect(domain=name, source=source, target=target)
            if (found.location is Location.SPLIT_POST_COPY
                    and display_uri(request.source_uri) not in found.unreachable):
                return self._resume_post_copy(request, plan, failure[0], source=source,
                                              target=target, on_update=on_update, detach=detach,
                                              started=started, last=last,
                                              post_copy_since=outcome.post_copy_since)
            self._restore_after_failure(plan, source=source, target=target,
                                        suspended_by_us=outcome.suspended_by_us)
            self._remove_images(created, name=name, target=target)
            if carried is not None:
                self.carrier.discard(request, carried, target=target)
            raise outcomes.failure(failure[0], request, outcome.abort_trigger, source=source,
                                target=target, last=last, found=found) from failure[0]
        result = self._settle(request, plan, mode=mode, last=last, duration=duration,
                              source=source, target=target, on_update=on_update,
                              post_copy_since=outcome.post_copy_since)
        if carried is not None:
            self.carrier.finish(request, carried, source=source, target=target)
            # The copies are the move's cost: libvirt's own job moved only a definition.
            result = dataclasses.replace(result, bytes_transferred=carried.sent_bytes,
                                         duration_seconds=result.duration_seconds + carried.seconds)
        self.measurer.learn(request, plan.domain, live=plan.mode is not Mode.NON_LIVE, result=result,
                            first_pass_bytes=outcome.first_pass_bytes)
        return result

    def _settle(self, request: MigrationRequest, plan: Plan, *, mode: EffectiveMode,
                last: JobProgress | None, duration: float, source: LibvirtHost, target: LibvirtHost,
                on_update: Callable[[Update], None] | None,
                post_copy_since: float | None = None) -> MigrationResult:
        """The job succeeded: make sure the VM runs on the target and read the final statistics."""
        name = request.domain

        self._ensure_running_on_target(plan, target=target)
        final = target.completed_job(name)
        if final is None and not request.persistence.undefine_on_source:
            final = source.completed_job(name)
        if on_update is not None and final is not None:
            on_update(Update(domain=name, mode=mode, progress=final, percent=100.0,
                             eta_seconds=0.0, note="completed"))
        return MigrationResult(
            domain=name,
            mode=mode,
            duration_seconds=duration,
            downtime_ms=final.downtime_ms if final else None,
            # After post-copy libvirt keeps no completed statistics on the
            # target; the last sample from the source is a lower bound.
            bytes_transferred=final.data_processed if final else (last.data_processed if last else 0),
            final=final,
            channels=plan.channels,
            degraded_seconds=(None if post_copy_since is None
                              else round(time.monotonic() - post_copy_since, 3)),
        )

    def _resume_post_copy(self, request: MigrationRequest, plan: Plan, error: BaseException, *,
                          source: LibvirtHost, target: LibvirtHost,
                          on_update: Callable[[Update], None] | None,
                          detach: threading.Event | None, started: float,
                          last: JobProgress | None,
                          post_copy_since: float | None = None) -> MigrationResult:
        """The post-copy link failed, the VM paused on both hosts: resume it (service.resume)."""
        self.resumer.resume(request, flags=plan.flags, error=error, source=source, target=target,
                            on_update=on_update, detach=detach, last=last)
        return self._settle(request, plan, mode=EffectiveMode.POST_COPY, last=last,
                            duration=time.monotonic() - started, source=source, target=target,
                            on_update=on_update, post_copy_since=post_copy_since)

    # ---- helpers ----------------------------------------------------------

    def _precreate(self, plan: Plan, request: MigrationRequest, *, source: LibvirtHost,
                   target: LibvirtHost) -> list[str]:
        created: list[str] = []
        try:
            for image in plan.precreate:
                target.create_image(image, capacity_bytes=source.disk_capacity(request.domain, image.path))
                created.append(image.path)
        except VirtError as error:
            self._remove_images(created, name=request.domain, target=target)
            raise PrecheckFailed([Finding("TargetStorage", f"cannot create the disks on "
                                          f"{display_uri(target.uri)}: {error}")]) from error
        return created

    @staticmethod
    def _remove_images(paths: list[str], *, name: str, target: LibvirtHost) -> None:
        """Remove copies we created for a migration that did not happen: they hold nothing."""
        if not paths or target.find(name) is not None:
            return
        for path in paths:
            quietly(lambda: target.delete_image(path))

    @staticmethod
    def _restore_after_failure(
        plan: Plan, *, source: LibvirtHost, target: LibvirtHost, suspended_by_us: bool
    ) -> None:
        """A VM is never left paused: resume the source if we (or the copy) paused it."""
        was_running = plan.domain.state is PowerState.RUNNING
        try:
            now = source.find(plan.domain.name)
            on_target = target.find(plan.domain.name)
        except VirtError:
            return
        target_runs = on_target is not None and on_target.state is PowerState.RUNNING
        if (
            now is not None
            and now.state is PowerState.PAUSED
            and not in_post_copy(now)
            and (suspended_by_us or was_running)
            and not target_runs
        ):
            log.info("resuming %s on the source after the failed migration", plan.domain.name)
            quietly(lambda: source.resume(plan.domain.name))

    @staticmethod
    def _ensure_running_on_target(plan: Plan, *, target: LibvirtHost) -> None:
        if plan.domain.state is not PowerState.RUNNING:
            return
        now = target.find(plan.domain.name)
        if now is not None and now.state is PowerState.PAUSED and not in_post_copy(now):
            log.warning("%s arrived paused on the target; resuming it", plan.domain.name)
            quietly(lambda: target.resume(plan.domain.name))
