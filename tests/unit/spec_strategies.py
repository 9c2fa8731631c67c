"""Strategies for VMMigration and Hypervisor specs close to the CRDs, with one field broken."""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Sequence

from hypothesis import strategies as st

from vmmigration.core.spec import (
    Desired,
    DriftAction,
    HypervisorSpec,
    PlacementMode,
    SpecError,
    parse_hypervisor,
    parse_vmmigration,
)
from vmmigration.core.model import (
    Mode,
    OnTimeout,
    Storage,
)

from .fuzzing import (
    ADDRESS_CHARACTERS,
    ALNUM,
    DOMAIN_CHARACTERS,
    Json,
    Spec,
    URI_FORBIDDEN,
    assert_readable,
    hostile_text,
    is_domain_name,
    not_a,
    not_null,
)


LOWER_ALNUM = string.ascii_lowercase + string.digits
dns_names = st.builds(lambda first, middle, last: first + middle + last,
                      st.sampled_from(LOWER_ALNUM), st.text(alphabet=LOWER_ALNUM + "-", max_size=14),
                      st.sampled_from(["", *LOWER_ALNUM]))
domain_names = st.builds(lambda first, rest: first + rest, st.sampled_from(ALNUM),
                         st.text(alphabet=sorted(DOMAIN_CHARACTERS), max_size=63))
