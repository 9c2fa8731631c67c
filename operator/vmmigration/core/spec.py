"""Pure: the desired state users declare, parsed from VMMigration and Hypervisor specs.

The API server's schema already rejects malformed input; this parser checks
again because an object can predate a schema change, and because a clear
``SpecError`` beats a KeyError deep in the reconciler. It reads plain
mappings, so it needs nothing of kopf or kubernetes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping
from typing import Any

from vmmigration.core.model import (
    Escalation,
    Mode,
    OnTimeout,
    OverBudget,
    Persistence,
    Policy,
    Storage,
    VolumeOptions,
)

# Used with fullmatch: with match, "$" also matches before a trailing newline.
DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
# A libvirt storage pool name, as restricted as a domain name (it reaches libvirt calls and XML).
POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
# The CRD's character rules: no whitespace, quotes, ; ` $ | < > or backslash, so
# a URI can never smuggle shell or XML even if it predates the schema.
LIBVIRT_URI = re.compile(r"(qemu|test)(\+[a-z0-9]+)?://[^\s;`$'\"|<>\\]*")
MIGRATION_ADDRESS = re.compile(r"[A-Za-z0-9.:\[\]-]+")
# An offending value is quoted in the message, which ends up in a status
# condition (at most 32768 characters) and in `kubectl describe`: keep it short.
SHOWN_CHARACTERS = 80


class SpecError(ValueError):
    """The spec cannot be acted on; the message names the field and what to do."""


class Phase(str, enum.Enum):
    PENDING = "Pending"
    VALIDATING = "Validating"
    MIGRATING = "Migrating"
    PLACED = "Placed"
    FAILED = "Failed"
    ABORTED = "Aborted"
    # Pinned to a host in maintenance, the VM runs on another host of its pool
    # until the maintenance ends, and then goes back.
    DISPLACED = "Displaced"


class PlacementMode(str, enum.Enum):
    CONTINUOUS = "Continuous"
    ONCE = "Once"


class DriftAction(str, enum.Enum):
    CORRECT = "Correct"
    REPORT = "Report"


@dataclasses.dataclass(frozen=True)
class LabelRequirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # NotIn


@dataclasses.dataclass(frozen=True)
class Selector:
    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            e.matches(labels) for e in self.expressions
        )

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        parts += [f"{e.key} {e.operator} ({','.join(e.values)})" for e in self.expressions]
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Desired:
    """One VMMigration's spec."""

    domain: str
    target: str | None = None
    selector: Selector | None = None
    source: str | None = None
    mode: Mode = Mode.AUTO
    policy: Policy = Policy()
    storage: Storage = Storage.SHARED
    persistence: Persistence = Persistence()
    volumes: VolumeOptions = VolumeOptions()
    placement: PlacementMode = PlacementMode.CONTINUOUS
    drift_action: DriftAction = DriftAction.CORRECT
    abort: bool = False
    dry_run: bool = False  # plan only: show the plan in status, move nothing


@dataclasses.dataclass(frozen=True)
class SecretRef:
    name: str
    namespace: str | None = None


class WhenCancelled(str, enum.Enum):
    """What happens to the moves a drain started when maintenance is cleared half way."""

    ABORT = "Abort"  # stop them: the VMs stay where the abort leaves them, each running once
    FINISH = "Finish"  # let them end; only the queued ones are dropped


@dataclasses.dataclass(frozen=True)
class DrainPolicy:
    exclude: frozenset[str] = frozenset()  # domains that stay on the host (they block the drain)
    when_cancelled: WhenCancelled = WhenCancelled.ABORT
    mode: Mode = Mode.AUTO  # of the VMMigrations a drain makes for domains nobody manages


@dataclasses.dataclass(frozen=True)
class HypervisorSpec:
    name: str
    uri: str
    labels: tuple[tuple[str, str], ...] = ()
    migration_address: str | None = None
    credentials: SecretRef | None = None
    maintenance: bool = False
    max_inbound: int = 2
    max_outbound: int = 2
    drain: DrainPolicy = DrainPolicy()
    # The memory VMs may use here (rebalancing's denominator); None: the probed total.
    capacity_bytes: int | None = None

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def _shown(raw: Any) -> str:
    text = repr(raw)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}… ({len(text)} characters)"


