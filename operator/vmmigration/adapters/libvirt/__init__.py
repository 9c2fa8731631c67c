"""The libvirt adapter: the only package that imports libvirt.

:func:`connect` is the :class:`vmmigration.service.ports.Connect` the
application is wired with; :func:`engine` and :func:`prober` build the
service's engine and prober on it.
"""

from __future__ import annotations

import time

from vmmigration.adapters.libvirt.connection import DEFAULT_TIMEOUT_SECONDS
from vmmigration.adapters.libvirt.host import Host
from vmmigration.core.errors import VirtError
from vmmigration.core.model import HostReport
from vmmigration.core.recovery import ResumeLimits, ResumePolicy
from vmmigration.service.engine import Engine
from vmmigration.service.inventory import Prober, report_of

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "Host", "connect", "engine", "probe_once", "prober"]


def connect(uri: str, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Host:
    return Host(uri, timeout_seconds=timeout_seconds)


def engine(*, poll_interval_seconds: float = 0.5,
           libvirt_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
           post_copy_resume: ResumePolicy = ResumePolicy.AUTO,
           post_copy_resume_try_seconds: float = ResumeLimits.try_seconds) -> Engine:
    return Engine(connect=connect, poll_interval_seconds=poll_interval_seconds,
                  libvirt_timeout_seconds=libvirt_timeout_seconds,
                  post_copy_resume=post_copy_resume,
                  resume_limits=ResumeLimits(try_seconds=post_copy_resume_try_seconds))


def prober(*, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, resync_seconds: float = 300.0,
           events: bool = True) -> Prober:
    """Kept connections whose reports libvirt's events keep current (service.inventory);
    without ``events`` every probe reads its host in full."""
    return Prober(connect=connect, timeout_seconds=timeout_seconds, resync_seconds=resync_seconds,
                  events=events)


def probe_once(uri: str) -> HostReport:
    """One probe on a connection of its own (the baseline the kept connections beat)."""
    now = time.time()
    try:
        with Host(uri) as host:
            return report_of(host, now=now)
    except VirtError as error:
        return HostReport(reachable=False, probed_at=now, error=str(error))
