"""Values shared by every layer: modes, policy, domain state and job progress.

Pure: imports nothing of libvirt, kopf or kubernetes.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # core.channels formats versions with this module's helper
    from vmmigration.core.channels import Channels

MIB = 1024 * 1024
GIB = 1024 * MIB


class Mode(str, enum.Enum):
    """The migration type a user asks for (RHEL 9's three, plus Auto)."""

    AUTO = "Auto"
    LIVE = "Live"
    NON_LIVE = "NonLive"
    OFFLINE = "Offline"


class EffectiveMode(str, enum.Enum):
    """How the migration actually ran, after any escalation."""

    LIVE = "Live"
    NON_LIVE = "NonLive"
    OFFLINE = "Offline"
    LIVE_SUSPENDED = "LiveSuspended"
    POST_COPY = "PostCopy"


class OnTimeout(str, enum.Enum):
    """What to do with a live migration that does not converge."""

    ABORT = "Abort"
    SUSPEND = "Suspend"
    POST_COPY = "PostCopy"


class Escalation(str, enum.Enum):
    """When a live migration that cannot converge is escalated by ``onTimeout``."""

    # As soon as the measured rates show it cannot converge (at the end of the
    # current pass), with the timeouts as the safety net.
    FORECAST = "Forecast"
    TIMEOUT = "Timeout"  # only when a timeout fires, as before forecasts existed


class OverBudget(str, enum.Enum):
    """What Auto does when no allowed strategy fits the downtime budget."""

    BLOCK = "Block"
    LEAST_DOWNTIME = "LeastDowntime"


class Storage(str, enum.Enum):
    SHARED = "Shared"
    COPY_ALL = "CopyAll"
    COPY_INCREMENTAL = "CopyIncremental"


@dataclasses.dataclass(frozen=True)
class Persistence:
    """What becomes of the definitions once the VM has moved.

    libvirt's own default is ``Persistence(persist_on_target=False,
    undefine_on_source=False)``: the VM runs transient on the target and its
    definition stays behind on the source, so two hosts both claim it. For a
    placement move vmmigration defaults to persist + undefine, so exactly one
    host owns the VM afterwards.
    """

    persist_on_target: bool = True
    undefine_on_source: bool = True


LIBVIRT_DEFAULT_PERSISTENCE = Persistence(persist_on_target=False, undefine_on_source=False)


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a migration is run and when a stuck one is escalated."""

    on_timeout: OnTimeout = OnTimeout.ABORT
    # Escalate when the lowest remaining-bytes figure has not improved for this long. 0 = never.
    progress_timeout_seconds: float = 150.0
    # Escalate when the job runs longer than this many seconds per GiB to move. 0 = never.
    completion_timeout_seconds_per_gib: float = 800.0
    # A last resort that aborts whatever happens (not possible once in post-copy). 0 = never.
    hard_timeout_seconds: float = 3600.0
    bandwidth_mib_per_s: int = 0  # 0 = unlimited
    max_downtime_ms: int = 0  # 0 = leave QEMU's default (300 ms)
    auto_converge: bool = False
    compressed: bool = False
    parallel_connections: int = 1
    peer_to_peer: bool = True
    # Shared storage that libvirt cannot recognise as shared (a local directory
    # both hosts mount) needs this to pass libvirt's data-safety check.
    allow_unsafe: bool = False
    # Lets a move go to an older libvirt or QEMU (rolling an upgrade back); the
    # machine type and CPU model are still checked against the older side.
    allow_older_target: bool = False
    escalation: Escalation = Escalation.FORECAST
    over_downtime_budget: OverBudget = OverBudget.BLOCK

    def __post_init__(self) -> None:
        for name in (
            "progress_timeout_seconds",
            "completion_timeout_seconds_per_gib",
            "hard_timeout_seconds",
            "bandwidth_mib_per_s",
            "max_downtime_ms",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 1 <= self.parallel_connections <= 64:
            raise ValueError(
                f"parallel_connections must be between 1 and 64, got {self.parallel_connections}"
            )


class PowerState(str, enum.Enum):
    RUNNING = "Running"
    PAUSED = "Paused"
    SHUT_OFF = "ShutOff"
    OTHER = "Other"  # crashed, suspended to RAM, shutting down, …


class PauseReason(str, enum.Enum):
    NONE = "None"
    USER = "User"
    MIGRATION = "Migration"  # paused by a migration: non-live copy, incoming, or our suspend
    STARTING_UP = "StartingUp"  # an incoming migration's domain before the copy begins
    POST_COPY = "PostCopy"
    POST_COPY_FAILED = "PostCopyFailed"
    OTHER = "Other"


class JobDirection(str, enum.Enum):
    """Which end of a migration a domain is, as libvirt's job on it says.

    The pause reason cannot tell: libvirt pauses a migration's *source* with
    reason "migration" for its switch-over (and for the whole suspended rest of
    a hybrid), exactly as it pauses the *target* that receives the copy.
    """

    NONE = "None"  # no migration job (or the domain is not paused for one)
    INCOMING = "Incoming"  # the receiving end: a copy, not the VM yet
    OUTGOING = "Outgoing"  # the sending end: still the VM, whatever its pause reason


@dataclasses.dataclass(frozen=True)
class DomainSummary:
    name: str
    uuid: str
    state: PowerState
    pause_reason: PauseReason
    memory_bytes: int
    persistent: bool
    # Read only for a domain paused for a migration; elsewhere it changes no decision.
    job: JobDirection = JobDirection.NONE

    @property
    def active(self) -> bool:
        return self.state is not PowerState.SHUT_OFF


@dataclasses.dataclass(frozen=True)
class DiskImage:
    """One writable disk of a domain, as its storage must be provided on a target."""

    path: str
    format: str = "raw"
    backing: str | None = None
    backing_format: str | None = None


@dataclasses.dataclass(frozen=True)
class HostVersions:
    libvirt: int  # major * 1_000_000 + minor * 1_000 + release
    hypervisor: int


def format_version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


@dataclasses.dataclass(frozen=True)
class JobProgress:
    """One normalised sample of libvirt's migration job statistics. Bytes and seconds."""

    elapsed_seconds: float
    data_total: int = 0
    data_processed: int = 0
    data_remaining: int = 0
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    dirty_rate_bytes_per_s: int = 0
    transfer_rate_bytes_per_s: int = 0
    iteration: int = 0
    postcopy_requests: int = 0
    downtime_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class VolumeOptions:
    """Where an Offline move that copies puts the disks, and what becomes of the originals."""

    target_pool: str | None = None  # None: the pool of the same name as the source's
    # Delete the source volumes once the copies are verified and the source's definition is
    # gone. Never the default: until then the source's disks are the only proven copy.
    delete_from_source: bool = False


@dataclasses.dataclass(frozen=True)
class DiskCopy:
    """One volume's copy as the status shows it."""

    source: str
    target: str
    total_bytes: int
    copied_bytes: int
    state: str  # Pending, Copying, Verifying, Verified


@dataclasses.dataclass(frozen=True)
class MigrationRequest:
    domain: str
    source_uri: str
    target_uri: str
    mode: Mode = Mode.AUTO
    policy: Policy = Policy()
    storage: Storage = Storage.SHARED
    persistence: Persistence = Persistence()
    volumes: VolumeOptions = VolumeOptions()
    # Where the QEMU migration stream connects on the target (host or IP);
    # None lets the target's libvirtd choose (its migration_host).
    migration_address: str | None = None


@dataclasses.dataclass(frozen=True)
class MigrationResult:
    domain: str
    mode: EffectiveMode
    duration_seconds: float
    downtime_ms: int | None
    bytes_transferred: int
    final: JobProgress | None
    # The streams the job ran with (None: not known, as for a job adopted after a restart).
    channels: Channels | None = None
    # Post-copy: seconds the VM ran on the target while pages still crossed (slower,
    # faulting on every missing page), from the switch to the end of the job.
    degraded_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class HostReport:
    """What one probe of a libvirt host found. ``reachable=False`` carries only ``error``."""

    reachable: bool
    probed_at: float  # seconds since the epoch
    error: str = ""
    libvirt_version: str = ""
    hypervisor_version: str = ""
    cpu_model: str = ""
    memory_total_bytes: int = 0
    memory_free_bytes: int = 0
    domains: tuple[DomainSummary, ...] = ()

    @functools.cached_property
    def by_name(self) -> dict[str, tuple[DomainSummary, ...]]:
        """The domains by name, built once per report (libvirt keeps names unique
        per host, but a report is data: a repeated name keeps every entry).

        Every VMMigration's every pass looks its domain up on every host: a
        lookup, not a scan of each host's whole list.
        """
        index: dict[str, tuple[DomainSummary, ...]] = {}
        for found in self.domains:
            index[found.name] = index.get(found.name, ()) + (found,)
        return index


# Query parameters of a libvirt URI that name files on the client's own machine:
# the operator's credential files. Never shown (status, Events, logs).
CLIENT_FILE_PARAMETERS = frozenset({"pkipath", "keyfile", "known_hosts"})


def display_uri(uri: str) -> str:
    """The URI without its query (which may name key files): for logs and status."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(uri)._replace(query=""))


def redacted(text: str, *, uri: str) -> str:
    """``text`` (libvirt's message about ``uri``) with the URI and its credential paths hidden.

    libvirt names the files it could not read ("Unable to read CA certificate
    '/run/…/cacert.pem'"); those paths are the operator's credential directory.
    """
    text = text.replace(uri, display_uri(uri))
    query = urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query, keep_blank_values=True)
    for key, value in query:
        if key in CLIENT_FILE_PARAMETERS and value:
            text = text.replace(value, f"<{key}>")
    return text


@dataclasses.dataclass(frozen=True)
class Update:
    """One report from the monitor, about twice a second."""

    domain: str
    mode: EffectiveMode
    progress: JobProgress | None
    percent: float
    eta_seconds: float | None
    note: str | None = None  # an escalation or abort, once, when it happens
    # The link carries nothing while the job waits for it (said on every update
    # until it carries data again, so the status shows it the whole time).
    waiting_for_link: str | None = None
    # An Offline move that carries its disks: each volume's copy (the job's figures are then
    # the data of the copies: data_total, data_processed, transfer rate).
    disks: tuple[DiskCopy, ...] = ()
