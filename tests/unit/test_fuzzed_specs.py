"""Hostile input, fuzzed: spec parsing and the planner never crash, and a bad spec
becomes a clear condition naming its field.

Specs come two ways: close to the CRDs' schemas (crds/*.yaml) with one field
broken on purpose, so the error must name exactly that field; and as arbitrary
JSON trees, where the only promise is a SpecError instead of any other
exception. The planner (whereabouts, choose_target, admit, decide) is fed
generated probes, statuses and in-flight work and must keep its invariants.
Hypothesis runs under the deterministic "ci" profile from conftest.py.
"""

from __future__ import annotations

import asyncio
import math
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from vmmigration.core import status
from vmmigration.core.spec import (
    Desired,
    DriftAction,
    HypervisorSpec,
    Phase,
    PlacementMode,
    Selector,
    SpecError,
    parse_hypervisor,
    parse_selector,
    parse_vmmigration,
)
from vmmigration.core.model import (
    DomainSummary,
    HostReport,
    Mode,
    OnTimeout,
    PauseReason,
    PowerState,
    Storage,
)
from vmmigration.core.location import is_incoming
from vmmigration.core.memory import Attempt, Condition, Memory
from vmmigration.core.reconcile import (
    Abort,
    Block,
    Idle,
    Migrate,
    Placed,
    Recover,
    ReportDrift,
    Wait,
    backoff_seconds,
    decide,
)
from vmmigration.core.scheduling import Claim, HypervisorView, InFlight, admit, choose_target, whereabouts

from .test_runtime import NeverStopped, runtime_with

Json = Any
Spec = dict[str, Any]

# A SpecError ends up in a condition and in `kubectl describe`: one printable
# line, short enough to read.
LONGEST_MESSAGE = 400

# ---- the rules, stated here independently of desired.py's regexes -------------

ALNUM = string.ascii_letters + string.digits
DOMAIN_CHARACTERS = frozenset(ALNUM + "_.+-")
# What the Hypervisor CRD keeps out of a URI so it never smuggles shell or XML.
URI_FORBIDDEN = frozenset(" \t\r\n\v\f'\"`;$|<>\\")
ADDRESS_CHARACTERS = frozenset(ALNUM + ".:[]-")


def is_domain_name(text: object) -> bool:
    return (isinstance(text, str) and 1 <= len(text) <= 64 and text[0] in ALNUM
            and all(c in DOMAIN_CHARACTERS for c in text))


def assert_readable(error: SpecError, *names: str) -> None:
    message = str(error)
    assert message, "a SpecError must say something"
    assert len(message) <= LONGEST_MESSAGE, f"{len(message)} characters: {message[:120]}…"
    assert message.isprintable(), f"not one printable line: {message!r}"
    assert "spec" in message, message
    for name in names:
        assert name in message, f"{name!r} not named in {message!r}"


# ---- strategies: leaves and arbitrary JSON ------------------------------------

HOSTILE_TEXT = [
    "a; rm -rf /", "$(reboot)", "`id`", "web-01\n", "web-01\r\n", "\nweb-01", "web-01\x00",
    "../../etc/passwd", "/etc/passwd", "web 01", "-rf", "<domain type='kvm'/>", "web-01|nc",
    "web-01&&id", "'; DROP TABLE", "ｗｅｂ", "web\u200b01", "web\u202e10", "é", "", " ",
    "x" * 65, "x" * 254, "y" * 3000, "\ud800", "Auto ", "auto", "LIVE", "true", "1",
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=80),
    st.text(alphabet=sorted(DOMAIN_CHARACTERS | set(";$`|\n/ \\'\"<>&")), max_size=70),
)
EXTREME_NUMBERS = [0, -1, 1, 64, 65, 2**31, 2**63, 2**64, 10**400, -(10**400), 0.5, -0.0, 1e308,
                   float("inf"), float("-inf"), float("nan")]
numbers = st.one_of(st.integers(), st.floats(), st.sampled_from(EXTREME_NUMBERS))
json_leaves = st.one_of(st.none(), st.booleans(), numbers, hostile_text)
json_trees = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# Anything but null (null means "unset" and takes the default).
not_null = json_trees.filter(lambda value: value is not None)


