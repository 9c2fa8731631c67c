"""The planner fuzzed: decide() and the scheduling it uses always answer, and keep their rules."""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from vmmigration.core.spec import (
    Desired,
    DriftAction,
    Phase,
    PlacementMode,
    Selector,
)
from vmmigration.core.memory import Memory
from vmmigration.core.pools import pool_of
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
    backoff_seconds,
    decide,
)
from vmmigration.core.scheduling import (
    Claim,
    HypervisorView,
    InFlight,
    admit,
    choose_target,
    whereabouts,
)

from .fuzzing import (
    DOMAINS,
    KINDS,
    avoids,
    claims,
    eligible_target,
    fleets,
    flights,
    holders,
    host_names,
    hostile_text,
    maybe_host,
    memories,
    memory_sizes,
    planner_selectors,
    running_on,
    scenarios,
    timestamps,
)


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
            case Displaced(current=current, home=home):
                assert home == desired.target and current != home and current in seen
                assert views[home].spec.maintenance and not views[current].spec.maintenance
                assert memory.phase in (Phase.PLACED, Phase.DISPLACED)
            case Migrate(source=source, target=target, drift=drift, why=why):
                assert source != target, "never migrates a VM onto the host it is on"
                assert source in seen, "the source is where a probe found the VM"
                assert len(running_on(desired.domain, views)) <= 1, "never moves a VM running twice"
                assert target in views and eligible_target(views[target]), (
                    "never onto an unknown, unreachable or maintenance host")
                assert not desired.abort and drift == (placed_before and not why)
                assert not (placed_before and desired.drift_action is DriftAction.REPORT and not why)
                if desired.target is not None and why:
                    # Displaced: off a host in maintenance, to another host of the home's pool.
                    assert views[desired.target].spec.maintenance and views[source].spec.maintenance
                    assert pool_of(views[target].spec) == pool_of(views[desired.target].spec)
                elif desired.target is not None:
                    assert target == desired.target
                else:
                    assert desired.selector is not None
                    assert desired.selector.matches(views[target].spec.label_map)
                    assert target not in avoid, "a host that refused the VM is skipped"
                    needs = min(d.memory_bytes for d in seen[source])
                    report = views[target].report
                    assert report is not None and report.memory_free_bytes >= needs
                if desired.source is not None and not placed_before and not why:
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
