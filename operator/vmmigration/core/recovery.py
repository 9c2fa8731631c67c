"""Pure: when and how the engine resumes a post-copy migration whose link failed.

A post-copy migration whose stream fails leaves the VM paused on both hosts:
the target runs its CPUs and holds the pages it received, the source holds the
rest. Neither half may be resumed alone, and aborting loses the VM, so the
only way forward is libvirt's post-copy resume (``VIR_MIGRATE_POSTCOPY_RESUME``)
once the hosts can talk again. This module decides whether a resume may be
tried at all (some libvirt releases crash on it), how long to wait between
tries, and when a person has to take over.
"""

from __future__ import annotations

import dataclasses
import enum

from vmmigration.core.model import HostVersions, format_version


class ResumePolicy(str, enum.Enum):
    """``VMMIGRATION_POSTCOPY_RESUME``: auto resumes unless libvirt is known to crash on it."""

    AUTO = "auto"
    ALWAYS = "always"  # the operator's owner knows their libvirt is patched
    NEVER = "never"  # leave every split VM to a person


# libvirt releases whose target daemon dies on every post-copy resume: from
# 11.2.0 (which added the sparse save format) the resume passes a NULL file
# descriptor into qemuProcessIncomingDefNew, which dereferences it, and the
# target's daemon segfaults in Prepare before QEMU is asked anything. libvirt
# 11.4.0 fixed it ("Fix virtqemud crash when resuming failed post-copy
# migration" in its NEWS). Seen crashing on 11.3.0 and resuming on 12.9.0,
# both in the test bed (the previous and current host flavours).
BROKEN_RESUME: tuple[tuple[int, int | None], ...] = ((11_002_000, 11_004_000),)


@dataclasses.dataclass(frozen=True)
class ResumeLimits:
    """How patiently a split VM is resumed: backoff between tries, then a person."""

    # Short: the VM runs on the target meanwhile, its missing pages on hold, so
    # every second between a link's return and the next try is felt by the
    # guest. A try against a link still down costs one call (and TCP's own
    # connect retries), nothing on either host.
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 5.0
    # A host gone this long is not coming back by itself (a reboot, a dead
    # machine): the status says so and leaves it to a person.
    give_up_after_seconds: float = 1800.0
    # One try that waits this long has met a target whose QEMU does not answer:
    # libvirt's Prepare of a resume is one quick monitor command when QEMU is
    # well (about 1.5 s in the test bed). See stuck_advice.
    try_seconds: float = 60.0


def blocker(*, policy: ResumePolicy, target: HostVersions) -> str | None:
    """Why the engine must not try a resume into ``target``, or None if it may."""
    if policy is ResumePolicy.NEVER:
        return "automatic post-copy resume is turned off (VMMIGRATION_POSTCOPY_RESUME=never)"
    if policy is ResumePolicy.ALWAYS:
        return None
    for low, high in BROKEN_RESUME:
        if target.libvirt >= low and (high is None or target.libvirt < high):
            return (f"libvirt {format_version(target.libvirt)} on the target crashes on a "
                    "post-copy resume (its daemon dereferences a NULL descriptor while "
                    "preparing it), so the operator does not try one")
    return None


def stuck_advice(*, domain: str, source: str, target: str, why: str) -> str:
    """What a person does when a resume hangs in the target's Prepare (one status message).

    Seen under TCG when the link failed within the first second after the switch: the
    target's vCPU waits for a page only the source holds while it holds QEMU's global
    lock (its first interrupts read guest memory), so QEMU's main loop, and with it the
    monitor command the resume needs, never runs again. QEMU can take that command
    out of band, but libvirt does not send it so.
    """
    return (f"{domain} is paused on {source}; on {target} its QEMU no longer answers: "
            f"{why} (a link lost just after the switch to post-copy can leave that QEMU "
            "waiting for a page only the source holds). libvirt cannot resume it, and the "
            "VM runs on neither host meanwhile, never on both. A person decides: the target "
            "holds the CPU state and the pages it fetched, the source the rest, so resuming "
            "the source alone runs stale memory against disks the target wrote. Restarting "
            f"the VM from its disks (`virsh destroy {domain}` on both hosts, then start it on "
            "one) is the safe end.")


def delay(*, attempt: int, limits: ResumeLimits) -> float:
    """Seconds to wait after failed try number ``attempt`` (1, 2, …): doubling, capped."""
    return min(limits.max_delay_seconds, limits.first_delay_seconds * 2.0 ** max(0, attempt - 1))


def give_up(*, waited_seconds: float, limits: ResumeLimits) -> bool:
    return waited_seconds >= limits.give_up_after_seconds


def advice(*, domain: str, source: str, target: str, why: str) -> str:
    """What a person does with a VM the operator could not resume (one status message)."""
    return (f"{domain} is paused on both {source} and {target} after its post-copy link "
            f"failed; {why}. Do not resume or destroy either half: the target holds the "
            "running state and the source the memory not yet copied. Once both hosts "
            "answer and their libvirt can resume post-copy, run `virsh migrate "
            f"--postcopy-resume --live --p2p {domain} <target URI>` on the source; the "
            "operator then settles it.")
