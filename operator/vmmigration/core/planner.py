"""Pure planning: which mode a request really means, and which libvirt behaviours it needs.

The flags are plain booleans here; the libvirt adapter turns them into
libvirt's constants, so this module stays importable without libvirt.
"""

from __future__ import annotations

import dataclasses

from vmmigration.core.model import (
    DomainSummary,
    EffectiveMode,
    Mode,
    OnTimeout,
    PauseReason,
    Persistence,
    Policy,
    PowerState,
    Storage,
)


class PlanError(ValueError):
    """The request cannot apply to the domain as it is now."""

    def __init__(self, *, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class MigrationFlags:
    live: bool = False
    offline: bool = False
    peer_to_peer: bool = True
    persist_dest: bool = False
    undefine_source: bool = False
    paused: bool = False
    copy_all_storage: bool = False
    copy_incremental_storage: bool = False
    post_copy: bool = False
    auto_converge: bool = False
    compressed: bool = False
    parallel: bool = False
    unsafe: bool = False
    # Continue a post-copy migration whose link failed (both halves paused).
    post_copy_resume: bool = False


def choose_mode(*, requested: Mode, domain: DomainSummary) -> Mode:
    """Resolve Auto and refuse a mode that does not fit the domain's power state."""
    running = domain.state in (PowerState.RUNNING, PowerState.PAUSED)
    if domain.state is PowerState.OTHER:
        raise PlanError(
            reason="DomainNotMigratable",
            message=f"domain {domain.name} is neither running, paused nor shut off; "
            "bring it to one of those states first",
        )
    if requested is Mode.AUTO:
        return Mode.LIVE if running else Mode.OFFLINE
    if requested is Mode.OFFLINE and running:
        raise PlanError(
            reason="ModeMismatch",
            message=f"domain {domain.name} is running; Offline moves only shut-off domains "
            "(use Live, NonLive or Auto)",
        )
    if requested in (Mode.LIVE, Mode.NON_LIVE) and not running:
        raise PlanError(
            reason="ModeMismatch",
            message=f"domain {domain.name} is shut off; {requested.value} needs a running "
            "domain (use Offline or Auto)",
        )
    return requested


def initial_effective_mode(mode: Mode) -> EffectiveMode:
    return {
        Mode.LIVE: EffectiveMode.LIVE,
        Mode.NON_LIVE: EffectiveMode.NON_LIVE,
        Mode.OFFLINE: EffectiveMode.OFFLINE,
    }[mode]


def migration_flags(
    *,
    mode: Mode,
    domain: DomainSummary,
    policy: Policy,
    storage: Storage,
    persistence: Persistence,
) -> MigrationFlags:
    if mode is Mode.AUTO:
        raise ValueError("resolve Auto with choose_mode() first")
    offline = mode is Mode.OFFLINE
    if offline and not persistence.persist_on_target:
        raise PlanError(
            reason="PersistenceMismatch",
            message="Offline migration must persist the domain on the target: a transient "
            "shut-off domain does not exist",
        )
    return MigrationFlags(
        live=mode is Mode.LIVE,
        offline=offline,
        peer_to_peer=policy.peer_to_peer,
        persist_dest=persistence.persist_on_target,
        undefine_source=persistence.undefine_on_source,
        # A domain the user paused stays paused on the target. Without this
        # flag libvirt resumes it there, which the user never asked for.
        paused=domain.state is PowerState.PAUSED and domain.pause_reason is PauseReason.USER,
        # An Offline move's disks are carried by the operator before libvirt moves the
        # definition (service.carrier); libvirt's own copy needs a running QEMU.
        copy_all_storage=not offline and storage is Storage.COPY_ALL,
        copy_incremental_storage=not offline and storage is Storage.COPY_INCREMENTAL,
        # Post-copy must be allowed when the job starts, or it cannot be
        # switched to later; allowing it changes nothing until it is used.
        # libvirt refuses post-copy for a non-live copy, where it means nothing.
        post_copy=mode is Mode.LIVE and policy.on_timeout is OnTimeout.POST_COPY,
        auto_converge=not offline and policy.auto_converge,
        compressed=not offline and policy.compressed,
        parallel=not offline and policy.parallel_connections > 1,
        unsafe=policy.allow_unsafe,
    )