def _where(field: str) -> str:
    return f"spec.{field}" if field else "spec"


def _enum(cls: type[enum.Enum], raw: Any, *, field: str, default: enum.Enum) -> Any:
    if raw is None:
        return default
    try:
        return cls(raw)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise SpecError(f"spec.{field} must be one of {allowed}, not {_shown(raw)}") from None


def _number(raw: Any, *, field: str, default: float) -> float:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise SpecError(f"spec.{field} must be a number, not {_shown(raw)}")
    try:
        number = float(raw)
    except OverflowError:  # an int beyond any float: a ValueError's cousin, not one
        raise SpecError(f"spec.{field} is far too large: {_shown(raw)}") from None
    # NaN compares false with everything, so a NaN timeout would silently never fire.
    if not math.isfinite(number):
        raise SpecError(f"spec.{field} must be a finite number, not {_shown(raw)}")
    return number


def _integer(raw: Any, *, field: str, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(f"spec.{field} must be an integer, not {_shown(raw)}")
    return raw


def _flag(raw: Any, *, field: str, default: bool) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise SpecError(f"spec.{field} must be true or false, not {_shown(raw)}")
    return raw


def _name(raw: Any, *, field: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw or len(raw) > 253:
        raise SpecError(f"spec.{field} must name a Hypervisor, not {_shown(raw)}")
    return raw


def _mapping(raw: Any, *, field: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{_where(field)} must be an object, not {_shown(raw)}")
    return raw


def parse_selector(raw: Any) -> Selector:
    body = _mapping(raw, field="targetSelector")
    labels = _mapping(body.get("matchLabels"), field="targetSelector.matchLabels")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise SpecError("spec.targetSelector.matchLabels must map label names to strings")
    raw_expressions = body.get("matchExpressions")
    raw_expressions = [] if raw_expressions is None else raw_expressions
    # Only a list is a list of requirements (a string or mapping would iterate too).
    if not isinstance(raw_expressions, list):
        raise SpecError("spec.targetSelector.matchExpressions must be a list, "
                        f"not {_shown(raw_expressions)}")
    expressions = []
    for index, item in enumerate(raw_expressions):
        where = f"targetSelector.matchExpressions[{index}]"
        entry = _mapping(item, field=where)
        operator = entry.get("operator")
        raw_values = entry.get("values")
        raw_values = [] if raw_values is None else raw_values
        # Same here; and a value that is not a string must not become one by str().
        if not isinstance(raw_values, list) or not all(isinstance(v, str) for v in raw_values):
            raise SpecError(f"spec.{where}.values must be a list of strings, not {_shown(raw_values)}")
        values = tuple(raw_values)
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise SpecError(f"spec.{where}.operator must be In, NotIn, Exists or DoesNotExist")
        if not isinstance(entry.get("key"), str) or not entry["key"]:
            raise SpecError(f"spec.{where}.key must be a label name")
        if (operator in ("In", "NotIn")) != bool(values):
            raise SpecError(f"spec.{where}: In and NotIn need values; Exists and DoesNotExist take none")
        expressions.append(LabelRequirement(key=entry["key"], operator=operator, values=values))
    if not labels and not expressions:
        raise SpecError("spec.targetSelector must have matchLabels or matchExpressions")
    return Selector(match_labels=tuple(sorted(labels.items())), expressions=tuple(expressions))


_POLICY_FIELDS = {
    "progress_timeout_seconds": "progressTimeoutSeconds",
    "completion_timeout_seconds_per_gib": "completionTimeoutSecondsPerGiB",
    "hard_timeout_seconds": "hardTimeoutSeconds",
    "bandwidth_mib_per_s": "bandwidthMiBPerSecond",
    "max_downtime_ms": "maxDowntimeMs",
    "parallel_connections": "parallelConnections",
}


def parse_policy(raw: Any) -> Policy:
    body = _mapping(raw, field="policy")
    base = Policy()
    try:
        return Policy(
            on_timeout=_enum(OnTimeout, body.get("onTimeout"), field="policy.onTimeout",
                             default=base.on_timeout),
            progress_timeout_seconds=_number(body.get("progressTimeoutSeconds"),
                                             field="policy.progressTimeoutSeconds",
                                             default=base.progress_timeout_seconds),
            completion_timeout_seconds_per_gib=_number(
                body.get("completionTimeoutSecondsPerGiB"),
                field="policy.completionTimeoutSecondsPerGiB",
                default=base.completion_timeout_seconds_per_gib),
            hard_timeout_seconds=_number(body.get("hardTimeoutSeconds"),
                                         field="policy.hardTimeoutSeconds",
                                         default=base.hard_timeout_seconds),
            bandwidth_mib_per_s=_integer(body.get("bandwidthMiBPerSecond"),
                                         field="policy.bandwidthMiBPerSecond",
                                         default=base.bandwidth_mib_per_s),
            max_downtime_ms=_integer(body.get("maxDowntimeMs"), field="policy.maxDowntimeMs",
                                     default=base.max_downtime_ms),
            auto_converge=_flag(body.get("autoConverge"), field="policy.autoConverge",
                                default=base.auto_converge),
            compressed=_flag(body.get("compressed"), field="policy.compressed",
                             default=base.compressed),
            parallel_connections=_integer(body.get("parallelConnections"),
                                          field="policy.parallelConnections",
                                          default=base.parallel_connections),
            peer_to_peer=_flag(body.get("peerToPeer"), field="policy.peerToPeer",
                               default=base.peer_to_peer),
            allow_unsafe=_flag(body.get("allowUnsafe"), field="policy.allowUnsafe",
                               default=base.allow_unsafe),
            allow_older_target=_flag(body.get("allowOlderTarget"), field="policy.allowOlderTarget",
                                     default=base.allow_older_target),
            escalation=_enum(Escalation, body.get("escalation"), field="policy.escalation",
                             default=base.escalation),
            over_downtime_budget=_enum(OverBudget, body.get("overDowntimeBudget"),
                                       field="policy.overDowntimeBudget",
                                       default=base.over_downtime_budget),
        )
    except ValueError as error:
        if isinstance(error, SpecError):
            raise
        # Policy names its own attribute; the user wrote the spec's name for it.
        text = str(error)
        for attribute, spec_name in _POLICY_FIELDS.items():
            if text.startswith(attribute):
                raise SpecError(f"spec.policy.{spec_name}{text[len(attribute):]}") from error
        raise SpecError(f"spec.policy: {text}") from error


def _parse_volumes(value: Any) -> VolumeOptions:
    body = _mapping(value, field="volumes")
    pool = body.get("targetPool")
    if pool is not None and (not isinstance(pool, str) or not POOL_NAME.fullmatch(pool)):
        raise SpecError(f"spec.volumes.targetPool must name a libvirt storage pool, not {_shown(pool)}")
    return VolumeOptions(target_pool=pool, delete_from_source=_flag(
        body.get("deleteFromSource"), field="volumes.deleteFromSource", default=False))


def parse_vmmigration(spec: Any) -> Desired:
    body = _mapping(spec, field="")
    domain = body.get("domain")
    if not isinstance(domain, str) or not DOMAIN_NAME.fullmatch(domain):
        raise SpecError(
            f"spec.domain must be a libvirt domain name (letters, digits, _ . + -; at most 64), "
            f"not {_shown(domain)}")
    target = _name(body.get("targetHypervisor"), field="targetHypervisor")
    selector = parse_selector(body["targetSelector"]) if body.get("targetSelector") is not None else None
    if (target is None) == (selector is None):
        raise SpecError("exactly one of spec.targetHypervisor or spec.targetSelector must be set")
    source = _name(body.get("sourceHypervisor"), field="sourceHypervisor")
    if source is not None and source == target:
        raise SpecError("spec.sourceHypervisor and spec.targetHypervisor name the same Hypervisor")
    persistence = _mapping(body.get("persistence"), field="persistence")
    volumes = _parse_volumes(body.get("volumes"))
    mode = _enum(Mode, body.get("mode"), field="mode", default=Mode.AUTO)
    storage = _enum(Storage, body.get("storage"), field="storage", default=Storage.SHARED)
    undefine = _flag(persistence.get("undefineOnSource"), field="persistence.undefineOnSource",
                     default=True)
    if body.get("volumes") is not None:
        if mode not in (Mode.OFFLINE, Mode.AUTO) or storage is Storage.SHARED:
            raise SpecError("spec.volumes applies to mode Offline (or Auto) with storage CopyAll or "
                            "CopyIncremental: only then does the operator carry the volumes")
        if volumes.delete_from_source and not undefine:
            raise SpecError("spec.volumes.deleteFromSource needs persistence.undefineOnSource true: "
                            "the source's definition would name deleted disks")
    return Desired(
        domain=domain,
        target=target,
        selector=selector,
        source=source,
        mode=mode,
        policy=parse_policy(body.get("policy")),
        storage=storage,
        persistence=Persistence(
            persist_on_target=_flag(persistence.get("persistOnTarget"),
                                    field="persistence.persistOnTarget", default=True),
            undefine_on_source=undefine,
        ),
        volumes=volumes,
        placement=_enum(PlacementMode, body.get("placement"), field="placement",
                        default=PlacementMode.CONTINUOUS),
        drift_action=_enum(DriftAction, body.get("driftAction"), field="driftAction",
                           default=DriftAction.CORRECT),
        abort=_flag(body.get("abort"), field="abort", default=False),
        dry_run=_flag(body.get("dryRun"), field="dryRun", default=False),
    )


def parse_hypervisor(*, name: str, spec: Any, labels: Mapping[str, str] | None) -> HypervisorSpec:
    body = _mapping(spec, field="")
    uri = body.get("uri")
    if not isinstance(uri, str) or not LIBVIRT_URI.fullmatch(uri):
        raise SpecError(f"spec.uri must be a libvirt URI such as qemu+tls://host/system, not {_shown(uri)}")
    ref = body.get("credentialsSecretRef")
    credentials = None
    if ref is not None:
        ref = _mapping(ref, field="credentialsSecretRef")
        if not isinstance(ref.get("name"), str) or not ref["name"]:
            raise SpecError("spec.credentialsSecretRef.name must name a Secret")
        # Unchecked, a number here reached the Secret lookup as a namespace.
        namespace = ref.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise SpecError(f"spec.credentialsSecretRef.namespace must name a namespace, "
                            f"not {_shown(namespace)}")
        credentials = SecretRef(name=ref["name"], namespace=namespace)
    address = body.get("migrationAddress")
    if address is not None and (not isinstance(address, str) or not MIGRATION_ADDRESS.fullmatch(address)):
        raise SpecError(f"spec.migrationAddress must be a host name or IP address, not {_shown(address)}")
    inbound = _integer(body.get("maxInboundMigrations"), field="maxInboundMigrations", default=2)
    outbound = _integer(body.get("maxOutboundMigrations"), field="maxOutboundMigrations", default=2)
    if inbound < 1 or outbound < 1:
        raise SpecError("spec.maxInboundMigrations and maxOutboundMigrations must be at least 1")
    capacity = _mapping(body.get("capacity"), field="capacity")
    capacity_bytes = capacity.get("memoryBytes")
    if capacity_bytes is not None and (not isinstance(capacity_bytes, int) or isinstance(capacity_bytes, bool)
                                       or capacity_bytes < 1):
        raise SpecError(f"spec.capacity.memoryBytes must be a positive byte count, not {_shown(capacity_bytes)}")
    return HypervisorSpec(
        name=name,
        uri=uri,
        labels=tuple(sorted((labels or {}).items())),
        migration_address=address,
        credentials=credentials,
        maintenance=_flag(body.get("maintenance"), field="maintenance", default=False),
        max_inbound=inbound,
        max_outbound=outbound,
        drain=_drain_policy(body.get("drain")),
        capacity_bytes=capacity_bytes,
    )


def _drain_policy(raw: Any) -> DrainPolicy:
    body = _mapping(raw, field="drain")
    exclude = body.get("exclude")
    if exclude is None:
        exclude = []
    if not isinstance(exclude, list) or not all(isinstance(d, str) and DOMAIN_NAME.fullmatch(d)
                                                for d in exclude):
        raise SpecError(f"spec.drain.exclude must list domain names, not {_shown(exclude)}")
    mode = _enum(Mode, body.get("mode"), field="drain.mode", default=Mode.AUTO)
    return DrainPolicy(
        exclude=frozenset(exclude),
        when_cancelled=_enum(WhenCancelled, body.get("whenCancelled"), field="drain.whenCancelled",
                             default=WhenCancelled.ABORT),
        mode=mode)
