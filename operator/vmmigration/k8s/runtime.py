"""The operator's state and its per-VMMigration loop: poll → decide → act.

kopf runs one :meth:`Runtime.serve` coroutine (a daemon) per VMMigration. Each
pass reads the live spec, what its status remembers and the latest probe of
every Hypervisor, asks the pure :func:`vmmigration.reconcile.decide` what to
do, and does it. A migration runs inside the pass, in a worker thread, while
the pass writes progress at a bounded rate and watches for an abort.

Everything shared between the loops (probes, claims, migrations in flight)
lives here, in one process; kopf peering makes sure only one replica acts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from vmmigration import metrics as _metrics
from vmmigration import reconcile, status
from vmmigration.config import Settings
from vmmigration.desired import Desired, HypervisorSpec, Phase, SpecError, parse_vmmigration
from vmmigration.k8s.credentials import CredentialsError, materialise
from vmmigration.k8s.kube import Kube
from vmmigration.model import (
    EffectiveMode,
    HostReport,
    MigrationRequest,
    MigrationResult,
    display_uri,
)
from vmmigration.placement import Location
from vmmigration.reconcile import Action, Memory
from vmmigration.scheduling import Claim, HypervisorView, InFlight, admit
from vmmigration.virt import aftermath, inventory
from vmmigration.virt.engine import (
    Engine,
    MigrationCancelled,
    MigrationError,
    MigrationTimedOut,
    NoJobToAdopt,
    PrecheckFailed,
    Update,
)
from vmmigration.virt.libvirt_host import VirtError

log = logging.getLogger(__name__)


# Blocks that a skew between two hosts' probes can fake for a moment.
SKEW_PRONE = frozenset({"RunningTwice", "DefinedTwice", "DomainNotFound"})


class EventPoster(Protocol):
    def __call__(self, body: Any, *, type: str, reason: str, message: str) -> None: ...


class Stopped(Protocol):
    """kopf's daemon stop flag, as far as the runtime needs it."""

    def __bool__(self) -> bool: ...

    def is_deleted(self) -> bool: ...

    async def until_stopped(self) -> None: ...


@dataclasses.dataclass
class _Running:
    """One migration this process is driving or watching."""

    cancel: threading.Event
    detach: threading.Event = dataclasses.field(default_factory=threading.Event)
    latest: Update | None = None


def _memory(previous: Mapping[str, Any]) -> Memory:
    # The status is read back as stored; someone may have edited it by hand, so
    # a field of the wrong shape counts as absent instead of crashing the loop.
    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    attempt = previous.get("attempt")
    attempt = attempt if isinstance(attempt, Mapping) else {}
    try:
        phase = Phase(previous["phase"]) if previous.get("phase") else None
    except (ValueError, TypeError):
        phase = None
    conditions = previous.get("conditions")
    drifted = any(isinstance(c, Mapping) and c.get("type") == "Drifted" and c.get("status") == "True"
                  for c in (conditions if isinstance(conditions, list) else ()))
    attempts = previous.get("attempts")
    return Memory(
        phase=phase,
        attempt_source=text(attempt.get("source")),
        attempt_target=text(attempt.get("target")),
        chosen_target=text(previous.get("targetHypervisor")),
        next_attempt_at=status.parse_timestamp(previous.get("nextAttemptTime")),
        attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool)
        and attempts >= 0 else 0,
        drifted=drifted,
    )