def not_a(*kinds: type) -> st.SearchStrategy[Json]:
    """A JSON value of none of these types (bool is never an int here, as in JSON)."""
    def wrong(value: Json) -> bool:
        if isinstance(value, bool):
            return bool not in kinds
        return not isinstance(value, kinds)
    return not_null.filter(wrong)


# ---- strategies: specs close to the CRDs --------------------------------------

# Built from alphabets rather than regexes: as valid, and several times cheaper to draw.
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


# ==== VMMigration specs ==========================================================


class TestAVMMigrationSpec:
    """Parsing a VMMigration spec yields a valid Desired or a SpecError, nothing else."""

    @given(vmmigration_specs)
    def test_every_spec_the_crd_admits_parses_to_the_same_values(self, spec: Spec) -> None:
        desired = parse_or_refuse(spec)
        assert isinstance(desired, Desired), desired
        assert desired.domain == spec["domain"]
        assert desired.target == spec.get("targetHypervisor")
        assert desired.source == spec.get("sourceHypervisor")
        assert desired.mode.value == spec.get("mode", "Auto")
        for field, attribute in (("bandwidthMiBPerSecond", "bandwidth_mib_per_s"),
                                 ("hardTimeoutSeconds", "hard_timeout_seconds"),
                                 ("parallelConnections", "parallel_connections")):
            if field in spec.get("policy", {}):
                assert getattr(desired.policy, attribute) == spec["policy"][field]

    @given(broken(vmmigration_specs, VMMIGRATION_BREAKS))
    def test_one_broken_field_is_refused_with_that_field_named(
            self, case: tuple[str, Spec, tuple[str, ...]]) -> None:
        what, spec, names = case
        event(what)
        with pytest.raises(SpecError) as refused:
            parse_vmmigration(spec)
        assert_readable(refused.value, *names)

    @given(json_trees)
    def test_any_json_at_all_is_parsed_or_refused_never_crashes(self, spec: Json) -> None:
        parse_or_refuse(spec)

    @given(vmmigration_specs, st.dictionaries(
        st.sampled_from(["domain", "targetHypervisor", "targetSelector", "sourceHypervisor", "mode",
                         "policy", "storage", "persistence", "placement", "driftAction", "abort"]),
        json_trees, min_size=1, max_size=3))
    def test_arbitrary_json_in_known_fields_is_parsed_or_refused(self, spec: Spec, junk: Spec) -> None:
        parse_or_refuse({**spec, **junk})

    @given(st.one_of(json_trees, st.fixed_dictionaries({}, optional={
        "matchLabels": json_trees, "matchExpressions": st.lists(json_trees, max_size=3) | json_trees})))
    def test_an_arbitrary_selector_is_parsed_or_refused(self, raw: Json) -> None:
        try:
            selector = parse_selector(raw)
        except SpecError as error:
            assert_readable(error, "spec.targetSelector")
            return
        assert selector.match_labels or selector.expressions
        assert selector.matches({}) in (True, False)  # usable, not just constructed

    @given(st.sampled_from(HOSTILE_TEXT) | hostile_text)
    def test_a_domain_name_with_shell_path_or_unicode_tricks_never_gets_through(self, name: str) -> None:
        outcome = parse_or_refuse({"domain": name, "targetHypervisor": "kvm-b"})
        assert isinstance(outcome, Desired) == is_domain_name(name), outcome


# ==== Hypervisor specs ===========================================================


