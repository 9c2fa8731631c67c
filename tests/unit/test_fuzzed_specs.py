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
from typing import Any

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from vmmigration.core import status
from vmmigration.core.spec import (
    Desired,
    HypervisorSpec,
    Phase,
    SpecError,
    parse_hypervisor,
    parse_selector,
    parse_vmmigration,
)
from vmmigration.core.model import (
    HostReport,
)
from vmmigration.core.reconcile import (
    backoff_seconds,
)

from .test_runtime import NeverStopped, runtime_with
from .fuzzing import (
    HOSTILE_TEXT,
    Json,
    Spec,
    assert_readable,
    hostile_text,
    is_domain_name,
    json_trees,
    not_a,
)
from .spec_strategies import (
    HYPERVISOR_BREAKS,
    VMMIGRATION_BREAKS,
    broken,
    hypervisor_specs,
    parse_hypervisor_or_refuse,
    parse_or_refuse,
    vmmigration_specs,
)


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
