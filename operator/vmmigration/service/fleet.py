"""What the operator knows of its fleet: the Hypervisors, which VMMigration claims which
domain, the migration slots, and whom to wake when any of it changes.

Everything here lives on the event loop of one process; kopf peering makes
sure only one replica acts.
"""

from __future__ import annotations

import asyncio
import dataclasses

from vmmigration.core.limiter import Limiter, Limits
from vmmigration.core.model import HostReport
from vmmigration.core.scheduling import Claim, HypervisorView
from vmmigration.core.spec import HypervisorSpec


class Claims:
    """Each VMMigration's claim on a domain, indexed by domain.

    A pass needs only its own domain's rivals; scanning every claim made each
    pass O(VMMigrations).
    """

    def __init__(self) -> None:
        self._by_domain: dict[str, dict[str, Claim]] = {}
        self._domain_of: dict[str, str] = {}

    def put(self, claim: Claim) -> None:
        self.drop(claim.key)
        self._by_domain.setdefault(claim.domain, {})[claim.key] = claim
        self._domain_of[claim.key] = claim.domain

    def drop(self, key: str) -> Claim | None:
        domain = self._domain_of.pop(key, None)
        if domain is None:
            return None
        same = self._by_domain[domain]
        gone = same.pop(key)
        if not same:
            del self._by_domain[domain]
        return gone

    def on(self, domain: str) -> tuple[Claim, ...]:
        return tuple(self._by_domain.get(domain, {}).values())

    def keys_on(self, domain: str) -> tuple[str, ...]:
        return tuple(self._by_domain.get(domain, ()))

    def domains(self) -> frozenset[str]:
        return frozenset(self._by_domain)

    def __len__(self) -> int:
        return len(self._domain_of)


class Fleet:
    def __init__(self, *, limits: Limits) -> None:
        self.hypervisors: dict[str, HypervisorView] = {}
        self.claims = Claims()
        self.limiter = Limiter(limits)
        self._wakers: dict[str, asyncio.Event] = {}
        # VMMigration -> domain, for those in mode Auto: their plans measure the guest.
        self._measured: dict[str, str] = {}

    # ---- hypervisors ------------------------------------------------------------

    def seen(self, spec: HypervisorSpec) -> bool:
        """Record a Hypervisor's spec; True when it is new or changed (everyone may care)."""
        before = self.hypervisors.get(spec.name)
        self.hypervisors[spec.name] = HypervisorView(spec=spec,
                                                     report=before.report if before else None)
        changed = before is None or before.spec != spec
        if changed:
            # Maintenance, labels or limits changed: any placement may change.
            self.wake_all()
        return changed

    def gone(self, name: str) -> None:
        if self.hypervisors.pop(name, None) is not None:
            self.wake_all()

    def reported(self, name: str, report: HostReport) -> None:
        """A probe's report; wakes the VMMigrations it may concern."""
        view = self.hypervisors.get(name)
        if view is None:
            return
        self.hypervisors[name] = dataclasses.replace(view, report=report)
        before = {d.name: d for d in view.report.domains} if view.report else {}
        after = {d.name: d for d in report.domains}
        # Only the VMMigrations whose domain changed on this host.
        for domain in set(before) ^ set(after) | {d for d in before if d in after and before[d] != after[d]}:
            self.wake_domain(domain)
        if view.report is None or view.report.reachable != report.reachable:
            self.wake_all()

    # ---- claims -----------------------------------------------------------------

    def claim(self, *, key: str, domain: str | None, created: str) -> None:
        if domain is None:
            self.claims.drop(key)
        else:
            self.claims.put(Claim(key=key, domain=domain, created=created))
        self.wake(key)

    def measures(self, key: str, domain: str | None) -> None:
        """Whether the VMMigration ``key`` plans from measurements (of ``domain``), or not (None)."""
        if domain is None:
            self._measured.pop(key, None)
        else:
            self._measured[key] = domain

    def measured_domains(self) -> frozenset[str]:
        return frozenset(self._measured.values())

    def moving(self, domain: str) -> bool:
        """Whether a VMMigration of ``domain`` holds a slot: validating or moving it."""
        return any(self.limiter.holds(key) for key in self.claims.keys_on(domain))

    def release(self, key: str) -> None:
        self._measured.pop(key, None)
        gone = self.claims.drop(key)
        self.limiter.forget(key)
        if gone is not None:
            # A younger VMMigration blocked by this one may proceed now.
            self.wake_domain(gone.domain)

    # ---- slots ------------------------------------------------------------------

    def free(self, key: str) -> None:
        self.limiter.free(key)
        self.wake_queued()

    # ---- waking -----------------------------------------------------------------

    def waker(self, key: str) -> asyncio.Event:
        return self._wakers.setdefault(key, asyncio.Event())

    def forget_waker(self, key: str) -> None:
        self._wakers.pop(key, None)

    def wake(self, key: str) -> None:
        if key in self._wakers:
            self._wakers[key].set()

    def wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()

    def wake_queued(self) -> None:
        """A slot came free: only the loops waiting for one need to decide again
        (with a thousand VMMigrations, waking every loop made each slot turnover slow)."""
        for key in self.limiter.queued:
            self.wake(key)

    def wake_domain(self, domain: str) -> None:
        for key in self.claims.keys_on(domain):
            self.wake(key)
