"""A campaign's plan, drawn from its seed alone: what users do and which faults strike, when.

Everything random is drawn here, up front, so the same seed and length give the
same plan: ``make soak SEED=… MINUTES=…`` replays a run. What the test bed looks
like at the moment a step runs (which migration is in flight) can still differ
between two runs, and the history records what each step found.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

HOSTS = ("kvm-a", "kvm-b", "kvm-c")
POOL = "lab"

# Six running guests of different dirty rates (the last is the demo's busy one, which
# only the hybrid or a pause moves), and one shut-off guest whose disk only its host sees.
GUESTS: dict[str, dict[str, int]] = {
    "nm-calm": {"dirty_mib": 8, "dirty_rate_mib": 0},
    "nm-idle": {"dirty_mib": 16, "dirty_rate_mib": 1},
    "nm-web": {"dirty_mib": 16, "dirty_rate_mib": 4},
    "nm-db": {"dirty_mib": 32, "dirty_rate_mib": 8},
    "nm-warm": {"dirty_mib": 24, "dirty_rate_mib": 16},
    "nm-hot": {"dirty_mib": 48, "dirty_rate_mib": 48},
}
COLD = "nm-cold"
HOME = {"nm-calm": 0, "nm-idle": 1, "nm-web": 2, "nm-db": 0, "nm-warm": 1, "nm-hot": 2, COLD: 0}

# Users' operations, by weight.
OPERATIONS = {
    "place": 10, "retarget": 8, "policy": 2, "abort": 2, "unabort": 2, "delete": 2,
    "drain": 4, "undrain": 2, "outside": 3, "carry": 1, "rebalance": 1,
}
# Faults, by weight.
FAULTS = {
    "kill-operator": 3, "kill-libvirtd": 2, "freeze-libvirtd": 2, "restart-api": 1,
    "cut-link": 2, "reset-link": 2, "lossy-link": 1, "partition": 1, "kill-target-qemu": 3,
}
# Faults that wait (a bounded time) for a migration in flight before they strike.
MID_MOVE = {"kill-libvirtd", "freeze-libvirtd", "cut-link", "reset-link", "lossy-link",
            "partition", "kill-target-qemu", "kill-operator"}
BANDWIDTHS = (16, 32, 64)  # MiB/s: every move lasts seconds, and a suspend at most 8 s


@dataclasses.dataclass(frozen=True)
class Step:
    at: float  # seconds from the campaign's start
    kind: str  # "op" or "fault"
    what: str
    params: dict[str, Any]

    def as_record(self) -> dict[str, Any]:
        return {"at": round(self.at, 2), "kind": self.kind, "what": self.what, **self.params}


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    names = sorted(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def _vmm_spec(rng: random.Random, guest: str) -> dict[str, Any]:
    flavour = rng.choice(["live", "live", "auto", "auto", "nonlive", "hybrid"])
    policy: dict[str, Any] = {"bandwidthMiBPerSecond": rng.choice(BANDWIDTHS)}
    mode = {"live": "Live", "auto": "Auto", "nonlive": "NonLive", "hybrid": "Live"}[flavour]
    if flavour == "hybrid" or (guest == "nm-hot" and mode == "Live"):
        policy["onTimeout"] = "Suspend"
    if mode == "Auto":
        policy["maxDowntimeMs"] = rng.choice([300, 2000])
        policy["overDowntimeBudget"] = "LeastDowntime"
    spec: dict[str, Any] = {"domain": guest, "mode": mode, "policy": policy,
                            "placement": rng.choice(["Continuous"] * 4 + ["Once"]),
                            "driftAction": rng.choice(["Correct"] * 4 + ["Report"])}
    if rng.random() < 0.25:
        spec["targetSelector"] = {"matchLabels": {"vmmigration.dev/pool": POOL}}
    else:
        spec["targetHypervisor"] = rng.choice(HOSTS)
    return spec


def plan(*, seed: int, seconds: float) -> list[Step]:
    """Operations every 2 to 7 s; one fault at a time, every 10 to 25 s, each healing
    after 2 to 10 s."""
    rng = random.Random(seed)
    steps: list[Step] = []
    names = sorted(GUESTS)
    at = 3.0
    while at < seconds:
        what = _pick(rng, OPERATIONS)
        guest = rng.choice(names)
        params: dict[str, Any] = {"domain": guest}
        if what == "place":
            params["spec"] = _vmm_spec(rng, guest)
        elif what == "retarget":
            params["target"] = rng.choice(HOSTS)
        elif what == "policy":
            params["bandwidth"] = rng.choice(BANDWIDTHS)
        elif what in ("drain", "undrain"):
            params = {"host": rng.choice(HOSTS), "whenCancelled": rng.choice(["Abort", "Finish"]),
                      "mode": rng.choice(["Auto", "NonLive", "Live"])}
        elif what == "outside":
            params["target"] = rng.choice(HOSTS)
        elif what == "carry":
            params = {"domain": COLD, "target": rng.choice(HOSTS)}
        elif what == "rebalance":
            params = {"enabled": rng.random() < 0.6}
        steps.append(Step(at=at, kind="op", what=what, params=params))
        at += rng.uniform(2.0, 7.0)
    at = rng.uniform(8.0, 15.0)
    while at < seconds:
        what = _pick(rng, FAULTS)
        host, other = rng.sample(HOSTS, 2)
        steps.append(Step(at=at, kind="fault", what=what,
                          params={"host": host, "other": other, "heal_after": round(rng.uniform(2, 10), 1),
                                  "link": rng.choice(["migration", "migration", "management"])}))
        at += rng.uniform(10.0, 25.0)
    return sorted(steps, key=lambda s: s.at)
