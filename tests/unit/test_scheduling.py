"""Admission under concurrency limits, and label selectors."""

from __future__ import annotations

import pytest

from vmmigration.core.spec import HypervisorSpec, LabelRequirement, Selector
from vmmigration.core.scheduling import HypervisorView, InFlight, admit


def views(inbound: int = 2, outbound: int = 2) -> dict[str, HypervisorView]:
    return {n: HypervisorView(spec=HypervisorSpec(name=n, uri=f"test:///{n}", max_inbound=inbound,
                                                  max_outbound=outbound)) for n in "abc"}


@pytest.mark.parametrize(("in_flight", "limit", "inbound", "outbound", "admitted"), [
    pytest.param((), 4, 2, 2, True, id="idle-cluster"),
    pytest.param((("a", "c"), ("b", "c")), 2, 9, 9, False, id="cluster-limit"),
    pytest.param((("a", "c"),), 4, 9, 1, False, id="outbound-limit-of-source"),
    pytest.param((("c", "b"),), 4, 1, 9, False, id="inbound-limit-of-target"),
    pytest.param((("c", "a"),), 4, 1, 1, True, id="other-directions-do-not-count"),
])
def test_admission_holds_every_limit(in_flight: tuple[tuple[str, str], ...], limit: int,
                                     inbound: int, outbound: int, admitted: bool) -> None:
    flights = [InFlight(key=f"n/{i}", source=s, target=t) for i, (s, t) in enumerate(in_flight)]
    why = admit(source="a", target="b", in_flight=flights, hypervisors=views(inbound, outbound),
                cluster_limit=limit)
    assert (why is None) is admitted, why


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    pytest.param(Selector(match_labels=(("zone", "lab"),)), {"zone": "lab"}, True, id="label-equal"),
    pytest.param(Selector(match_labels=(("zone", "lab"),)), {"zone": "prod"}, False, id="label-differs"),
    pytest.param(Selector(expressions=(LabelRequirement("gpu", "Exists"),)), {"gpu": ""}, True, id="exists"),
    pytest.param(Selector(expressions=(LabelRequirement("gpu", "DoesNotExist"),)), {"gpu": "1"}, False,
                 id="does-not-exist"),
    pytest.param(Selector(expressions=(LabelRequirement("rack", "In", ("r1", "r2")),)), {"rack": "r2"},
                 True, id="in"),
    pytest.param(Selector(expressions=(LabelRequirement("rack", "NotIn", ("r1",)),)), {}, True,
                 id="not-in-absent-label"),
])
def test_selectors_follow_kubernetes_semantics(selector: Selector, labels: dict[str, str],
                                               matches: bool) -> None:
    assert selector.matches(labels) is matches
