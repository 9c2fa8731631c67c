"""kopf wiring, in one place. Handlers only translate; the runtime decides and acts.

Run with: ``kopf run -m vmmigration.adapters.kube.handlers --all-namespaces --peering vmmigration``
(``vmmigration operator`` does exactly this).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from typing import Any

import kopf

from vmmigration.adapters import libvirt as virt
from vmmigration.adapters.kube import logs
from vmmigration.adapters.kube.client import GROUP, VERSION, KubeClient
from vmmigration.adapters.prometheus import Metrics
from vmmigration.adapters.prometheus import serve as serve_metrics
from vmmigration.core.config import SHARD_LABEL, Settings, seniority_priority
from vmmigration.core.deletion import OPERATOR_FINALIZER
from vmmigration.core.spec import SpecError, parse_hypervisor
from vmmigration.service.runtime import Runtime

# Read once at import: kopf needs the timer interval when it registers the handler,
# and a bad variable should stop the operator before it touches anything.
SETTINGS = Settings.from_env()
# Replicas share the fleet by a label: each serves its own shard (the unlabelled, by default).
SHARD = {SHARD_LABEL: SETTINGS.shard} if SETTINGS.shard else {SHARD_LABEL: kopf.ABSENT}
SHARD_SELECTOR = f"{SHARD_LABEL}={SETTINGS.shard}" if SETTINGS.shard else f"!{SHARD_LABEL}"
log = logging.getLogger(__name__)


class _StopFlag:
    """kopf's stop flag, seen through the runtime's small protocol."""

    def __init__(self, flag: kopf.DaemonStopped) -> None:
        self._flag = flag

    def __bool__(self) -> bool:
        return bool(self._flag)

    def is_deleted(self) -> bool:
        reason = self._flag.reason
        return reason is not None and bool(reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)

    async def until_stopped(self) -> None:
        await self._flag.wait()


def _post_event(body: Any, *, type: str, reason: str, message: str) -> None:
    kopf.event(body, type=type, reason=reason, message=message)


def wire(settings: Settings, *, kube: KubeClient, metrics: Metrics) -> Runtime:
    """The application wired to libvirt, this API server and these metrics."""
    made = Runtime(
        settings=settings, kube=kube, post_event=_post_event, metrics=metrics,
        engine=virt.engine(poll_interval_seconds=settings.poll_interval_seconds,
                           libvirt_timeout_seconds=settings.libvirt_timeout_seconds,
                           post_copy_resume=settings.post_copy_resume,
                           post_copy_resume_try_seconds=settings.post_copy_resume_try_seconds),
        # Kept connections; a probe thread gives up on a silent host by the probe
        # timeout too, not only the runtime waiting for it.
        prober=virt.prober(timeout_seconds=min(settings.probe_timeout_seconds,
                                               settings.libvirt_timeout_seconds),
                           resync_seconds=settings.inventory_resync_seconds,
                           events=settings.inventory_events))
    metrics.watch(made.limiter)
    return made


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime = memo.get("runtime")
    assert isinstance(runtime, Runtime), "the startup handler has not run"
    return runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # First, so that this handler's own lines are in the chosen format too. At
    # INFO the log then tells what happened to VMs and hosts, not kopf's
    # bookkeeping (a status write alone logs "Handler ... succeeded.").
    logs.install(log_format=SETTINGS.log_format)
    # The core knows it too: `vmmigration delete hv --wait` names it when it holds a Hypervisor.
    settings.persistence.finalizer = OPERATOR_FINALIZER
    # A shard's replica is sent only its shard's objects (the API server filters the
    # watch): kopf never sees, nor strips the finalizer of, another shard's objects, and
    # its memory grows with its shard, not with the fleet. The handlers' own label filters
    # (SHARD) say the same, for objects listed before the selector applied.
    for plural in ("hypervisors", "vmmigrations"):
        settings.watching.label_selectors[GROUP, plural] = SHARD_SELECTOR
    # Progress and diff-base go to annotations: the structural schema would
    # prune kopf's default status.kopf field.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # A deleted VMMigration's loop exits within a moment when idle; one that is
    # aborting a migration takes seconds, so poll for its exit often (the
    # default is once a minute, which would hold the finalizer that long).
    settings.background.instant_exit_timeout = 0.5
    settings.background.cancellation_polling = 1.0
    settings.peering.lifetime = SETTINGS.peering_lifetime_seconds
    settings.peering.priority = (SETTINGS.peering_priority if SETTINGS.peering_priority is not None
                                 else seniority_priority(started=time.time(), tiebreak=random.randrange(1000)))
    # The runtime posts the Events users act on; of kopf's own log lines only
    # errors (a handler that crashed) become Events too.
    settings.posting.level = logging.ERROR
    # A quiet API server must not leave a watch hanging for ever (API restarts).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Probes and migrations run in threads: more than the default handful.
    workers = max(16, SETTINGS.max_concurrent_migrations * 2 + 16)
    settings.execution.max_workers = workers
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vmmigration"))
    exported = Metrics()  # the default registry: process and platform metrics come along
    if SETTINGS.metrics_port:
        serve_metrics(address=SETTINGS.metrics_address, port=SETTINGS.metrics_port)
        log.info("metrics on http://%s:%d/metrics", SETTINGS.metrics_address, SETTINGS.metrics_port)
    memo["runtime"] = wire(SETTINGS, kube=KubeClient(connections=workers, shard=SETTINGS.shard), metrics=exported)
    log.info("vmmigration operator: %d migrations at once, hosts followed by libvirt's events "
             "and read in full every %.0f s, %s",
             SETTINGS.max_concurrent_migrations, SETTINGS.inventory_resync_seconds,
             f"shard {SETTINGS.shard!r}" if SETTINGS.shard else "resources without a shard label")


# ---- Hypervisor ------------------------------------------------------------------

# The event handlers are coroutines on purpose: kopf runs a plain ``def`` handler
# in a worker thread, and these mutate the runtime's dicts (claims, hypervisors)
# and set asyncio.Events that the per-VMMigration loops read on the event loop;
# neither is safe from another thread.
@kopf.on.event(GROUP, VERSION, "hypervisors", labels=SHARD)
async def hypervisor_event(event: kopf.RawEvent, name: str, spec: kopf.Spec, labels: kopf.Labels,
                           memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    app = _runtime(memo)
    if event.get("type") == "DELETED":
        app.hypervisor_gone(name)
        return
    try:
        app.hypervisor_seen(parse_hypervisor(name=name, spec=dict(spec), labels=dict(labels)))
    except SpecError as error:
        logger.error("Hypervisor %s is ignored: %s", name, error)
        app.hypervisor_gone(name)


@kopf.timer(GROUP, VERSION, "hypervisors", interval=SETTINGS.probe_interval_seconds, labels=SHARD)
async def probe_hypervisor(name: str, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch,
                           body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    app = _runtime(memo)
    report = await app.probe(name)
    if report is None:
        return
    # kopf sends nothing for an empty patch. The drain's pass runs here, after the
    # probe it counts from, and its status goes out in the same one patch.
    patch.status.update(await app.hypervisor_status(name, previous=dict(status), report=report,
                                                    generation=int(meta.get("generation") or 0),
                                                    owner_uid=str(meta.get("uid") or ""), body=body))
    await app.rebalance(name)


async def renew_readings(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Renew the readings that Auto plans on this host's guests will want (service.renewal)."""
    await _runtime(memo).renew_readings(name)


if SETTINGS.measure_interval_seconds > 0:
    kopf.timer(GROUP, VERSION, "hypervisors", interval=SETTINGS.measure_interval_seconds,
               id="renew_readings", labels=SHARD)(renew_readings)


# ---- VMMigration -----------------------------------------------------------------

@kopf.on.event(GROUP, VERSION, "vmmigrations", labels=SHARD)
async def vmmigration_event(event: kopf.RawEvent, namespace: str | None, name: str,
                            spec: kopf.Spec, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    app = _runtime(memo)
    key = f"{namespace}/{name}"
    if event.get("type") == "DELETED":
        app.release(key)
        return
    domain = spec.get("domain")
    app.claim(key=key, domain=domain if isinstance(domain, str) else None,
                  created=str(meta.get("creationTimestamp") or ""))


@kopf.daemon(GROUP, VERSION, "vmmigrations", cancellation_timeout=None, labels=SHARD)
async def placement(namespace: str | None, name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                    memo: kopf.Memo, **_: Any) -> None:
    """One loop per VMMigration, restarted on operator start: resume is the same code path."""
    await _runtime(memo).serve(key=f"{namespace}/{name}", body=body, stopped=_StopFlag(stopped))