class TestAHypervisorSpec:
    """Parsing a Hypervisor spec yields a valid HypervisorSpec or a SpecError, nothing else."""

    @given(hypervisor_specs)
    def test_every_spec_the_crd_admits_parses(self, spec: Spec) -> None:
        parsed = parse_hypervisor_or_refuse(spec)
        assert isinstance(parsed, HypervisorSpec), parsed
        assert parsed.uri == spec["uri"] and parsed.label_map == {"zone": "lab"}

    @given(broken(hypervisor_specs, HYPERVISOR_BREAKS))
    def test_one_broken_field_is_refused_with_that_field_named(
            self, case: tuple[str, Spec, tuple[str, ...]]) -> None:
        what, spec, names = case
        with pytest.raises(SpecError) as refused:
            parse_hypervisor(name="kvm-a", spec=spec, labels=None)
        assert_readable(refused.value, *names)

    @given(st.one_of(json_trees, st.tuples(hypervisor_specs, st.dictionaries(
        st.sampled_from(["uri", "migrationAddress", "credentialsSecretRef", "maintenance",
                         "maxInboundMigrations", "maxOutboundMigrations"]),
        json_trees, min_size=1, max_size=3)).map(lambda parts: {**parts[0], **parts[1]})))
    def test_any_json_is_parsed_or_refused_and_never_lets_shell_characters_into_a_uri(
            self, spec: Json) -> None:
        parse_hypervisor_or_refuse(spec)


# ==== the planner ================================================================

HOSTS = ("kvm-a", "kvm-b", "kvm-c", "kvm-d")
VM = "web-01"  # the VM every planner scenario is about
DOMAINS = (VM, "db-01")
host_names = st.sampled_from(HOSTS)
maybe_host = st.none() | st.sampled_from((*HOSTS, "kvm-gone", ""))


def mostly(usual: Any, *rare: Any) -> st.SearchStrategy[Any]:
    """The usual value most of the time. Drawn evenly, hosts would be unreachable
    and VMs paused so often that decide() would hardly ever get as far as a move,
    which is where most of its rules are. (sampled_from also shrinks towards the
    usual value, the first.)"""
    return st.sampled_from([usual] * 7 + list(rare))


memory_sizes = mostly(2**27, -1, 0, 2**20, 2**33, 2**63, 10**30) | st.integers(-(2**20), 2**44)
free_memory = mostly(2**33, -1, 0, 2**26, 2**63) | st.integers(-(2**20), 2**44)


def summaries(name: str | st.SearchStrategy[str]) -> st.SearchStrategy[DomainSummary]:
    return st.builds(
        DomainSummary, name=name if isinstance(name, st.SearchStrategy) else st.just(name),
        uuid=st.just("u"), state=mostly(PowerState.RUNNING, *PowerState),
        pause_reason=mostly(PauseReason.NONE, *PauseReason), memory_bytes=memory_sizes,
        persistent=st.booleans())


reports = st.builds(
    HostReport, reachable=st.booleans(), probed_at=st.floats(0, 2e9), error=hostile_text,
    memory_free_bytes=free_memory, domains=st.lists(summaries(st.sampled_from(DOMAINS)), max_size=3).map(tuple))
planner_labels = mostly({"zone": "lab"}, {}, {"zone": "prod"}, {"rack": "lab"}, {"zone": "lab", "rack": "prod"})


# Built once: a strategy made inside a composite is validated again on every draw,
# which cost more than the planner itself.
vm_copies = summaries(VM)
other_domains = st.lists(summaries(mostly("db-01", VM)), max_size=2)  # rarely a second copy of the VM
usually_true = mostly(True, False)
usually_false = mostly(False, True)
probe_errors = st.sampled_from(["", "connection refused", "auth failed\n$(x)", "é" * 600])
limits = st.integers(1, 3)


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, HypervisorView]:
    """Two to four hosts; usually the first holds the VM, sometimes none or several do."""
    names = draw(st.lists(host_names, unique=True, min_size=2, max_size=len(HOSTS)))
    home = names[0] if draw(usually_true) else None
    views = {}
    for name in names:
        found = draw(other_domains) + ([draw(vm_copies)] if name == home else [])
        report = HostReport(
            reachable=draw(usually_true), probed_at=0.0, error=draw(probe_errors),
            memory_free_bytes=draw(free_memory), domains=tuple(found),
        ) if draw(usually_true) else None
        views[name] = HypervisorView(
            spec=HypervisorSpec(name=name, uri=f"test:///{name}",
                                labels=tuple(sorted(draw(planner_labels).items())),
                                maintenance=draw(usually_false),
                                max_inbound=draw(limits), max_outbound=draw(limits)),
            report=report)
    return views


