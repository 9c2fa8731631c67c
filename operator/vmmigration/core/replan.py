"""Pure: whether a move in flight is still the one wanted, or should be cancelled, and whether
a changed policy can apply to it as it runs.

The spec or the fleet can change while a job runs: the target set back to
the host the VM still runs on, the target Hypervisor deleted, a new target
named. Finishing a move nobody wants costs a downtime now and another to move
back (or lands the VM on a host nobody manages); cancelling a pre-copy costs
only the abort. Once in post-copy the target already runs the VM: nothing is
cancelled then, and the next pass moves it on if need be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from vmmigration.core.model import OnTimeout, Policy
from vmmigration.core.scheduling import HypervisorView
from vmmigration.core.spec import Desired, WhenCancelled

# What an abort of a pre-copy costs, in seconds of a new move: libvirt's cleanup.
ABORT_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Replan:
    cancel: bool
    why: str = ""


KEEP = Replan(cancel=False)


def replan(*, desired: Desired | None, source: str, target: str,
           hypervisors: Mapping[str, HypervisorView], in_post_copy: bool,
           eta_seconds: float | None, hint: str | None = None) -> Replan:
    """``desired`` is the spec as it is now (None when it no longer parses: keep going);
    ``hint`` the host rebalancing asked for, if any."""
    if in_post_copy:
        return KEEP
    if target not in hypervisors:
        return Replan(True, f"Hypervisor {target} was deleted during the move; cancelled it, "
                            f"the VM stays on {source}")
    if desired is None:
        return KEEP
    home = hypervisors.get(source)
    draining = home is not None and home.spec.maintenance
    # A drain cancelled half way (maintenance cleared): its moves stop or finish as the
    # source host's drain.whenCancelled says.
    finish = home is not None and home.spec.drain.when_cancelled is WhenCancelled.FINISH
    if desired.target is not None:
        if desired.target == source:
            if home is not None and draining and desired.domain not in home.spec.drain.exclude:
                return KEEP  # displaced for the maintenance: leaving is the point
            if finish:
                return KEEP
            return Replan(True, f"the VM is wanted on {source} again, where it still runs; "
                                "cancelled the move instead of finishing it and moving back")
        if desired.target == target:
            return KEEP
        return _elsewhere(new=desired.target, source=source, target=target, eta_seconds=eta_seconds)
    if desired.selector is not None:
        labels = hypervisors[target].spec.label_map
        if desired.selector.matches(labels):
            if (hint != target and home is not None and not draining and not finish
                    and desired.selector.matches(home.spec.label_map)):
                # Its host is fine again (maintenance cleared): the drain was cancelled.
                return Replan(True, f"{source} is no longer in maintenance and the VM still runs "
                                    "there; cancelled the move (drain.whenCancelled: Abort)")
            return KEEP
        if home is not None and desired.selector.matches(home.spec.label_map):
            return Replan(True, f"{target} no longer matches the selector and {source}, where the "
                                "VM still runs, does: cancelled the move")
        return _elsewhere(new="a host the selector matches", source=source, target=target,
                          eta_seconds=eta_seconds)
    return KEEP


def _elsewhere(*, new: str, source: str, target: str, eta_seconds: float | None) -> Replan:
    """Finishing costs the rest of this move plus a second move and its downtime; going
    there directly, one move from the source. Cancel unless the end is closer than an abort."""
    if eta_seconds is not None and eta_seconds < ABORT_SECONDS:
        return KEEP
    rest = f"{eta_seconds:.0f} s" if eta_seconds is not None else "an unknown time"
    return Replan(True, f"the VM is now wanted on {new}: finishing the move to {target} would cost "
                        f"{rest} more and a second move with its downtime; cancelled it to go "
                        f"there directly from {source}")


# What libvirt lets a running job change (the link's cap, the switch-over limit),
# and what only the monitor reads (timeouts, when and how to escalate).
_LIVE_FIELDS = frozenset({
    "bandwidth_mib_per_s", "max_downtime_ms", "progress_timeout_seconds",
    "completion_timeout_seconds_per_gib", "hard_timeout_seconds", "escalation",
    "over_downtime_budget", "on_timeout"})


def retunable(*, running: Policy, wanted: Policy, post_copy_allowed: bool) -> bool:
    """Whether a running job can follow ``wanted`` instead of ``running``.

    Parallel connections, compression, auto-converge and peer-to-peer are fixed
    when the job starts; so is post-copy: a job started without it cannot switch.
    """
    changed = {f.name for f in dataclasses.fields(Policy)
               if getattr(running, f.name) != getattr(wanted, f.name)}
    if not changed <= _LIVE_FIELDS:
        return False
    return wanted.on_timeout is not OnTimeout.POST_COPY or post_copy_allowed