label_keys = st.sampled_from(["zone", "rack", "vmmigration.dev/zone", "gpu", "a1"])
label_values = st.sampled_from(["", "lab", "prod", "r-1", "x9"])
expressions = st.one_of(
    st.fixed_dictionaries({"key": label_keys, "operator": st.sampled_from(["In", "NotIn"]),
                           "values": st.lists(label_values, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"key": label_keys, "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
)
selectors = st.one_of(
    st.fixed_dictionaries({"matchLabels": st.dictionaries(label_keys, label_values, min_size=1, max_size=3)},
                          optional={"matchExpressions": st.lists(expressions, max_size=3)}),
    st.fixed_dictionaries({"matchExpressions": st.lists(expressions, min_size=1, max_size=3)},
                          optional={"matchLabels": st.dictionaries(label_keys, label_values, max_size=3)}),
)
policies = st.fixed_dictionaries({}, optional={
    "onTimeout": st.sampled_from([m.value for m in OnTimeout]),
    "progressTimeoutSeconds": st.integers(1, 86400) | st.floats(1, 86400),
    "completionTimeoutSecondsPerGiB": st.integers(1, 86400) | st.floats(1, 86400),
    "hardTimeoutSeconds": st.integers(10, 604800) | st.floats(10, 604800),
    "bandwidthMiBPerSecond": st.integers(0, 1048576),
    "maxDowntimeMs": st.integers(0, 600000),
    "autoConverge": st.booleans(),
    "compressed": st.booleans(),
    "parallelConnections": st.integers(1, 64),
    "peerToPeer": st.booleans(),
    "allowUnsafe": st.booleans(),
})
persistences = st.fixed_dictionaries({}, optional={
    "persistOnTarget": st.booleans(), "undefineOnSource": st.booleans()})


def _one_target(parts: tuple[Spec, Spec]) -> Spec:
    spec, target = parts
    spec = {**spec, **target}
    if spec.get("sourceHypervisor") is not None and spec.get("sourceHypervisor") == spec.get("targetHypervisor"):
        del spec["sourceHypervisor"]  # the CRD refuses the same host twice
    return spec


vmmigration_specs: st.SearchStrategy[Spec] = st.tuples(
    st.fixed_dictionaries({"domain": domain_names}, optional={
        "sourceHypervisor": dns_names,
        "mode": st.sampled_from([m.value for m in Mode]),
        "policy": policies,
        "storage": st.sampled_from([s.value for s in Storage]),
        "persistence": persistences,
        "placement": st.sampled_from([p.value for p in PlacementMode]),
        "driftAction": st.sampled_from([d.value for d in DriftAction]),
        "abort": st.booleans(),
    }),
    st.one_of(st.fixed_dictionaries({"targetHypervisor": dns_names}),
              st.fixed_dictionaries({"targetSelector": selectors})),
).map(_one_target)

addresses = st.one_of(
    dns_names,
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda q: ".".join(map(str, q))),
    st.just("[fd00::2]"),
)
uris = st.builds(
    lambda scheme, transport, host: f"{scheme}{transport}://{host}/system",
    st.sampled_from(["qemu", "test"]),
    st.sampled_from(["", "+tcp", "+tls", "+ssh", "+unix", "+libssh", "+libssh2"]),
    st.one_of(st.just(""), dns_names, addresses),
)
hypervisor_specs: st.SearchStrategy[Spec] = st.fixed_dictionaries({"uri": uris}, optional={
    "migrationAddress": addresses,
    "credentialsSecretRef": st.fixed_dictionaries({"name": dns_names}, optional={"namespace": dns_names}),
    "maintenance": st.booleans(),
    "maxInboundMigrations": st.integers(1, 16),
    "maxOutboundMigrations": st.integers(1, 16),
})


# ---- one field broken at a time --------------------------------------------------

Breaker = Callable[[Spec, Json], Spec]


def put(path: str) -> Breaker:
    """Set one dotted path in a copy of the spec (creating objects on the way)."""
    def apply(spec: Spec, value: Json) -> Spec:
        spec = _copy(spec)
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
        return spec
    return apply


def _copy(value: Json) -> Json:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def pinned(spec: Spec, value: Json) -> Spec:
    spec = {k: v for k, v in _copy(spec).items() if k != "targetSelector"}
    spec["targetHypervisor"] = value
    if spec.get("sourceHypervisor") == value:
        del spec["sourceHypervisor"]
    return spec


def selecting(change: Callable[[Spec], None]) -> Callable[[Spec, Json], Spec]:
    """Replace the target with a well-formed selector, then break part of it."""
    def apply(spec: Spec, value: Json) -> Spec:
        spec = {k: v for k, v in _copy(spec).items() if k != "targetHypervisor"}
        selector = {"matchLabels": {"zone": "lab"},
                    "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}]}
        spec["targetSelector"] = selector
        change({"selector": selector, "value": value})
        return spec
    return apply


def _set_expression(field: str) -> Callable[[Spec], None]:
    def change(parts: Spec) -> None:
        parts["selector"]["matchExpressions"][0][field] = parts["value"]
    return change


def _exists_with_values(parts: Spec) -> None:
    parts["selector"]["matchExpressions"][0] = {"key": "rack", "operator": "Exists",
                                                "values": parts["value"]}


def _in_without_values(parts: Spec) -> None:
    parts["selector"]["matchExpressions"][0] = {"key": "rack", "operator": parts["value"]}


def _set_selector(field: str) -> Callable[[Spec], None]:
    def change(parts: Spec) -> None:
        parts["selector"][field] = parts["value"]
    return change


def _set_label(parts: Spec) -> None:
    parts["selector"]["matchLabels"]["zone"] = parts["value"]


def selector_of(spec: Spec, value: Json) -> Spec:
    """The target given by a selector, which is this value."""
    return {**{k: v for k, v in _copy(spec).items() if k != "targetHypervisor"}, "targetSelector": value}


def both_targets(spec: Spec, value: Json) -> Spec:
    return {**_copy(spec), "targetHypervisor": "kvm-b", "targetSelector": {"matchLabels": {"zone": "lab"}}}


def neither_target(spec: Spec, value: Json) -> Spec:
    return {k: v for k, v in _copy(spec).items() if k not in ("targetHypervisor", "targetSelector")}


def same_source_and_target(spec: Spec, value: Json) -> Spec:
    return {**pinned(spec, "kvm-b"), "sourceHypervisor": "kvm-b"}


def enum_values_other_than(*allowed: str) -> st.SearchStrategy[Json]:
    return st.one_of(hostile_text.filter(lambda v: v not in allowed), not_a(str))


bad_seconds = st.one_of(
    not_a(int, float),
    st.floats(max_value=-1e-9) | st.integers(max_value=-1),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**400]),
)
bad_counts = st.one_of(not_a(int), st.integers(max_value=-1), st.floats(allow_nan=True))
bad_flags = not_a(bool)
bad_names = st.one_of(not_a(str), st.just(""), st.text(min_size=254, max_size=300))

# (what is broken, how, the bad values, what the message must name)
VMMIGRATION_BREAKS: list[tuple[str, Breaker, st.SearchStrategy[Json], tuple[str, ...]]] = [
    ("domain", put("domain"), st.one_of(hostile_text, not_null).filter(lambda v: not is_domain_name(v)),
     ("spec.domain",)),
    ("targetHypervisor", pinned, bad_names, ("spec.targetHypervisor",)),
    ("sourceHypervisor", put("sourceHypervisor"), bad_names, ("spec.sourceHypervisor",)),
    ("both targets", both_targets, st.none(), ("spec.targetHypervisor", "spec.targetSelector")),
    ("neither target", neither_target, st.none(), ("spec.targetHypervisor", "spec.targetSelector")),
    ("same source and target", same_source_and_target, st.none(), ("spec.sourceHypervisor",)),
    ("mode", put("mode"), enum_values_other_than(*[m.value for m in Mode]), ("spec.mode",)),
    ("storage", put("storage"), enum_values_other_than(*[s.value for s in Storage]), ("spec.storage",)),
    ("placement", put("placement"), enum_values_other_than(*[p.value for p in PlacementMode]),
     ("spec.placement",)),
    ("driftAction", put("driftAction"), enum_values_other_than(*[d.value for d in DriftAction]),
     ("spec.driftAction",)),
    ("abort", put("abort"), bad_flags, ("spec.abort",)),
    ("policy", put("policy"), not_a(dict), ("spec.policy",)),
    ("policy.onTimeout", put("policy.onTimeout"), enum_values_other_than(*[o.value for o in OnTimeout]),
     ("spec.policy.onTimeout",)),
    *[(f"policy.{name}", put(f"policy.{name}"), bad_seconds, (f"spec.policy.{name}",))
      for name in ("progressTimeoutSeconds", "completionTimeoutSecondsPerGiB", "hardTimeoutSeconds")],
    *[(f"policy.{name}", put(f"policy.{name}"), bad_counts, (f"spec.policy.{name}",))
      for name in ("bandwidthMiBPerSecond", "maxDowntimeMs")],
    ("policy.parallelConnections", put("policy.parallelConnections"),
     st.one_of(bad_counts, st.integers(min_value=65), st.just(0)), ("spec.policy.parallelConnections",)),
    *[(f"policy.{name}", put(f"policy.{name}"), bad_flags, (f"spec.policy.{name}",))
      for name in ("autoConverge", "compressed", "peerToPeer", "allowUnsafe")],
    ("persistence", put("persistence"), not_a(dict), ("spec.persistence",)),
    *[(f"persistence.{name}", put(f"persistence.{name}"), bad_flags, (f"spec.persistence.{name}",))
      for name in ("persistOnTarget", "undefineOnSource")],
    ("targetSelector", selector_of, not_a(dict), ("spec.targetSelector",)),
    ("targetSelector.matchLabels", selecting(_set_selector("matchLabels")), not_a(dict),
     ("spec.targetSelector.matchLabels",)),
    ("targetSelector.matchLabels value", selecting(_set_label), not_a(str),
     ("spec.targetSelector.matchLabels",)),
    ("targetSelector.matchExpressions", selecting(_set_selector("matchExpressions")), not_a(list),
     ("spec.targetSelector.matchExpressions",)),
    ("a matchExpressions item", selecting(lambda p: p["selector"].__setitem__(
        "matchExpressions", [p["value"]])), not_a(dict), ("spec.targetSelector.matchExpressions[0]",)),
    ("an expression's operator", selecting(_set_expression("operator")),
     enum_values_other_than("In", "NotIn", "Exists", "DoesNotExist"),
     ("spec.targetSelector.matchExpressions[0].operator",)),
    ("an expression's key", selecting(_set_expression("key")), st.one_of(not_a(str), st.just("")),
     ("spec.targetSelector.matchExpressions[0].key",)),
    ("an expression's values", selecting(_set_expression("values")),
     st.one_of(not_a(list), st.lists(not_a(str), min_size=1, max_size=3)),
     ("spec.targetSelector.matchExpressions[0]",)),
    ("Exists with values", selecting(_exists_with_values), st.lists(label_values, min_size=1, max_size=2),
     ("spec.targetSelector.matchExpressions[0]",)),
    ("In without values", selecting(_in_without_values), st.sampled_from(["In", "NotIn"]),
     ("spec.targetSelector.matchExpressions[0]",)),
]

HYPERVISOR_BREAKS: list[tuple[str, Breaker, st.SearchStrategy[Json], tuple[str, ...]]] = [
    ("uri", put("uri"), st.one_of(
        not_a(str), hostile_text,
        st.tuples(uris, st.sampled_from(sorted(URI_FORBIDDEN)), hostile_text).map("".join),
        st.sampled_from(["http://x", "qemu:/system", "ssh://h", "QEMU://h", "qemu+TLS://h/"]),
    ).filter(lambda v: not (isinstance(v, str) and v.startswith(("qemu", "test")) and "://" in v
                            and not URI_FORBIDDEN & set(v) and v.split("://")[0].replace("+", "").isalnum()
                            and v.split("://")[0] == v.split("://")[0].lower())),
     ("spec.uri",)),
    ("migrationAddress", put("migrationAddress"), st.one_of(not_a(str), hostile_text).filter(
        lambda v: not (isinstance(v, str) and v and set(v) <= ADDRESS_CHARACTERS)), ("spec.migrationAddress",)),
    ("credentialsSecretRef", put("credentialsSecretRef"), not_a(dict), ("spec.credentialsSecretRef",)),
    ("credentialsSecretRef.name", put("credentialsSecretRef.name"), st.one_of(not_a(str), st.just("")),
     ("spec.credentialsSecretRef.name",)),
    ("credentialsSecretRef.namespace",
     lambda spec, value: {**_copy(spec), "credentialsSecretRef": {"name": "tls", "namespace": value}},
     st.one_of(not_a(str), st.just("")), ("spec.credentialsSecretRef.namespace",)),
    ("maintenance", put("maintenance"), bad_flags, ("spec.maintenance",)),
    ("maxInboundMigrations", put("maxInboundMigrations"), st.one_of(not_a(int), st.integers(max_value=0)),
     ("maxInboundMigrations",)),
    ("maxOutboundMigrations", put("maxOutboundMigrations"), st.one_of(not_a(int), st.integers(max_value=0)),
     ("maxOutboundMigrations",)),
]


@st.composite
def broken(draw: st.DrawFn, specs: st.SearchStrategy[Spec],
           breaks: Sequence[tuple[str, Breaker, st.SearchStrategy[Json], tuple[str, ...]]],
           ) -> tuple[str, Spec, tuple[str, ...]]:
    what, breaker, bad, names = draw(st.sampled_from(breaks))
    return what, breaker(draw(specs), draw(bad)), names


# ---- what a successful parse must look like ----------------------------------------


def assert_well_typed(desired: Desired) -> None:
    assert is_domain_name(desired.domain)
    assert (desired.target is None) != (desired.selector is None)
    for name in (desired.target, desired.source):
        assert name is None or (isinstance(name, str) and 1 <= len(name) <= 253)
    assert desired.source is None or desired.source != desired.target
    if desired.selector is not None:
        assert desired.selector.match_labels or desired.selector.expressions
        for key, value in desired.selector.match_labels:
            assert isinstance(key, str) and isinstance(value, str)
        for requirement in desired.selector.expressions:
            assert requirement.key and isinstance(requirement.key, str)
            assert requirement.operator in ("In", "NotIn", "Exists", "DoesNotExist")
            assert all(isinstance(v, str) for v in requirement.values)
            assert bool(requirement.values) == (requirement.operator in ("In", "NotIn"))
    assert isinstance(desired.mode, Mode) and isinstance(desired.storage, Storage)
    assert isinstance(desired.placement, PlacementMode) and isinstance(desired.drift_action, DriftAction)
    assert isinstance(desired.policy.on_timeout, OnTimeout)
    policy = desired.policy
    for seconds in (policy.progress_timeout_seconds, policy.completion_timeout_seconds_per_gib,
                    policy.hard_timeout_seconds):
        assert isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0
    for count in (policy.bandwidth_mib_per_s, policy.max_downtime_ms):
        assert type(count) is int and count >= 0
    assert type(policy.parallel_connections) is int and 1 <= policy.parallel_connections <= 64
    for flag in (policy.auto_converge, policy.compressed, policy.peer_to_peer, policy.allow_unsafe,
                 desired.persistence.persist_on_target, desired.persistence.undefine_on_source,
                 desired.abort):
        assert type(flag) is bool


def assert_hypervisor_well_typed(spec: HypervisorSpec) -> None:
    assert isinstance(spec.uri, str) and spec.uri.startswith(("qemu", "test"))
    assert not URI_FORBIDDEN & set(spec.uri), f"shell or XML characters in {spec.uri!r}"
    assert spec.migration_address is None or (
        spec.migration_address and set(spec.migration_address) <= ADDRESS_CHARACTERS)
    if spec.credentials is not None:
        assert isinstance(spec.credentials.name, str) and spec.credentials.name
        assert spec.credentials.namespace is None or (
            isinstance(spec.credentials.namespace, str) and spec.credentials.namespace)
    assert type(spec.maintenance) is bool
    assert type(spec.max_inbound) is int and spec.max_inbound >= 1
    assert type(spec.max_outbound) is int and spec.max_outbound >= 1


def parse_or_refuse(spec: Json) -> Desired | SpecError:
    """The only two outcomes allowed: a valid Desired, or a readable SpecError."""
    try:
        desired = parse_vmmigration(spec)
    except SpecError as error:
        assert_readable(error)
        return error
    assert_well_typed(desired)
    return desired


def parse_hypervisor_or_refuse(spec: Json) -> HypervisorSpec | SpecError:
    try:
        parsed = parse_hypervisor(name="kvm-a", spec=spec, labels={"zone": "lab"})
    except SpecError as error:
        assert_readable(error)
        return error
    assert_hypervisor_well_typed(parsed)
    return parsed