planner_expressions = st.lists(st.one_of(
    st.fixed_dictionaries({"key": st.sampled_from(["zone", "rack"]),
                           "operator": st.sampled_from(["In", "NotIn"]),
                           "values": st.lists(st.sampled_from(["lab", "prod"]), min_size=1, max_size=2)}),
    st.fixed_dictionaries({"key": st.sampled_from(["zone", "rack"]),
                           "operator": st.sampled_from(["Exists", "DoesNotExist"])})), min_size=1, max_size=2)
planner_selectors = st.one_of(
    st.just({"matchLabels": {"zone": "lab"}}),
    st.fixed_dictionaries({"matchLabels": st.dictionaries(
        st.sampled_from(["zone", "rack"]), st.sampled_from(["lab", "prod"]), min_size=1, max_size=2)}),
    st.fixed_dictionaries({"matchExpressions": planner_expressions}),
).map(parse_selector)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Desired, dict[str, HypervisorView]]:
    """A fleet, and a VMMigration whose pinned target is usually another of its hosts."""
    views = draw(fleets())
    by_name = draw(st.booleans())  # targetHypervisor, or targetSelector
    desired = Desired(
        domain=VM,
        target=draw(st.sampled_from([*list(views)[1:] * 3, *views, "kvm-gone"])) if by_name else None,
        selector=None if by_name else draw(planner_selectors),
        source=draw(mostly(None, *HOSTS)),
        placement=draw(mostly(PlacementMode.CONTINUOUS, PlacementMode.ONCE)),
        drift_action=draw(mostly(DriftAction.CORRECT, DriftAction.REPORT)),
        abort=draw(mostly(False, True)),
    )
    return desired, views


timestamps = st.sampled_from(["", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "not a time"])
memories = st.builds(
    Memory, phase=mostly(None, *Phase),
    attempt=st.none() | st.builds(Attempt, source=host_names, target=host_names),
    chosen_target=maybe_host,
    next_attempt_at=mostly(None, 0.0, 1e12, -1.0, float("nan"), float("inf")),
    attempts=mostly(0, 1, 7, 10**6),
    drifted=mostly(None, Condition("Drifted", True, "NotOnTarget", "elsewhere")),
    blocked=mostly(None, Condition("Blocked", True, "InsufficientMemory", "too little")))
avoids = st.one_of(*[st.just({})] * 3, st.dictionaries(host_names, hostile_text, max_size=2))
keys = st.sampled_from(["default/web", "default/other", "lab/db"])
claims = st.lists(st.builds(Claim, key=keys, domain=mostly("db-01", VM), created=timestamps),
                  max_size=2)
flights = st.lists(st.builds(InFlight, key=keys, source=host_names, target=host_names), max_size=5)
KINDS = (Recover, Migrate, Placed, Wait, Block, Abort, ReportDrift, Idle)


def holders(domain: str, views: Mapping[str, HypervisorView]) -> dict[str, list[DomainSummary]]:
    """Reachable hosts whose probe lists the domain, with those entries."""
    found: dict[str, list[DomainSummary]] = {}
    for name, view in views.items():
        if view.report is not None and view.report.reachable:
            entries = [d for d in view.report.domains if d.name == domain]
            if entries:
                found[name] = entries
    return found


def running_on(domain: str, views: Mapping[str, HypervisorView]) -> list[str]:
    return [name for name, entries in holders(domain, views).items()
            for d in entries if d.active and not is_incoming(d)]


def eligible_target(view: HypervisorView) -> bool:
    return view.reachable and not view.spec.maintenance


