"""Runs one migration: pre-checks, start, poll → decide → act, final statistics.

libvirt's migrate call blocks until the job ends (forever, for a live
migration that cannot converge), so it runs in a worker thread while this
thread polls the job about twice a second, asks the pure rules in
:mod:`vmmigration.convergence` what to do, and does it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from vmmigration import convergence, planner, prechecks
from vmmigration.convergence import Decision, Trigger
from vmmigration.model import (
    DiskImage,
    DomainSummary,
    EffectiveMode,
    JobProgress,
    MigrationRequest,
    MigrationResult,
    Mode,
    PauseReason,
    PowerState,
    Storage,
)
from vmmigration.placement import Location
from vmmigration.prechecks import Finding
from vmmigration.virt import aftermath
from vmmigration.virt.libvirt_host import (
    Host,
    HostUnreachable,
    MigrationAborted,
    VirtError,
)

log = logging.getLogger(__name__)


class PrecheckFailed(Exception):
    """Nothing was changed: the migration was refused before it started."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("; ".join(f"{f.reason}: {f.message}" for f in findings))
        self.findings = findings

    @property
    def reasons(self) -> list[str]:
        return [f.reason for f in self.findings]


class MigrationError(Exception):
    """The migration started and did not complete. ``location`` says where the VM runs now."""

    reason = "MigrationFailed"

    def __init__(self, message: str, *, location: Location, last: JobProgress | None) -> None:
        super().__init__(message)
        self.location = location
        self.last = last


class MigrationCancelled(MigrationError):
    reason = "Aborted"


class MigrationTimedOut(MigrationError):
    reason = "TimedOut"


@dataclasses.dataclass(frozen=True)
class Update:
    """One report from the monitor, about twice a second."""

    domain: str
    mode: EffectiveMode
    progress: JobProgress | None
    percent: float
    eta_seconds: float | None
    note: str | None = None  # an escalation or abort, once, when it happens


@dataclasses.dataclass(frozen=True)
class Plan:
    mode: Mode
    flags: planner.MigrationFlags
    domain: DomainSummary
    precreate: tuple[DiskImage, ...] = ()


def _connect(uri: str, *, role: str) -> Host:
    try:
        return Host(uri)
    except HostUnreachable as error:
        reason = "SourceUnreachable" if role == "source" else "TargetUnreachable"
        raise PrecheckFailed([Finding(reason, f"{role} {uri} is unreachable: {error}")]) from error


