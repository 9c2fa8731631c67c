"""Pure: which streams carry a live move's memory, from the hosts' QEMU versions.

Two choices are not ours to make directly, but a plan must say what happens:

- **Parallel connections** (QEMU's multifd) are asked for by the policy. QEMU
  refuses them together with post-copy before 10.1, so a job allowed to switch
  to post-copy drops to one stream when either QEMU is older, rather than
  failing when libvirt sets the capabilities.
- **Post-copy preempt** (a second channel for the pages the target faults on,
  so they need not queue behind the bulk stream) has no libvirt flag: libvirt
  turns it on by itself for a post-copy job when both QEMUs have the
  capability, which QEMU made stable in 8.0. The test bed's benches read the
  source QEMU's capabilities mid-job to confirm it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vmmigration.core.model import format_version

# QEMU accepts multifd and postcopy-ram together from 10.1 on.
MULTIFD_WITH_POST_COPY = 10_001_000
# QEMU's postcopy-preempt capability is stable from 8.0 on.
POST_COPY_PREEMPT = 8_000_000


@dataclasses.dataclass(frozen=True)
class Channels:
    connections: int  # 1: the single main stream
    preempt: bool  # a post-copy's faulted pages get their own channel
    why: str

    def as_fields(self) -> dict[str, Any]:
        """``status.plan.channels`` and ``status.channels``."""
        return {"parallelConnections": self.connections, "postCopyPreempt": self.preempt,
                "reason": self.why[:500]}


def choose(*, requested_connections: int, post_copy: bool, source_qemu: int,
           target_qemu: int) -> Channels:
    """The streams a live job runs with; ``post_copy``: the job may switch to post-copy."""
    older, side = min((source_qemu, "source"), (target_qemu, "target"))
    said: list[str] = []
    connections = requested_connections
    if connections > 1 and post_copy and older < MULTIFD_WITH_POST_COPY:
        said.append(f"one stream, not {connections}: QEMU {format_version(older)} on the {side} "
                    f"cannot combine parallel connections with post-copy "
                    f"({format_version(MULTIFD_WITH_POST_COPY)} and later can)")
        connections = 1
    elif connections > 1:
        said.append(f"{connections} parallel connections, as the policy asks")
    else:
        said.append("one stream, as the policy asks")
    preempt = post_copy and older >= POST_COPY_PREEMPT
    if post_copy:
        said.append("post-copy preempt on (libvirt turns it on when both QEMUs have it)"
                    if preempt else
                    f"no post-copy preempt: QEMU {format_version(older)} on the {side} lacks it")
    return Channels(connections=connections, preempt=preempt, why="; ".join(said))
