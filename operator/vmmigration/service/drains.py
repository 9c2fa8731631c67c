"""The drain of each Hypervisor in maintenance, run after each of its probes.

:func:`vmmigration.core.drain.plan_drain` decides; this reads the
VMMigrations from the API server (not from the operator's memory, which a
restart empties and which fills from kopf's watch only after a while: a
domain must never look unmanaged because its VMMigration was not seen yet),
creates and deletes what the pass asks for, posts its Events and sets its
metrics. The Hypervisor's status is written by the caller, once, with the
probe's own fields.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from vmmigration.core.drain import (
    CANCELLED,
    DRAINED_FROM_LABEL,
    DrainPass,
    DrainRecord,
    Managed,
    plan_drain,
)
from vmmigration.core.model import HostReport
from vmmigration.core.spec import HypervisorSpec
from vmmigration.service.ports import EventPoster, Kube, Metrics

log = logging.getLogger(__name__)


class Drains:
    def __init__(self, *, kube: Kube, post_event: EventPoster, metrics: Metrics, namespace: str) -> None:
        self.kube = kube
        self.post_event = post_event
        self.metrics = metrics
        self.namespace = namespace

    @staticmethod
    def concerned(spec: HypervisorSpec, previous: Mapping[str, Any]) -> bool:
        """Whether this host has a drain to run or to wind down (else no API call at all)."""
        record = DrainRecord.from_status(previous.get("drain"))
        leftovers = record is not None and (record.state != CANCELLED or _count(previous, "moving"))
        return spec.maintenance or bool(leftovers) or bool(previous.get("displaced"))

    async def pass_once(self, *, spec: HypervisorSpec, owner_uid: str, body: Any,
                        report: HostReport | None, previous: Mapping[str, Any],
                        now: float) -> DrainPass:
        if not self.concerned(spec, previous):
            self.metrics.drain(spec.name, None, last_progress=None)
            return plan_drain(spec=spec, owner_uid=owner_uid, report=report, migrations=(),
                              previous=previous, namespace=self.namespace, now=now)
        listed = await asyncio.to_thread(self.kube.list_vmmigrations)
        done = plan_drain(spec=spec, owner_uid=owner_uid, report=report,
                          migrations=[m for m in (managed(item) for item in listed) if m is not None],
                          previous=previous, namespace=self.namespace, now=now)
        for made in done.create:
            created = await asyncio.to_thread(self.kube.create_vmmigration, namespace=made.namespace,
                                              body=made.body)
            if created:
                log.info("drain of %s: made VMMigration %s/%s for domain %s", spec.name,
                         made.namespace, made.name, made.body["spec"]["domain"])
        for key in done.delete:
            namespace, name = key.split("/", 1)
            await asyncio.to_thread(self.kube.delete_vmmigration, namespace=namespace, name=name)
            log.info("drain of %s is over: deleted VMMigration %s", spec.name, key)
        for event in done.events:
            self.post_event(body, type=event.type, reason=event.reason, message=event.message)
            log.info("%s: %s", spec.name, event.message)
        self.metrics.drain(spec.name, done.counts, last_progress=done.last_progress)
        return done


def managed(item: Mapping[str, Any]) -> Managed | None:
    """A VMMigration from the API as the drain sees it; None if it names no domain."""
    meta = item.get("metadata") or {}
    spec = item.get("spec") or {}
    status = item.get("status") or {}
    domain = spec.get("domain")
    if not isinstance(domain, str) or not domain:
        return None
    conditions = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, Mapping)}
    ready = conditions.get("Ready") or {}
    labels = meta.get("labels") or {}
    target = spec.get("targetHypervisor")
    current = status.get("currentHypervisor")
    return Managed(
        key=f"{meta.get('namespace')}/{meta.get('name')}", domain=domain,
        created=str(meta.get("creationTimestamp") or ""),
        target=target if isinstance(target, str) else None,
        phase=str(status.get("phase") or ""), reason=str(ready.get("reason") or ""),
        message=str(ready.get("message") or ""),
        blocked=(conditions.get("Blocked") or {}).get("status") == "True",
        current=current if isinstance(current, str) else None,
        made_for=labels.get(DRAINED_FROM_LABEL) if isinstance(labels, Mapping) else None,
        deleting=bool(meta.get("deletionTimestamp")))


def _count(previous: Mapping[str, Any], name: str) -> int:
    drain = previous.get("drain")
    value = drain.get(name) if isinstance(drain, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
