"""Which streams a live move runs with, from the two hosts' QEMU versions."""

from __future__ import annotations

import dataclasses

from vmmigration.core import channels
from vmmigration.core.model import Mode

QEMU_10_0 = 10_000_002
QEMU_11_1 = 11_001_003
QEMU_7_2 = 7_002_000


def test_parallel_connections_are_dropped_for_post_copy_when_either_qemu_is_older_than_10_1() -> None:
    chosen = channels.choose(requested_connections=4, post_copy=True, source_qemu=QEMU_11_1,
                             target_qemu=QEMU_10_0)
    assert chosen.connections == 1
    assert "QEMU 10.0.2 on the target" in chosen.why and "10.1.0 and later" in chosen.why


def test_parallel_connections_are_kept_with_post_copy_when_both_qemus_accept_them() -> None:
    chosen = channels.choose(requested_connections=4, post_copy=True, source_qemu=QEMU_11_1,
                             target_qemu=QEMU_11_1)
    assert chosen.connections == 4 and chosen.preempt


def test_an_older_qemu_keeps_parallel_connections_when_post_copy_is_not_allowed() -> None:
    chosen = channels.choose(requested_connections=4, post_copy=False, source_qemu=QEMU_10_0,
                             target_qemu=QEMU_10_0)
    assert chosen.connections == 4 and not chosen.preempt
    assert "preempt" not in chosen.why


def test_post_copy_preempt_is_on_only_when_both_qemus_have_it() -> None:
    assert channels.choose(requested_connections=1, post_copy=True, source_qemu=QEMU_10_0,
                           target_qemu=QEMU_11_1).preempt
    old = channels.choose(requested_connections=1, post_copy=True, source_qemu=QEMU_7_2,
                          target_qemu=QEMU_11_1)
    assert not old.preempt and "QEMU 7.2.0 on the source lacks it" in old.why


def test_the_status_fields_name_both_choices_and_why() -> None:
    fields = channels.choose(requested_connections=2, post_copy=True, source_qemu=QEMU_11_1,
                             target_qemu=QEMU_11_1).as_fields()
    assert fields == {"parallelConnections": 2, "postCopyPreempt": True,
                      "reason": fields["reason"]}
    assert "2 parallel connections" in fields["reason"]


def test_a_plan_that_may_switch_to_post_copy_runs_one_stream_into_an_older_qemu() -> None:
    from vmmigration.core.model import DomainSummary, PauseReason, Policy, PowerState
    from vmmigration.core.planner import MigrationFlags
    from vmmigration.service.planning import Plan, with_channels

    domain = DomainSummary(name="vm1", uuid="u", state=PowerState.RUNNING,
                           pause_reason=PauseReason.NONE, memory_bytes=1 << 27, persistent=True)
    plan = Plan(mode=Mode.LIVE, flags=MigrationFlags(live=True, post_copy=True, parallel=True),
                domain=domain, qemu=(QEMU_11_1, QEMU_10_0))
    ran = with_channels(plan, policy=Policy(parallel_connections=4))
    assert not ran.flags.parallel and ran.flags.post_copy
    assert ran.channels is not None and ran.channels.connections == 1
    newer = with_channels(dataclasses.replace(plan, qemu=(QEMU_11_1, QEMU_11_1)),
                          policy=Policy(parallel_connections=4))
    assert newer.flags.parallel and newer.channels is not None and newer.channels.connections == 4
