"""Shared strategies of the fuzz tests: hostile leaves, JSON trees, and generated fleets."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from vmmigration.core.spec import (
    Desired,
    DriftAction,
    HypervisorSpec,
    Phase,
    PlacementMode,
    SpecError,
    parse_selector,
)
from vmmigration.core.model import (
    DomainSummary,
    HostReport,
    PauseReason,
    PowerState,
)
from vmmigration.core.location import is_incoming
from vmmigration.core.memory import Attempt, Condition, Memory
from vmmigration.core.reconcile import (
    Abort,
    Block,
    Displaced,
    Idle,
    Migrate,
    Placed,
    Recover,
    ReportDrift,
    Wait,
)
from vmmigration.core.scheduling import Claim, HypervisorView, InFlight



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
KINDS = (Recover, Migrate, Placed, Wait, Block, Abort, ReportDrift, Idle, Displaced)


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
