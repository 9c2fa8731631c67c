"""The forecast of each strategy, as hand-computed tables and as properties that must always hold."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmmigration.core import forecast
from vmmigration.core.forecast import Inputs, Overheads, Strategy
from vmmigration.core.model import MIB

# Round overheads make the hand computations below readable.
ROUND = Overheads(setup_seconds=1.0, finish_seconds=0.0, switchover_seconds=0.0,
                  zero_scan_bytes_per_s=float("inf"), offline_seconds=0.5)


def inputs(*, in_use: int = 64, dirty: float = 0, hot: int = 0, link: float = 8, memory: int = 128,
           downtime: float = 0.3, capped: bool = False,
           switch_bytes_per_s: float | None = None) -> Inputs:
    return Inputs(memory_bytes=memory * MIB, in_use_bytes=in_use * MIB,
                  dirty_rate_bytes_per_s=dirty * MIB, hot_set_bytes=hot * MIB,
                  link_bytes_per_s=link * MIB, max_downtime_seconds=downtime, overheads=ROUND,
                  capped=capped,
                  switch_bytes_per_s=switch_bytes_per_s * MIB if switch_bytes_per_s else None)


@pytest.mark.parametrize(("given_inputs", "converges", "passes", "duration", "downtime"), [
    # 64 MiB at 8 MiB/s: 8 s; nothing dirtied, so it switches at once with nothing left.
    pytest.param(inputs(), True, 1, 9.0, 0.0, id="idle-one-pass"),
    # Pass 1 8 s dirties min(16, 2*8)=16 MiB; pass 2 2 s dirties 4; pass 3 0.5 s dirties 1 MiB,
    # which fits 8*0.3 = 2.4 MiB: switch with 1 MiB = 0.125 s. 1+8+2+0.5+0.125.
    pytest.param(inputs(dirty=2, hot=16), True, 3, 11.625, 0.125, id="slow-writer-three-passes"),
    # A hot set the link sends within the downtime limit: one pass, then the switch.
    pytest.param(inputs(dirty=48, hot=2), True, 1, 9.25, 0.25, id="small-hot-set"),
    # 48 MiB rewritten faster than the link: every leftover is 48 MiB, never 2.4.
    pytest.param(inputs(dirty=48, hot=48), False, 2, None, None, id="busy-never-converges"),
])
def test_live_is_forecast_pass_by_pass(given_inputs: Inputs, converges: bool, passes: int,
                                       duration: float | None, downtime: float | None) -> None:
    result = forecast.live(given_inputs)
    assert (result.converges, result.passes) == (converges, passes)
    assert result.duration_seconds == (pytest.approx(duration) if duration is not None else None)
    assert result.downtime_seconds == (pytest.approx(downtime) if downtime is not None else None)


def test_the_hybrid_suspends_a_busy_guest_at_the_end_of_its_first_pass() -> None:
    result = forecast.hybrid(inputs(dirty=48, hot=48))
    # 1 s setup + 8 s first pass, then 48 MiB paused at 8 MiB/s.
    assert (result.passes, result.duration_seconds, result.downtime_seconds) == (1, 15.0, 6.0)
    assert "end of pass 1" in result.note


def test_post_copy_sends_every_page_once_with_the_guest_on_the_target_from_the_start() -> None:
    result = forecast.post_copy(inputs(dirty=48, hot=48))
    assert (result.duration_seconds, result.downtime_seconds, result.degraded_seconds) == (9.0, 0.0, 8.0)


@pytest.mark.parametrize(("dirty", "hot", "copy"), [
    # 48 MiB touched at 48 MiB/s: all of it on demand within a second, beside the
    # background's 16 MiB at 8 MiB/s: 2 s.
    pytest.param(48, 48, 2.0, id="hot-set-all-on-demand"),
    # 48 MiB touched at 2 MiB/s is slower than the background: both streams share
    # the 64 MiB for the whole copy, at 8 + 2 MiB/s: 6.4 s.
    pytest.param(2, 48, 6.4, id="slow-writer-shares-the-copy"),
    pytest.param(0, 0, 8.0, id="idle-guest-waits-for-nothing"),
])
def test_under_a_cap_post_copy_fetches_the_pages_the_guest_touches_beside_the_capped_copy(
        dirty: float, hot: int, copy: float) -> None:
    result = forecast.post_copy(inputs(dirty=dirty, hot=hot, capped=True))
    assert result.degraded_seconds == pytest.approx(copy)
    assert result.duration_seconds == pytest.approx(copy + 1.0)


def test_under_a_cap_a_live_moves_last_copy_runs_at_the_wires_rate_and_a_suspended_one_at_the_cap() -> None:
    # QEMU flushes what is left past its switch-over threshold regardless of the cap.
    # Live: 4 MiB rewritten at 32 MiB/s over a 32 MiB/s cap, on a 512 MiB/s wire.
    busy = inputs(dirty=32, hot=4, link=32, capped=True)
    assert forecast.live(busy).downtime_seconds == pytest.approx(4 / 32)  # the wire unknown
    wire = dataclasses.replace(busy, switch_bytes_per_s=512 * MIB)
    assert forecast.live(wire).downtime_seconds == pytest.approx(4 / 512)
    # The hybrid's suspended source sends its 48 MiB at the cap (as measured).
    hot = inputs(dirty=48, hot=48, capped=True, switch_bytes_per_s=512)
    assert forecast.hybrid(hot).downtime_seconds == pytest.approx(48 / 8)


def test_non_live_pauses_the_guest_for_the_whole_copy() -> None:
    result = forecast.non_live(inputs(dirty=48, hot=48))
    assert (result.duration_seconds, result.downtime_seconds) == (9.0, 8.0)


def test_auto_converge_throttles_a_busy_guest_until_it_converges_and_says_how_long_it_ran_slow() -> None:
    result = forecast.live(inputs(dirty=16, hot=48), auto_converge=True)
    assert result.converges and result.strategy is Strategy.AUTO_CONVERGE
    assert result.degraded_seconds > 0
    assert result.duration_seconds is not None and result.duration_seconds > forecast.hybrid(
        inputs(dirty=16, hot=48)).duration_seconds  # type: ignore[operator]


def test_a_shut_off_domain_is_forecast_only_offline() -> None:
    (only,) = forecast.every_strategy(inputs(), running=False)
    assert (only.strategy, only.downtime_seconds, only.duration_seconds) == (Strategy.OFFLINE, 0.0, 0.5)


def test_zero_pages_cost_a_scan_not_a_send() -> None:
    scanning = dataclasses.replace(inputs(in_use=32), overheads=dataclasses.replace(
        ROUND, zero_scan_bytes_per_s=96 * MIB))
    # 32 MiB at 8 MiB/s plus 96 MiB of zero pages at 96 MiB/s.
    assert forecast.non_live(scanning).duration_seconds == pytest.approx(1 + 4 + 1)


def test_a_forecast_needs_a_link() -> None:
    with pytest.raises(ValueError, match="positive link rate"):
        inputs(link=0)


# ---- properties -----------------------------------------------------------------

mib = st.integers(min_value=0, max_value=4096)
rates = st.floats(min_value=0, max_value=2000, allow_nan=False)
links = st.floats(min_value=0.5, max_value=2000, allow_nan=False)


@st.composite
def any_inputs(draw: st.DrawFn) -> Inputs:
    memory = draw(st.integers(min_value=1, max_value=4096))
    in_use = draw(st.integers(min_value=0, max_value=memory))
    return inputs(memory=memory, in_use=in_use, dirty=draw(rates),
                  hot=draw(st.integers(min_value=0, max_value=in_use)), link=draw(links),
                  downtime=draw(st.floats(min_value=0.01, max_value=10)), capped=draw(st.booleans()),
                  switch_bytes_per_s=draw(st.none() | links))


def _strategies(given_inputs: Inputs) -> dict[Strategy, forecast.Forecast]:
    return {f.strategy: f for f in forecast.every_strategy(given_inputs)}


@settings(max_examples=300, deadline=None)
@given(any_inputs(), st.floats(min_value=1.01, max_value=10))
def test_more_bandwidth_never_forecasts_a_longer_migration(given_inputs: Inputs, factor: float) -> None:
    faster = dataclasses.replace(given_inputs, link_bytes_per_s=given_inputs.link_bytes_per_s * factor)
    slow, fast = _strategies(given_inputs), _strategies(faster)
    for name in (Strategy.POST_COPY, Strategy.NON_LIVE, Strategy.LIVE):
        if slow[name].converges:
            assert fast[name].converges
            assert fast[name].duration_seconds <= slow[name].duration_seconds + 1e-9  # type: ignore[operator]
    # A hybrid that suspends (live cannot converge on either link) pauses less on the faster one.
    if not fast[Strategy.LIVE].converges:
        assert fast[Strategy.HYBRID].downtime_seconds <= slow[Strategy.HYBRID].downtime_seconds + 1e-9  # type: ignore[operator]


@settings(max_examples=300, deadline=None)
@given(any_inputs(), st.floats(min_value=1.01, max_value=10))
def test_a_higher_dirty_rate_never_forecasts_a_shorter_move_nor_a_shorter_suspend(
        given_inputs: Inputs, factor: float) -> None:
    busier = dataclasses.replace(given_inputs,
                                 dirty_rate_bytes_per_s=given_inputs.dirty_rate_bytes_per_s * factor + MIB)
    calm, busy = forecast.live(given_inputs), forecast.live(busier)
    if busy.converges:
        assert calm.converges
        assert calm.duration_seconds <= busy.duration_seconds + 1e-9  # type: ignore[operator]
    # (A converging live downtime is not monotonic: a busier guest may need one more pass
    # and switch with a smaller leftover. It always stays within the limit, below.)
    if not calm.converges:
        assert forecast.hybrid(given_inputs).downtime_seconds <= forecast.hybrid(busier).downtime_seconds + 1e-9  # type: ignore[operator]


@settings(max_examples=300, deadline=None)
@given(any_inputs())
def test_every_strategy_that_converges_says_how_long_and_the_downtime_never_exceeds_the_whole(
        given_inputs: Inputs) -> None:
    for result in forecast.every_strategy(given_inputs):
        if result.converges:
            assert result.duration_seconds is not None and result.downtime_seconds is not None
            assert 0 <= result.downtime_seconds <= result.duration_seconds
        else:
            assert result.duration_seconds is None and result.note


@settings(max_examples=300, deadline=None)
@given(any_inputs())
def test_a_live_move_that_converges_stays_within_its_downtime_limit(given_inputs: Inputs) -> None:
    result = forecast.live(given_inputs)
    if result.converges:
        assert result.downtime_seconds <= given_inputs.max_downtime_seconds + 1e-9  # type: ignore[operator]
    # Post-copy's downtime never depends on the guest: it is the switch alone.
    assert forecast.post_copy(given_inputs).downtime_seconds == ROUND.switchover_seconds