class TestThePlanner:
    """decide() and the scheduling it uses always answer, and never break their rules."""

    # More examples than the profile's: a move is the rarest outcome and the richest in rules.
    @settings(max_examples=250)
    @given(scenarios(), memories, claims, flights, st.floats(), timestamps, avoids)
    def test_decide_returns_one_known_action_that_keeps_every_rule(
            self, scenario: tuple[Desired, dict[str, HypervisorView]], memory: Memory,
            rivals: list[Claim], in_flight: list[InFlight], now: float, created: str,
            avoid: dict[str, str]) -> None:
        desired, views = scenario
        key = "default/web"
        action = decide(key=key, created=created, desired=desired, memory=memory, hypervisors=views,
                        claims=rivals, in_flight=in_flight, now=now, avoid=avoid)
        assert isinstance(action, KINDS), action
        event(f"{type(action).__name__} {getattr(action, 'reason', '')}".strip())  # --hypothesis-show-statistics
        assert action == decide(key=key, created=created, desired=desired, memory=memory,
                                hypervisors=views, claims=rivals, in_flight=in_flight, now=now,
                                avoid=avoid)

        remembered = memory.phase is Phase.MIGRATING and memory.attempt is not None
        assert isinstance(action, Recover) == remembered, "a started migration is recovered first"
        if remembered:
            return
        older = any(c.domain == desired.domain and c.key != key and (c.created, c.key) < (created, key)
                    for c in rivals)
        assert (isinstance(action, Block) and action.reason == "Conflict") == older

        seen = holders(desired.domain, views)
        placed_before = memory.phase is Phase.PLACED or memory.drifted is not None
        match action:
            case Block(reason=reason, message=message) | Wait(reason=reason, message=message):
                assert reason.isidentifier() and reason[0].isupper() and message
            case Idle():
                assert desired.placement is PlacementMode.ONCE and memory.phase is Phase.PLACED
            case Abort(current=current):
                assert desired.abort and current in seen
            case ReportDrift(current=current, target=target):
                assert desired.drift_action is DriftAction.REPORT and placed_before
                assert current in seen and current != target
            case Placed(current=current):
                assert current in seen
                if desired.target is not None:
                    assert current == desired.target
                else:
                    assert desired.selector is not None
                    assert desired.selector.matches(views[current].spec.label_map)
                    assert not views[current].spec.maintenance
            case Migrate(source=source, target=target, drift=drift):
                assert source != target, "never migrates a VM onto the host it is on"
                assert source in seen, "the source is where a probe found the VM"
                assert len(running_on(desired.domain, views)) <= 1, "never moves a VM running twice"
                assert target in views and eligible_target(views[target]), (
                    "never onto an unknown, unreachable or maintenance host")
                assert not desired.abort and drift == placed_before
                assert not (placed_before and desired.drift_action is DriftAction.REPORT)
                if desired.target is not None:
                    assert target == desired.target
                else:
                    assert desired.selector is not None
                    assert desired.selector.matches(views[target].spec.label_map)
                    assert target not in avoid, "a host that refused the VM is skipped"
                    needs = min(d.memory_bytes for d in seen[source])
                    report = views[target].report
                    assert report is not None and report.memory_free_bytes >= needs
                if desired.source is not None and not placed_before:
                    assert source == desired.source
                waiting = memory.next_attempt_at is not None and now < memory.next_attempt_at
                assert not (waiting and (desired.target is not None or target == memory.chosen_target)), (
                    "no retry inside the backoff")

    @given(planner_selectors, fleets(), memory_sizes, maybe_host, maybe_host, flights,
           st.dictionaries(host_names, hostile_text, max_size=2))
    def test_choose_target_picks_only_an_eligible_host_or_says_why_not(
            self, selector: Selector, views: dict[str, HypervisorView], needs: int, current: str | None,
            preferred: str | None, in_flight: list[InFlight], avoid: dict[str, str]) -> None:
        chosen, why = choose_target(selector=selector, hypervisors=views, memory_bytes=needs,
                                    current=current, preferred=preferred, in_flight=in_flight,
                                    avoid=avoid)
        if chosen is None:
            assert why
            return
        view = views[chosen]
        assert why == "" and chosen != current and chosen not in avoid
        assert selector.matches(view.spec.label_map) and eligible_target(view)
        assert view.report is not None and view.report.memory_free_bytes >= needs
        if preferred is not None and preferred in views and preferred != chosen:
            again, _ = choose_target(selector=selector, hypervisors=views, memory_bytes=needs,
                                     current=current, preferred=chosen, in_flight=in_flight, avoid=avoid)
            assert again == chosen, "a preferred host stays chosen while it is eligible"

    @given(fleets(), st.lists(st.tuples(host_names, host_names), max_size=12), st.integers(-1, 6))
    def test_admission_never_lets_more_run_than_the_limits_allow(
            self, views: dict[str, HypervisorView], requests: list[tuple[str, str]],
            cluster_limit: int) -> None:
        running: list[InFlight] = []
        for index, (source, target) in enumerate(requests):
            why = admit(source=source, target=target, in_flight=running, hypervisors=views,
                        cluster_limit=cluster_limit)
            if why is None:
                running.append(InFlight(key=f"default/vm-{index}", source=source, target=target))
            else:
                assert why and why.isprintable()
        assert len(running) <= max(0, cluster_limit)
        for name, view in views.items():
            assert sum(1 for m in running if m.source == name) <= view.spec.max_outbound
            assert sum(1 for m in running if m.target == name) <= view.spec.max_inbound

    @given(st.sampled_from(DOMAINS), fleets())
    def test_whereabouts_sorts_every_host_it_can_see_and_names_those_it_cannot(
            self, domain: str, views: dict[str, HypervisorView]) -> None:
        where = whereabouts(domain, views)
        assert set(where.unknown) == {n for n, v in views.items() if not v.reachable}
        seen = holders(domain, views)
        for name in (*where.active, *where.incoming, *where.defined):
            assert name in seen
        assert sorted(set(where.active)) == sorted(set(running_on(domain, views)))
        assert where.summary is None or where.summary.name == domain

    @given(st.integers(min_value=-5, max_value=10**6) | st.sampled_from([10**9, 2**64]),
           st.floats(0.001, 3600), st.floats(0.001, 86400))
    def test_backoff_stays_between_zero_and_the_cap_for_any_failure_count(
            self, failures: int, base: float, cap: float) -> None:
        delay = backoff_seconds(failures=failures, base=base, cap=cap)
        assert 0 < delay <= cap
        assert backoff_seconds(failures=failures + 1, base=base, cap=cap) >= delay