class Engine:
    def __init__(self, *, poll_interval_seconds: float = 0.5) -> None:
        self.poll_interval_seconds = poll_interval_seconds

    # ---- pre-checks -------------------------------------------------------

    def plan(self, request: MigrationRequest, *, source: Host, target: Host) -> Plan:
        """Every pre-check, in order; raises PrecheckFailed and changes nothing."""
        domain = source.find(request.domain)
        if domain is None:
            raise PrecheckFailed(
                [Finding("DomainNotFound", f"domain {request.domain} is not defined on {source.uri}")]
            )
        try:
            mode = planner.choose_mode(requested=request.mode, domain=domain)
            flags = planner.migration_flags(
                mode=mode,
                domain=domain,
                policy=request.policy,
                storage=request.storage,
                persistence=request.persistence,
            )
        except planner.PlanError as error:
            raise PrecheckFailed([Finding(error.reason, str(error))]) from error
        disks = source.disks(request.domain)
        invisible = tuple(d for d in disks if not target.disk_visible(d.path))
        facts_source = prechecks.SourceFacts(
            host=source.uri, domain=domain, versions=source.versions(), disks=disks,
            host_uuid=source.host_uuid(),
        )
        facts_target = prechecks.TargetFacts(
            host=target.uri,
            versions=target.versions(),
            free_memory_bytes=target.free_memory_bytes(),
            domains=target.domains(),
            cpu=target.compare_cpu(domain_xml=source.domain_xml(request.domain)),
            invisible_disks=tuple(d.path for d in invisible),
            host_uuid=target.host_uuid(),
            uncreatable_disks=tuple(d.path for d in invisible if not target.has_pool_for(d.path)),
            invisible_backing=tuple(
                d.backing for d in invisible if d.backing and not target.disk_visible(d.backing)
            ),
        )
        findings = list(
            prechecks.evaluate(source=facts_source, target=facts_target, storage=request.storage)
        )
        if findings:
            raise PrecheckFailed(findings)
        # libvirt creates the copies of non-shared disks for CopyAll, but an
        # incremental copy needs the top image there already, on its backing.
        precreate = invisible if request.storage is Storage.COPY_INCREMENTAL else ()
        return Plan(mode=mode, flags=flags, domain=domain, precreate=precreate)

    # ---- the migration ----------------------------------------------------

    def migrate(
        self,
        request: MigrationRequest,
        *,
        on_update: Callable[[Update], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> MigrationResult:
        source = _connect(request.source_uri, role="source")
        try:
            target = _connect(request.target_uri, role="target")
        except PrecheckFailed:
            source.close()
            raise
        with source, target:
            plan = self.plan(request, source=source, target=target)
            return self._run(request, plan, source=source, target=target, on_update=on_update,
                             cancel=cancel or threading.Event())

    def _run(
        self,
        request: MigrationRequest,
        plan: Plan,
        *,
        source: Host,
        target: Host,
        on_update: Callable[[Update], None] | None,
        cancel: threading.Event,
    ) -> MigrationResult:
        name = request.domain
        policy = request.policy
        mode = planner.initial_effective_mode(plan.mode)
        failure: list[BaseException] = []

        def worker() -> None:
            try:
                source.migrate(
                    name,
                    target_uri=request.target_uri,
                    flags=plan.flags,
                    bandwidth_mib_per_s=policy.bandwidth_mib_per_s,
                    parallel_connections=policy.parallel_connections,
                )
            except BaseException as error:  # handed to the monitor thread
                failure.append(error)

        created = self._precreate(plan, request, source=source, target=target)
        started = time.monotonic()
        thread = threading.Thread(target=worker, name=f"migrate-{name}", daemon=True)
        thread.start()
        log.info("migration of %s started: %s -> %s (%s)", name, request.source_uri,
                 request.target_uri, mode.value)

        watch = convergence.initial_watch(live=plan.mode is Mode.LIVE, policy=policy)
        suspended_by_us = False
        downtime_set = False
        abort_trigger: Trigger | None = None
        last: JobProgress | None = None
        while thread.is_alive():
            thread.join(self.poll_interval_seconds)
            if not thread.is_alive():
                break
            # poll (a lost connection shows up in the migrate call too; keep watching until it does)
            try:
                progress = source.job(name)
            except VirtError as error:
                log.warning("cannot read the job of %s: %s", name, error)
                progress = None
            elapsed = time.monotonic() - started
            sample = progress or JobProgress(elapsed_seconds=elapsed)
            sample = dataclasses.replace(sample, elapsed_seconds=elapsed)
            if progress is not None:
                last = sample
                if policy.max_downtime_ms and not downtime_set:
                    downtime_set = self._quietly(
                        lambda: source.set_max_downtime(name, milliseconds=policy.max_downtime_ms)
                    )
            # decide
            watch = convergence.observe(watch, sample)
            verdict = convergence.decide(
                policy=policy, watch=watch, progress=sample, abort_requested=cancel.is_set()
            )
            # act
            note = None
            if verdict.decision is Decision.SUSPEND_SOURCE:
                if self._quietly(lambda: source.suspend(name)):
                    suspended_by_us = True
                    mode = EffectiveMode.LIVE_SUSPENDED
                    note = f"{verdict.trigger.value}: suspended the source to finish the copy"
                watch = dataclasses.replace(watch, escalated=True)
            elif verdict.decision is Decision.START_POST_COPY:
                if self._quietly(lambda: source.start_post_copy(name)):
                    mode = EffectiveMode.POST_COPY
                    note = f"{verdict.trigger.value}: switched to post-copy"
                    watch = dataclasses.replace(watch, escalated=True, in_post_copy=True)
                else:
                    watch = dataclasses.replace(watch, escalated=True)
            elif verdict.decision is Decision.ABORT and abort_trigger is None:
                # Before the job exists there is nothing to abort yet: try
                # again at the next poll rather than forget the request.
                if self._quietly(lambda: source.abort_job(name)):
                    abort_trigger = verdict.trigger
                    note = f"{verdict.trigger.value}: aborting"
            if note:
                log.info("migration of %s: %s", name, note)
            if on_update is not None:
                on_update(Update(
                    domain=name,
                    mode=mode,
                    progress=sample if progress is not None else None,
                    percent=convergence.percent_done(sample),
                    eta_seconds=convergence.eta_seconds(
                        sample, guest_paused=mode in (EffectiveMode.NON_LIVE, EffectiveMode.LIVE_SUSPENDED)
                    ),
                    note=note,
                ))

        duration = time.monotonic() - started
        if failure:
            self._restore_after_failure(plan, source=source, target=target,
                                        suspended_by_us=suspended_by_us)
            self._remove_images(created, name=name, target=target)
            raise self._failure(failure[0], request, abort_trigger, source=source,
                                target=target, last=last) from failure[0]

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
        )

    # ---- helpers ----------------------------------------------------------

    def _precreate(self, plan: Plan, request: MigrationRequest, *, source: Host,
                   target: Host) -> list[str]:
        created: list[str] = []
        try:
            for image in plan.precreate:
                target.create_image(image, capacity_bytes=source.disk_capacity(request.domain, image.path))
                created.append(image.path)
        except VirtError as error:
            self._remove_images(created, name=request.domain, target=target)
            raise PrecheckFailed([Finding("TargetStorage", f"cannot create the disks on "
                                          f"{target.uri}: {error}")]) from error
        return created

    @staticmethod
    def _remove_images(paths: list[str], *, name: str, target: Host) -> None:
        """Remove copies we created for a migration that did not happen: they hold nothing."""
        if not paths or target.find(name) is not None:
            return
        for path in paths:
            Engine._quietly(lambda: target.delete_image(path))

    @staticmethod
    def _quietly(action: Callable[[], None]) -> bool:
        """Run an escalation; a job that just ended makes it moot, not an error."""
        try:
            action()
            return True
        except VirtError as error:
            log.info("not applied: %s", error)
            return False

    @staticmethod
    def _restore_after_failure(
        plan: Plan, *, source: Host, target: Host, suspended_by_us: bool
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
            and now.pause_reason not in (PauseReason.POST_COPY, PauseReason.POST_COPY_FAILED)
            and (suspended_by_us or was_running)
            and not target_runs
        ):
            log.info("resuming %s on the source after the failed migration", plan.domain.name)
            Engine._quietly(lambda: source.resume(plan.domain.name))

    @staticmethod
    def _ensure_running_on_target(plan: Plan, *, target: Host) -> None:
        if plan.domain.state is not PowerState.RUNNING:
            return
        now = target.find(plan.domain.name)
        if now is not None and now.state is PowerState.PAUSED and now.pause_reason not in (
            PauseReason.POST_COPY, PauseReason.POST_COPY_FAILED
        ):
            log.warning("%s arrived paused on the target; resuming it", plan.domain.name)
            Engine._quietly(lambda: target.resume(plan.domain.name))

    @staticmethod
    def _failure(
        error: BaseException,
        request: MigrationRequest,
        trigger: Trigger | None,
        *,
        source: Host,
        target: Host,
        last: JobProgress | None,
    ) -> MigrationError:
        where = aftermath.inspect(domain=request.domain, source=source, target=target).location
        if isinstance(error, MigrationAborted) or trigger is not None:
            if trigger is Trigger.REQUESTED:
                return MigrationCancelled(
                    f"migration of {request.domain} aborted on request; the VM runs on the "
                    f"{where.value.lower()}", location=where, last=last)
            why = trigger.value if trigger else "Aborted"
            return MigrationTimedOut(
                f"migration of {request.domain} did not converge ({why}) and was aborted by "
                f"policy; the VM runs on the {where.value.lower()}", location=where, last=last)
        hint = ""
        if where is Location.SPLIT_POST_COPY:
            hint = (" The VM is split between the hosts in post-copy; recover it with a "
                    "post-copy resume (virsh migrate --postcopy-resume).")
        return MigrationError(
            f"migration of {request.domain} failed: {error}; the VM runs on the "
            f"{where.value.lower()}.{hint}", location=where, last=last)
