"""Every pre-check of one migration, reading both hosts and changing nothing.

The facts are gathered here; the verdicts are the pure rules of
:mod:`vmmigration.core.prechecks` and :mod:`vmmigration.core.planner`.
"""

from __future__ import annotations

import dataclasses

from vmmigration.core import planner, prechecks
from vmmigration.core.channels import Channels, choose as choose_channels
from vmmigration.core.model import (
    DiskImage,
    DomainSummary,
    MigrationRequest,
    Mode,
    Policy,
    Storage,
    display_uri,
)
from vmmigration.core.plans import MovePlan
from vmmigration.core.carry import CarryPlan, CarryRefused
from vmmigration.core.prechecks import Finding
from vmmigration.service import carrier
from vmmigration.service.ports import LibvirtHost


class PrecheckFailed(Exception):
    """Nothing was changed: the migration was refused before it started."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("; ".join(f"{f.reason}: {f.message}" for f in findings))
        self.findings = findings

    @property
    def reasons(self) -> list[str]:
        return [f.reason for f in self.findings]


@dataclasses.dataclass(frozen=True)
class Plan:
    mode: Mode
    flags: planner.MigrationFlags
    domain: DomainSummary
    precreate: tuple[DiskImage, ...] = ()
    # An Offline move that copies: the volumes the operator carries before the definition moves.
    carry: CarryPlan | None = None
    # The streams of a running VM's move (None offline); the QEMU versions decide them.
    channels: Channels | None = None
    qemu: tuple[int, int] = (0, 0)


def with_channels(plan: Plan, *, policy: Policy) -> Plan:
    """``plan`` with the streams its flags can run with on these two QEMUs."""
    if plan.flags.offline:
        return dataclasses.replace(plan, channels=None)
    chosen = choose_channels(requested_connections=policy.parallel_connections,
                             post_copy=plan.flags.post_copy, source_qemu=plan.qemu[0],
                             target_qemu=plan.qemu[1])
    flags = dataclasses.replace(plan.flags, parallel=plan.flags.parallel and chosen.connections > 1)
    return dataclasses.replace(plan, flags=flags, channels=chosen)


def plan(request: MigrationRequest, *, source: LibvirtHost, target: LibvirtHost) -> Plan:
    """Every pre-check, in order; raises PrecheckFailed and changes nothing."""
    domain = source.find(request.domain)
    if domain is None:
        raise PrecheckFailed(
            [Finding("DomainNotFound", f"domain {request.domain} is not defined on {display_uri(source.uri)}")]
        )
    if source.job(request.domain) is not None:
        # Never a second migration of a VM that is still moving.
        raise PrecheckFailed([Finding(
            "MigrationInProgress",
            f"a migration job of {request.domain} is already running on {display_uri(source.uri)}; "
            "wait for it, abort it, or adopt it (vmmigration migrate --adopt)",
        )])
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
    carrying = carrier.wanted(request, offline=mode is Mode.OFFLINE)
    disks = source.disks(request.domain)
    # Carried disks are judged by the carry's own survey below, volume by volume.
    invisible = () if carrying else tuple(d for d in disks if not target.disk_visible(d.path))
    source_versions, target_versions = source.versions(), target.versions()
    qemu = (source_versions.hypervisor, target_versions.hypervisor)
    facts_source = prechecks.SourceFacts(
        host=display_uri(source.uri), domain=domain, versions=source_versions, disks=disks,
        host_uuid=source.host_uuid(),
    )
    domain_xml = source.domain_xml(request.domain)
    machine = target.check_machine(domain_xml=domain_xml)
    facts_target = prechecks.TargetFacts(
        host=display_uri(target.uri),
        versions=target_versions,
        free_memory_bytes=target.free_memory_bytes(),
        domains=target.domains(),
        # libvirt cannot compare a CPU for a machine type its QEMU lacks; that finding says it.
        cpu=(target.compare_cpu(domain_xml=domain_xml) if machine.supported
             else prechecks.CpuVerdict(compatible=True, detail="not compared")),
        machine=machine,
        invisible_disks=tuple(d.path for d in invisible),
        host_uuid=target.host_uuid(),
        uncreatable_disks=tuple(d.path for d in invisible if not target.has_pool_for(d.path)),
        invisible_backing=tuple(
            d.backing for d in invisible if d.backing and not target.disk_visible(d.backing)
        ),
    )
    findings = list(
        prechecks.evaluate(source=facts_source, target=facts_target, storage=request.storage,
                           allow_older=request.policy.allow_older_target)
    )
    carry = None
    if carrying and not any(f.reason == "SameHost" for f in findings):
        try:
            carry = carrier.survey(request, source=source, target=target)
        except CarryRefused as refused:
            findings += refused.findings
    if findings:
        raise PrecheckFailed(findings)
    if carry is not None:
        return Plan(mode=mode, flags=flags, domain=domain, carry=carry, qemu=qemu)
    # libvirt creates the copies of non-shared disks for CopyAll, but an
    # incremental copy needs the top image there already, on its backing.
    precreate = invisible if request.storage is Storage.COPY_INCREMENTAL else ()
    return with_channels(Plan(mode=mode, flags=flags, domain=domain, precreate=precreate, qemu=qemu),
                         policy=request.policy)


def resolved(request: MigrationRequest, plan: Plan, planned: MovePlan) -> tuple[MigrationRequest, Plan]:
    """The request and libvirt plan as the chosen strategy runs them (Auto's choice can
    change the mode and the policy); PrecheckFailed when no strategy fits the budget."""
    if planned.strategy is None:
        raise PrecheckFailed([Finding("DowntimeBudget", planned.why)])
    execution = planned.execution(request.policy)
    if (execution.mode, execution.policy) == (plan.mode, request.policy):
        return request, plan
    try:
        flags = planner.migration_flags(mode=execution.mode, domain=plan.domain,
                                        policy=execution.policy, storage=request.storage,
                                        persistence=request.persistence)
    except planner.PlanError as error:
        raise PrecheckFailed([Finding(error.reason, str(error))]) from error
    return (dataclasses.replace(request, mode=execution.mode, policy=execution.policy),
            with_channels(dataclasses.replace(plan, mode=execution.mode, flags=flags),
                          policy=execution.policy))