# ==== statuses read back as stored =============================================

status_fields = st.sampled_from(["conditions", "phase", "attempt", "attempts", "targetHypervisor",
                                 "nextAttemptTime", "memoryFreeBytes", "lastProbeTime", "domains"])
stored_statuses = st.dictionaries(status_fields | st.text(max_size=8), json_trees, max_size=5)
wanted_conditions = st.dictionaries(
    st.sampled_from(status.CONDITION_TYPES),
    st.tuples(st.booleans(), st.from_regex(r"[A-Z][A-Za-z]{0,12}", fullmatch=True), hostile_text),
    max_size=3).map(lambda by_type: tuple(Condition(kind, *rest) for kind, rest in by_type.items()))


def apply_merge_patch(target: Json, patch: Json) -> Json:
    """RFC 7386, to check that a patch really turns the old status into the new."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = apply_merge_patch(result.get(name), value)
    return result


def without_nulls(value: Json) -> Json:
    # A merge patch cannot write null into an object (null deletes), so a
    # stored status's nulls inside changed objects are not comparable.
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


class TestAStoredStatus:
    """A status edited by hand, or written by an older version, never crashes the status code."""

    @given(stored_statuses, st.sampled_from(Phase), wanted_conditions, st.integers(0, 2**40))
    def test_compose_always_writes_all_five_conditions_and_a_patch_that_gets_there(
            self, previous: Spec, phase: Phase, wanted: tuple[Condition, ...],
            generation: int) -> None:
        new = status.compose(previous=previous, phase=phase, generation=generation, now=1000.0,
                             wanted=wanted)
        assert [c["type"] for c in new["conditions"]] == list(status.CONDITION_TYPES)
        for condition in new["conditions"]:
            assert condition["status"] in ("True", "False")
            assert isinstance(condition["lastTransitionTime"], str)
        patch = status.merge_patch(previous, new)
        assert without_nulls(apply_merge_patch(previous, patch)) == without_nulls(new)

    @given(stored_statuses, reports, st.integers(0, 10))
    def test_a_hypervisor_status_is_computed_whatever_was_stored_before(
            self, previous: Spec, report: HostReport, inbound: int) -> None:
        new = status.hypervisor(previous=previous, report=report, generation=1, now=1000.0,
                                inbound=inbound, outbound=0)
        (reachable,) = new["conditions"]
        assert reachable["type"] == "Reachable" and isinstance(reachable["lastTransitionTime"], str)

    @given(json_trees)
    def test_a_stored_timestamp_of_any_shape_reads_as_a_time_or_as_none(self, stored: Json) -> None:
        parsed = status.parse_timestamp(stored)
        assert parsed is None or math.isfinite(parsed)


# ==== the runtime, with its seams faked ==========================================


def run_once(resource: Spec) -> tuple[list[dict[str, Any]], list[str]]:
    runtime, kube, engine = runtime_with({"kvm-a": ["web-01"], "kvm-b": []})

    async def passes() -> None:
        for name in ("kvm-a", "kvm-b"):
            await runtime.probe(name)
        await runtime.pass_once(key="default/web", body=resource, stopped=NeverStopped())
    asyncio.run(passes())
    return kube.patches, engine.phase_at_start


def resource_with(spec: Json) -> Spec:
    return {"metadata": {"name": "web", "namespace": "default", "generation": 3,
                         "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": spec}


class TestTheOperatorWithABadSpec:
    """A malformed spec becomes a Failed phase with an InvalidSpec condition, not an exception."""

    @settings(max_examples=40)
    @given(st.one_of(
        broken(vmmigration_specs, VMMIGRATION_BREAKS).map(lambda case: (case[1], case[2])),
        not_a(dict).map(lambda value: (value, ("spec",))),
    ))
    def test_the_resource_gets_a_condition_naming_the_field_and_nothing_moves(
            self, case: tuple[Json, tuple[str, ...]]) -> None:
        spec, names = case
        try:
            parse_vmmigration(spec)
        except SpecError as error:
            expected = str(error)
        else:
            assume(False)  # only broken specs here
        patches, migrations = run_once(resource_with(spec))
        assert migrations == [], "nothing may move on a bad spec"
        (patch,) = patches
        assert patch["phase"] == "Failed" and patch["observedGeneration"] == 3
        conditions = {c["type"]: c for c in patch["conditions"]}
        for kind, state in (("Blocked", "True"), ("Ready", "False")):
            assert conditions[kind]["status"] == state
            assert conditions[kind]["reason"] == "InvalidSpec"
            assert conditions[kind]["message"] == expected
            assert conditions[kind]["observedGeneration"] == 3
        for name in names:
            assert name in conditions["Blocked"]["message"]

    def test_a_resource_without_any_spec_is_blocked_with_the_domain_named(self) -> None:
        patches, migrations = run_once({"metadata": resource_with(None)["metadata"]})
        assert migrations == []
        blocked = {c["type"]: c for c in patches[-1]["conditions"]}["Blocked"]
        assert blocked["reason"] == "InvalidSpec" and "spec.domain" in blocked["message"]


# ==== regressions the fuzz found (plain examples, so they never depend on luck) ====


class TestRegressionsFoundByFuzzing:
    @pytest.mark.parametrize("domain", ["web-01\n", "web-01\r\n"])
    def test_a_domain_name_with_a_trailing_newline_is_refused(self, domain: str) -> None:
        # re.match with "$" accepted one trailing newline.
        with pytest.raises(SpecError, match="spec.domain"):
            parse_vmmigration({"domain": domain, "targetHypervisor": "kvm-b"})

    @pytest.mark.parametrize(("field", "value"), [
        ("uri", "qemu+tcp://h/system\n"),
        ("uri", "qemu+tcp://h/system|reboot"),
        ("uri", "qemu+tcp://h/<x>"),
        ("uri", "qemu+tcp://h/system\\"),
        ("migrationAddress", "10.0.0.2\n"),
    ])
    def test_hypervisor_fields_with_a_trailing_newline_or_shell_characters_are_refused(
            self, field: str, value: str) -> None:
        spec = {"uri": "qemu+tcp://h/system", field: value}
        with pytest.raises(SpecError, match=f"spec.{field}"):
            parse_hypervisor(name="h", spec=spec, labels=None)

    @pytest.mark.parametrize("value", [10**400, float("nan"), float("inf")])
    def test_a_timeout_too_large_for_a_float_or_not_finite_is_refused(self, value: float) -> None:
        # 10**400 raised OverflowError; NaN passed and would never time out.
        with pytest.raises(SpecError, match="spec.policy.hardTimeoutSeconds"):
            parse_vmmigration({"domain": "w", "targetHypervisor": "b",
                               "policy": {"hardTimeoutSeconds": value}})

    @pytest.mark.parametrize(("selector", "words"), [
        ({"matchExpressions": 5}, "matchExpressions must be a list"),
        ({"matchExpressions": {"key": "zone"}}, "matchExpressions must be a list"),
        ({"matchExpressions": [{"key": "z", "operator": "In", "values": 5}]}, r"\[0\].values"),
        ({"matchExpressions": [{"key": "z", "operator": "In", "values": [{"a": 1}]}]}, r"\[0\].values"),
        ({"matchExpressions": [{"key": "z", "operator": "In", "values": {"lab": 1}}]}, r"\[0\].values"),
    ])
    def test_match_expressions_of_the_wrong_shape_are_refused(self, selector: Spec, words: str) -> None:
        # An int raised TypeError; a dict or non-string values were silently turned into strings.
        with pytest.raises(SpecError, match=words):
            parse_vmmigration({"domain": "w", "targetSelector": selector})

    @pytest.mark.parametrize("namespace", [5, "", ["ns"]])
    def test_a_credentials_namespace_that_is_not_a_name_is_refused(self, namespace: Json) -> None:
        with pytest.raises(SpecError, match="spec.credentialsSecretRef.namespace"):
            parse_hypervisor(name="h", spec={"uri": "qemu+tls://h/system", "credentialsSecretRef": {
                "name": "tls", "namespace": namespace}}, labels=None)

    def test_an_overlong_value_is_shown_shortened_in_the_message(self) -> None:
        with pytest.raises(SpecError) as refused:
            parse_vmmigration({"domain": "w" * 100_000, "targetHypervisor": "b"})
        assert_readable(refused.value, "spec.domain", "100002 characters")

    def test_a_policy_limit_names_the_spec_field_not_the_python_attribute(self) -> None:
        with pytest.raises(SpecError, match=r"^spec.policy.parallelConnections must be between 1 and 64"):
            parse_vmmigration({"domain": "w", "targetHypervisor": "b", "policy": {"parallelConnections": 0}})

    def test_a_non_object_spec_is_called_spec(self) -> None:
        with pytest.raises(SpecError, match=r"^spec must be an object, not \[\]"):
            parse_vmmigration([])

    def test_backoff_after_thousands_of_failures_is_the_cap(self) -> None:
        # 2 ** 1100 as an int raised OverflowError when multiplied by a float base.
        assert backoff_seconds(failures=2000, base=5.0, cap=300.0) == 300.0
        assert backoff_seconds(failures=3, base=5.0, cap=300.0) == 20.0

    @pytest.mark.parametrize("stored", [5, "Ready", [{"type": ["Ready"]}], [{"type": "Ready", "status": "False",
                                                                                 "lastTransitionTime": 7}]])
    def test_stored_conditions_of_the_wrong_shape_are_replaced(self, stored: Json) -> None:
        new = status.compose(previous={"conditions": stored}, phase=Phase.PENDING, generation=1,
                             now=0.0, wanted=())
        assert all(c["lastTransitionTime"] == status.timestamp(0.0) for c in new["conditions"])

    def test_a_hand_edited_hypervisor_status_is_rewritten_not_fatal(self) -> None:
        report = HostReport(reachable=True, probed_at=0.0, memory_free_bytes=10)
        new = status.hypervisor(previous={"memoryFreeBytes": "lots", "lastProbeTime": 5,
                                          "conditions": "Reachable"},
                                report=report, generation=1, now=100.0, inbound=0, outbound=0)
        assert new["memoryFreeBytes"] == 10 and new["lastProbeTime"] == status.timestamp(0.0)