class Runtime:
    def __init__(self, *, settings: Settings, kube: Kube, post_event: EventPoster,
                 engine: Engine | None = None, clock: Callable[[], float] = time.time,
                 prober: Callable[[str], HostReport] | None = None,
                 metrics: _metrics.Metrics | None = None) -> None:
        self.settings = settings
        # A registry of its own unless given one: two runtimes in one test must not clash.
        self.metrics = metrics or _metrics.Metrics.isolated()
        # Kept connections; a probe thread gives up on a silent host by the probe
        # timeout too, not only the runtime waiting for it.
        self.prober = prober or inventory.Prober(
            timeout_seconds=min(settings.probe_timeout_seconds, settings.libvirt_timeout_seconds))
        self.kube = kube
        self.post_event = post_event
        self.engine = engine or Engine(poll_interval_seconds=settings.poll_interval_seconds,
                                       libvirt_timeout_seconds=settings.libvirt_timeout_seconds)
        self.clock = clock
        self.hypervisors: dict[str, HypervisorView] = {}
        self.claims: dict[str, Claim] = {}
        # The same claims by domain: each pass needs only its own domain's rivals,
        # and scanning all claims made every pass O(VMMigrations) (a quarter of
        # the operator's CPU at 1,000 of them).
        self._claims_by_domain: dict[str, dict[str, Claim]] = {}
        self.in_flight: dict[str, InFlight] = {}
        self.running: dict[str, _Running] = {}
        self._wakers: dict[str, asyncio.Event] = {}
        self._statuses: dict[str, dict[str, Any]] = {}
        self._credentials: dict[str, tuple[float, str]] = {}
        # Probes run in their own threads so a hung libvirt cannot starve the shared
        # pool; at most one probe per host is outstanding (see _probe_bounded).
        self._probe_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=64, thread_name_prefix="probe")
        self._probing: dict[str, tuple[float, concurrent.futures.Future[HostReport]]] = {}
        # VMMigrations told to wait for a free migration slot (ConcurrencyLimit).
        self._queued: set[str] = set()
        # key -> host -> (until, why): targets that refused a VM at a pre-check.
        self._avoid: dict[str, dict[str, tuple[float, str]]] = {}

    # ---- what kopf tells us --------------------------------------------------

    def hypervisor_seen(self, spec: HypervisorSpec) -> None:
        before = self.hypervisors.get(spec.name)
        self.hypervisors[spec.name] = HypervisorView(spec=spec,
                                                     report=before.report if before else None)
        if before is None or before.spec != spec:
            # Maintenance, labels or limits changed: any placement may change.
            self._credentials.pop(spec.name, None)
            self.wake_all()

    def hypervisor_gone(self, name: str) -> None:
        self.metrics.hypervisor_gone(name)
        if self.hypervisors.pop(name, None) is not None:
            self.wake_all()

    def claim(self, *, key: str, domain: str | None, created: str) -> None:
        self._unindex(key)
        if domain is None:
            self.claims.pop(key, None)
        else:
            claim = self.claims[key] = Claim(key=key, domain=domain, created=created)
            self._claims_by_domain.setdefault(domain, {})[key] = claim
        self.wake(key)

    def _unindex(self, key: str) -> None:
        old = self.claims.get(key)
        if old is not None:
            same = self._claims_by_domain.get(old.domain, {})
            same.pop(key, None)
            if not same:
                self._claims_by_domain.pop(old.domain, None)

    def release(self, key: str) -> None:
        self._unindex(key)
        gone = self.claims.pop(key, None)
        self._statuses.pop(key, None)
        self._avoid.pop(key, None)
        self._queued.discard(key)
        self.metrics.forget(key)
        if gone is not None:
            # A younger VMMigration blocked by this one may proceed now.
            self.wake_domain(gone.domain)

    def wake(self, key: str) -> None:
        if key in self._wakers:
            self._wakers[key].set()

    def wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()

    def wake_queued(self) -> None:
        """A migration slot came free: only the loops waiting for one need to decide again
        (with a thousand VMMigrations, waking every loop made each slot turnover slow)."""
        for key in tuple(self._queued):
            self.wake(key)

    def wake_domain(self, domain: str) -> None:
        for key in list(self._claims_by_domain.get(domain, ())):
            self.wake(key)

    # ---- hypervisors -----------------------------------------------------------

    async def connection_uri(self, name: str) -> str:
        """The Hypervisor's URI, with its credentials written to files when it has any."""
        view = self.hypervisors[name]
        ref = view.spec.credentials
        if ref is None:
            return view.spec.uri
        cached = self._credentials.get(name)
        if cached and self.clock() - cached[0] < 60:
            return cached[1]
        namespace = ref.namespace or self.settings.namespace
        secret = await asyncio.to_thread(self.kube.read_secret, namespace=namespace, name=ref.name)
        uri = materialise(uri=view.spec.uri, secret=secret,
                          directory=self.settings.credentials_dir / name)
        self._credentials[name] = (self.clock(), uri)
        return uri

    async def probe(self, name: str) -> HostReport | None:
        view = self.hypervisors.get(name)
        if view is None:
            return None
        try:
            uri = await self.connection_uri(name)
        except CredentialsError as error:  # a missing Secret is a report, not a crash
            report = HostReport(reachable=False, probed_at=self.clock(), error=str(error)[:300])
        except Exception as error:  # the API server itself failing: report, retry next probe
            report = HostReport(reachable=False, probed_at=self.clock(),
                                error=f"credentials: {type(error).__name__}"[:300])
        else:
            report = await self._probe_bounded(name, uri)
        current = self.hypervisors.get(name)
        if current is None:
            return report
        self.metrics.probed(name, report)
        self.hypervisors[name] = dataclasses.replace(current, report=report)
        before = {d.name: d for d in view.report.domains} if view.report else {}
        after = {d.name: d for d in report.domains}
        # Wake only the VMMigrations whose domain changed on this host.
        for domain in set(before) ^ set(after) | {d for d in before if d in after and before[d] != after[d]}:
            self.wake_domain(domain)
        if view.report is None or view.report.reachable != report.reachable:
            self.wake_all()
        return report

    async def _probe_bounded(self, name: str, uri: str) -> HostReport:
        """Probe in a thread of its own, and stop waiting after the probe timeout.

        libvirt's client has no connect timeout: a host that accepts the TCP
        connection and never answers (a hung or SIGSTOPped libvirtd, a wrong
        port) blocks virConnectOpen forever. Waiting on it would freeze this
        Hypervisor's status as it last was, and enough such threads would starve
        the shared pool that status writes run in. So a late probe is reported
        as unreachable, and a host gets no second probe while its first still hangs.

        A probe that is merely still running (the timer's, when a migration
        ends and asks for a re-probe) is waited for, then followed by a fresh
        one: it may have read the host before the move. Reporting the host
        unreachable instead made every VMMigration bound for it Blocked for a
        moment and woke them all, dozens of times in a burst of 50 moves.
        """
        pending = self._probing.get(name)
        if pending is not None and not pending[1].done():
            began, running = pending
            left = self.settings.probe_timeout_seconds - (self.clock() - began)
            with contextlib.suppress(asyncio.TimeoutError):
                if left > 0:
                    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), timeout=left)
            if not running.done():
                return HostReport(reachable=False, probed_at=self.clock(), error=(
                    f"libvirt at {display_uri(uri)} has not answered for "
                    f"{self.clock() - began:.0f} s"))
        future = self._probe_pool.submit(self.prober, uri)
        self._probing[name] = (self.clock(), future)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          timeout=self.settings.probe_timeout_seconds)
        except asyncio.TimeoutError:
            return HostReport(reachable=False, probed_at=self.clock(), error=(
                f"libvirt at {display_uri(uri)} did not answer within "
                f"{self.settings.probe_timeout_seconds:g} s"))

    def load(self, name: str) -> tuple[int, int]:
        inbound = sum(1 for m in self.in_flight.values() if m.target == name)
        outbound = sum(1 for m in self.in_flight.values() if m.source == name)
        return inbound, outbound

    # ---- one VMMigration ------------------------------------------------------

    async def serve(self, *, key: str, body: Any, stopped: Stopped) -> None:
        """The daemon: decide and act until the resource is deleted or the operator stops."""
        waker = self._wakers.setdefault(key, asyncio.Event())
        try:
            while not stopped:
                waker.clear()
                try:
                    idle = await self.pass_once(key=key, body=body, stopped=stopped)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.metrics.reconcile_errors.inc()
                    log.exception("reconciling %s failed; retrying", key)
                    idle = False
                timeout = None if idle else self.settings.resync_interval_seconds
                await _wait_for(waker, stopped, timeout=timeout)
        finally:
            self._wakers.pop(key, None)

    def _previous(self, key: str, body: Any) -> dict[str, Any]:
        if key not in self._statuses:
            self._statuses[key] = dict(body.get("status") or {})
        return self._statuses[key]

    async def write(self, key: str, body: Any, new: dict[str, Any]) -> None:
        previous = self._previous(key, body)
        patch = status.merge_patch(previous, new)
        if not patch:
            return
        namespace, name = key.split("/", 1)
        await asyncio.to_thread(self.kube.patch_vmmigration_status, namespace=namespace,
                                name=name, patch=patch)
        self.metrics.status_patches.labels(resource="vmmigrations").inc()
        self._statuses[key] = new

    async def _set(self, key: str, body: Any, *, phase: Phase,
                   wanted: Mapping[str, tuple[bool, str, str]],
                   fields: Mapping[str, Any] | None = None) -> None:
        new = status.compose(previous=self._previous(key, body), phase=phase,
                             generation=int(body["metadata"].get("generation") or 0),
                             now=self.clock(), wanted=wanted, fields=fields)
        await self.write(key, body, new)

    async def pass_once(self, *, key: str, body: Any, stopped: Stopped) -> bool:
        """One decision and its action. True when there is nothing left to watch."""
        previous = self._previous(key, body)
        try:
            desired = parse_vmmigration(body.get("spec"))
        except SpecError as error:
            await self._set(key, body, phase=Phase.FAILED, wanted={
                "Blocked": (True, "InvalidSpec", str(error)),
                "Ready": (False, "InvalidSpec", str(error))})
            return True  # wait for the spec to change
        now = self.clock()
        avoid = tuple((host, why) for host, (until, why) in self._avoid.get(key, {}).items()
                      if until > now)
        memory = dataclasses.replace(_memory(previous), avoid=avoid)

        def decide() -> Action:
            return reconcile.decide(
                key=key, created=str(body["metadata"].get("creationTimestamp") or ""),
                desired=desired, memory=memory, hypervisors=self.hypervisors,
                claims=list(self._claims_by_domain.get(desired.domain, {}).values()),
                in_flight=list(self.in_flight.values()),
                now=self.clock())

        action = decide()
        if isinstance(action, reconcile.Block) and action.reason in SKEW_PRONE:
            # Each host is probed on its own clock, so a VM that just moved can
            # look as if it ran twice, or nowhere. Look at every host again, at
            # one moment, before believing it.
            await self._reprobe(*self.hypervisors)
            action = decide()
        log.debug("%s: %s -> %s", key, memory, action)
        return await self.act(action, key=key, body=body, desired=desired, memory=memory,
                              stopped=stopped)

    async def act(self, action: Action, *, key: str, body: Any, desired: Desired,
                  memory: Memory, stopped: Stopped) -> bool:
        match action:
            case reconcile.Idle():
                return True
            case reconcile.Placed(current=current):
                self.metrics.set_drift(key, drifted=False)
                self.metrics.set_failed(key, failed=False)
                await self._set(key, body, phase=Phase.PLACED, wanted={
                    "Ready": (True, "Placed", f"domain {desired.domain} runs on {current}")},
                    fields={"currentHypervisor": current, "targetHypervisor": current,
                            "attempt": None, "nextAttemptTime": None})
            case reconcile.Block(reason=reason, message=message, current=current):
                blocked = {c.get("type"): c for c in self._previous(key, body).get("conditions") or ()}
                old = blocked.get("Blocked") or {}
                if old.get("status") != "True" or old.get("reason") != reason:
                    self.post_event(body, type="Warning", reason="Blocked", message=message)
                # A block does not erase what the status remembers (placed, failed).
                phase = memory.phase if memory.phase in (Phase.FAILED, Phase.PLACED) else Phase.PENDING
                await self._set(key, body, phase=phase, wanted={
                    "Blocked": (True, reason, message), "Ready": (False, reason, message)},
                    fields={"currentHypervisor": current} if current else None)
            case reconcile.Wait(reason=reason, message=message):
                phase = memory.phase if memory.phase in (Phase.FAILED, Phase.PLACED) else Phase.PENDING
                wanted = {"Ready": (False, reason, message)}
                # Waiting changes nothing about why we were blocked or drifted.
                for kept in ("Blocked", "Drifted"):
                    old = next((c for c in self._previous(key, body).get("conditions") or ()
                                if c.get("type") == kept and c.get("status") == "True"), None)
                    if old is not None:
                        wanted[kept] = (True, old.get("reason", ""), old.get("message", ""))
                await self._set(key, body, phase=phase or Phase.PENDING, wanted=wanted)
            case reconcile.Abort(current=current):
                self.metrics.set_queued(key, queued=False)
                self.metrics.set_failed(key, failed=False)
                await self._set(key, body, phase=Phase.ABORTED, wanted={
                    "Ready": (False, "Aborted", f"spec.abort is set; domain {desired.domain} "
                                                f"stays on {current}")},
                    fields={"currentHypervisor": current, "attempt": None})
                return True
            case reconcile.ReportDrift(current=current, target=target):
                message = f"domain {desired.domain} runs on {current}, not on {target}; driftAction is Report"
                self.metrics.set_drift(key, drifted=True)
                if not memory.drifted:
                    self.post_event(body, type="Warning", reason="DriftDetected", message=message)
                await self._set(key, body, phase=Phase.PLACED, wanted={
                    "Drifted": (True, "NotOnTarget", message), "Ready": (False, "Drifted", message)},
                    fields={"currentHypervisor": current})
            case reconcile.Migrate(source=source, target=target, drift=drift):
                await self._migrate(key=key, body=body, desired=desired, memory=memory,
                                    source=source, target=target, drift=drift, stopped=stopped)
            case reconcile.Recover(source=source, target=target):
                await self._recover(key=key, body=body, desired=desired, memory=memory,
                                    source=source, target=target, stopped=stopped)
        return False

    # ---- migrations ---------------------------------------------------------

    async def _request(self, desired: Desired, *, source: str, target: str) -> MigrationRequest:
        return MigrationRequest(
            domain=desired.domain,
            source_uri=await self.connection_uri(source),
            target_uri=await self.connection_uri(target),
            mode=desired.mode,
            policy=desired.policy,
            storage=desired.storage,
            persistence=desired.persistence,
            migration_address=self.hypervisors[target].spec.migration_address,
        )

    async def _migrate(self, *, key: str, body: Any, desired: Desired, memory: Memory,
                       source: str, target: str, drift: bool, stopped: Stopped) -> None:
        why = admit(source=source, target=target, in_flight=list(self.in_flight.values()),
                    hypervisors=self.hypervisors,
                    cluster_limit=self.settings.max_concurrent_migrations)
        if why is not None:
            self.metrics.set_queued(key, queued=True)
            self._queued.add(key)
            await self._set(key, body, phase=Phase.PENDING, wanted={
                "Queued": (True, "ConcurrencyLimit", why), "Ready": (False, "Queued", why)},
                fields={"sourceHypervisor": source, "targetHypervisor": target})
            return
        # Claimed before the first await, so no other loop can take the same slot.
        self.in_flight[key] = InFlight(key=key, source=source, target=target)
        self.metrics.set_queued(key, queued=False)
        self._queued.discard(key)
        try:
            if drift:
                self.metrics.set_drift(key, drifted=True)
                self.post_event(body, type="Warning", reason="DriftDetected",
                                message=f"domain {desired.domain} runs on {source}, not on "
                                        f"{target}; moving it back")
            attempts = 1 if memory.phase is Phase.PLACED or memory.drifted else memory.attempts + 1
            checking = f"checking that {desired.domain} can move from {source} to {target}"
            await self._set(key, body, phase=Phase.VALIDATING, wanted={
                "Progressing": (True, "Validating", checking), "Ready": (False, "Validating", checking)},
                fields={"sourceHypervisor": source, "targetHypervisor": target,
                        "currentHypervisor": source})
            try:
                request = await self._request(desired, source=source, target=target)
                await asyncio.to_thread(self.engine.check, request)
            except PrecheckFailed as refused:
                if desired.selector is not None:
                    # Let the selector try another host before this one again.
                    self._avoid.setdefault(key, {})[target] = (
                        self.clock() + self.settings.retry_max_seconds, refused.findings[0].reason)
                await self._failed(key, body, desired=desired, attempts=attempts - 1, source=source,
                                   target=target, reason=refused.findings[0].reason,
                                   message=str(refused), current=source, blocked=True)
                return
            except Exception as error:  # credentials, a host gone: a failure to report and retry
                if isinstance(error, VirtError):
                    self.metrics.libvirt_error("check")
                await self._failed(key, body, desired=desired, attempts=attempts - 1, source=source,
                                   target=target, reason="Credentials" if isinstance(
                                       error, CredentialsError) else "ValidationError",
                                   message=str(error)[:300], current=source)
                return
            now = self.clock()
            message = f"migrating {desired.domain} from {source} to {target}"
            # Written before libvirt is asked: a restart then finds the attempt and
            # inspects libvirt instead of starting a second migration.
            await self._set(key, body, phase=Phase.MIGRATING, wanted={
                "Progressing": (True, "Migrating", message), "Ready": (False, "Migrating", message)},
                fields={"sourceHypervisor": source, "targetHypervisor": target,
                        "currentHypervisor": source,
                        "attempt": {"source": source, "target": target,
                                    "startTime": status.timestamp(now)},
                        "startTime": status.timestamp(now), "completionTime": None,
                        "attempts": attempts, "progress": {"percent": 0.0}, "progressText": "0%",
                        "downtimeMs": None, "durationSeconds": None, "nextAttemptTime": None,
                        "effectiveMode": None})
            self.post_event(body, type="Normal", reason="MigrationStarted", message=message)
            await self._drive(key=key, body=body, desired=desired, request=request,
                              attempts=attempts, source=source, target=target, stopped=stopped,
                              adopt=False)
        finally:
            self.in_flight.pop(key, None)
            self.wake_queued()

    async def _recover(self, *, key: str, body: Any, desired: Desired, memory: Memory,
                       source: str, target: str, stopped: Stopped) -> None:
        """After a restart: settle the attempt the status remembers, never start another."""
        if source not in self.hypervisors or target not in self.hypervisors:
            await self._set(key, body, phase=Phase.MIGRATING, wanted={
                "Progressing": (True, "Recovering", "waiting for both Hypervisors to be known")})
            return
        self.in_flight[key] = InFlight(key=key, source=source, target=target)
        try:
            request = await self._request(desired, source=source, target=target)
            await self._drive(key=key, body=body, desired=desired, request=request,
                              attempts=memory.attempts, source=source, target=target,
                              stopped=stopped, adopt=True)
        finally:
            self.in_flight.pop(key, None)
            self.wake_queued()

    async def _drive(self, *, key: str, body: Any, desired: Desired, request: MigrationRequest,
                     attempts: int, source: str, target: str, stopped: Stopped,
                     adopt: bool) -> None:
        running = _Running(cancel=threading.Event())
        self.running[key] = running
        # A failed placement stays flagged through its retries, until it is placed.
        self.metrics.started(key)

        def mode() -> str:
            latest = running.latest
            return latest.mode.value if latest is not None else desired.mode.value

        def on_update(update: Update) -> None:
            running.latest = update  # from the engine's thread; read by the loop below

        call = self.engine.adopt if adopt else self.engine.migrate
        task = asyncio.ensure_future(asyncio.to_thread(call, request, on_update=on_update,
                                                       cancel=running.cancel,
                                                       detach=running.detach))
        # A detached task ends after we stopped listening; fetch its outcome so
        # asyncio does not warn about it.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        written: Update | None = None
        last_write = 0.0
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if stopped and not stopped.is_deleted():
                    # The operator is exiting or handing over to a peer: leave the
                    # job running (it is peer-to-peer) and its attempt in the status,
                    # so whoever runs next adopts it instead of waiting here.
                    log.info("%s: leaving the migration of %s running for the next operator",
                             key, desired.domain)
                    running.detach.set()
                    return
                spec = body.get("spec") or {}
                if (spec.get("abort") or (stopped and stopped.is_deleted())) and not running.cancel.is_set():
                    log.info("%s: abort requested; cancelling the migration of %s", key, desired.domain)
                    running.cancel.set()
                latest = running.latest
                if latest is not None:
                    self.metrics.sample(key, latest.progress, percent=latest.percent)
                if (latest is not None and latest is not written
                        and self.clock() - last_write >= self.settings.progress_interval_seconds):
                    written, last_write = latest, self.clock()
                    with contextlib.suppress(Exception):  # progress is best effort
                        await self._progress(key, body, latest)
            result: MigrationResult = task.result()
        except NoJobToAdopt as nothing:
            await self._settle_unwatched(key, body, desired=desired, attempts=attempts,
                                         source=source, target=target, found=nothing.found)
            return
        except PrecheckFailed as refused:
            first = refused.findings[0]
            await self._failed(key, body, desired=desired, attempts=attempts - 1, source=source,
                               target=target, reason=first.reason, message=str(refused),
                               current=source, blocked=True)
            return
        except MigrationCancelled as cancelled:
            self.metrics.ended(key, mode=mode(), result=_metrics.ABORTED)
            self.post_event(body, type="Warning", reason="MigrationAborted", message=str(cancelled))
            current = source if cancelled.location is Location.SOURCE else target
            await self._set(key, body, phase=Phase.ABORTED, wanted={
                "Ready": (False, "Aborted", str(cancelled))},
                fields={"attempt": None, "currentHypervisor": current,
                        "completionTime": status.timestamp(self.clock()),
                        "lastFailure": {"reason": "Aborted", "message": str(cancelled)[:1000],
                                        "time": status.timestamp(self.clock())}})
            await self._reprobe(source, target)
            return
        except MigrationError as failed:
            if not isinstance(failed, MigrationTimedOut):
                self.metrics.libvirt_error("adopt" if adopt else "migrate")
            self.metrics.ended(key, mode=mode(), result=_metrics.FAILED)
            current = target if failed.location is Location.TARGET else source
            await self._failed(key, body, desired=desired, attempts=attempts, source=source,
                               target=target, reason=failed.reason, message=str(failed),
                               current=current)
            return
        except VirtError as error:
            self.metrics.libvirt_error("adopt" if adopt else "migrate")
            self.metrics.ended(key, mode=mode(), result=_metrics.FAILED)
            await self._failed(key, body, desired=desired, attempts=attempts, source=source,
                               target=target, reason="LibvirtError", message=str(error),
                               current=source)
            return
        finally:
            self.running.pop(key, None)
            self.metrics.left(key)
        await self._succeeded(key, body, desired=desired, result=result, source=source,
                              target=target)

    async def _progress(self, key: str, body: Any, update: Update) -> None:
        await self._set(key, body, phase=Phase.MIGRATING, wanted={
            "Progressing": (True, "Migrating", update.note or f"{update.percent:.0f}% copied"),
            "Ready": (False, "Migrating", f"migrating {update.domain}")},
            fields={"progress": status.progress(update.progress, percent=update.percent,
                                                eta_seconds=update.eta_seconds),
                    "progressText": f"{update.percent:.0f}%",
                    "effectiveMode": update.mode.value})

    async def _reprobe(self, *names: str) -> None:
        # The inventory must show the move before the next decision, or the
        # VM would look as if it had drifted back.
        await asyncio.gather(*(self.probe(name) for name in names))

    async def _succeeded(self, key: str, body: Any, *, desired: Desired, result: MigrationResult,
                         source: str, target: str) -> None:
        self.metrics.ended(key, mode=result.mode.value, result=_metrics.SUCCEEDED,
                           duration_seconds=result.duration_seconds,
                           downtime_ms=result.downtime_ms,
                           transferred_bytes=result.bytes_transferred)
        self.metrics.set_drift(key, drifted=False)
        await self._reprobe(source, target)
        now = self.clock()
        downtime = f", downtime {result.downtime_ms} ms" if result.downtime_ms is not None else ""
        message = (f"domain {desired.domain} moved to {target} ({result.mode.value}) in "
                   f"{result.duration_seconds:.1f} s{downtime}")
        self.post_event(body, type="Normal", reason="MigrationSucceeded", message=message)
        final = result.final
        await self._set(key, body, phase=Phase.PLACED, wanted={"Ready": (True, "Placed", message)},
                        fields={"currentHypervisor": target, "targetHypervisor": target,
                                "attempt": None, "completionTime": status.timestamp(now),
                                "effectiveMode": result.mode.value,
                                "downtimeMs": result.downtime_ms,
                                "durationSeconds": round(result.duration_seconds, 3),
                                "progress": status.progress(final, percent=100.0, eta_seconds=0.0),
                                "progressText": "100%", "nextAttemptTime": None})

    async def _failed(self, key: str, body: Any, *, desired: Desired, attempts: int, source: str,
                      target: str, reason: str, message: str, current: str,
                      blocked: bool = False) -> None:
        self.metrics.set_failed(key, failed=True)
        now = self.clock()
        delay = reconcile.backoff_seconds(failures=max(1, attempts),
                                          base=self.settings.retry_base_seconds,
                                          cap=self.settings.retry_max_seconds)
        self.post_event(body, type="Warning", reason="MigrationFailed" if not blocked else "Blocked",
                        message=message[:1000])
        wanted = {"Ready": (False, reason, message[:1000])}
        if blocked:
            wanted["Blocked"] = (True, reason, message[:1000])
        await self._reprobe(source, target)
        await self._set(key, body, phase=Phase.FAILED, wanted=wanted, fields={
            "attempt": None, "currentHypervisor": current, "attempts": max(0, attempts),
            "completionTime": status.timestamp(now),
            "lastFailure": {"reason": reason, "message": message[:1000],
                            "time": status.timestamp(now)},
            "nextAttemptTime": status.timestamp(now + delay)})

    async def _settle_unwatched(self, key: str, body: Any, *, desired: Desired, attempts: int,
                                source: str, target: str, found: aftermath.Aftermath) -> None:
        """No job runs any more: the attempt ended while no one watched. Where is the VM?"""
        if found.unreachable:
            await self._set(key, body, phase=Phase.MIGRATING, wanted={
                "Progressing": (True, "Recovering",
                                f"cannot read {', '.join(display_uri(u) for u in found.unreachable)}")})
            return
        if found.location is Location.TARGET:
            final = found.final
            result = MigrationResult(
                domain=desired.domain,
                mode=EffectiveMode.LIVE if (found.target and found.target.active) else EffectiveMode.OFFLINE,
                duration_seconds=final.elapsed_seconds if final else 0.0,
                downtime_ms=final.downtime_ms if final else None,
                bytes_transferred=final.data_processed if final else 0, final=final)
            await self._succeeded(key, body, desired=desired, result=result, source=source,
                                  target=target)
            return
        if found.location is Location.SOURCE:
            # The attempt never moved the VM (or failed while we were away).
            # Nothing runs now, so the next pass may start a fresh attempt.
            now = self.clock()
            await self._reprobe(source, target)
            await self._set(key, body, phase=Phase.PENDING, wanted={
                "Ready": (False, "Interrupted", "the operator restarted during the attempt; "
                                                "the VM is still on the source")},
                fields={"attempt": None, "currentHypervisor": source,
                        "lastFailure": {"reason": "Interrupted",
                                        "message": "the operator restarted during the attempt; "
                                                   f"{desired.domain} stayed on {source}",
                                        "time": status.timestamp(now)}})
            return
        await self._failed(key, body, desired=desired, attempts=attempts, source=source,
                           target=target, reason=f"Location{found.location.value}",
                           message=f"after a restart domain {desired.domain} is "
                                   f"{found.location.value} between {source} and {target}; "
                                   "resolve it by hand", current=source)

    async def abort_for_deletion(self, key: str) -> None:
        """Deletion: cancel a migration in flight and wait until it has settled."""
        running = self.running.get(key)
        if running is not None:
            running.cancel.set()
        while key in self.in_flight:
            await asyncio.sleep(0.2)


async def _wait_for(waker: asyncio.Event, stopped: Stopped, *, timeout: float | None) -> None:
    """Until woken, stopped, or the timeout; no polling, so a thousand idle loops cost nothing."""
    tasks = {asyncio.ensure_future(waker.wait()), asyncio.ensure_future(stopped.until_stopped())}
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
