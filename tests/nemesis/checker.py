"""The campaign's judge: invariants checked over a recorded history, trusting only libvirt,
the guests' own serial output and the API server's objects and Events.

Independent of the operator on purpose: this module imports nothing of
``vmmigration`` (nor of the test bed). It reads our objects by the CRDs' field
names, exactly as a user's tooling would, and what libvirt said as plain
records. Every rule states its margin, so a reader can argue with it.

A history is a list of records (dicts), each with ``t`` (epoch seconds) and
``k`` (its kind):

- ``setup``: ``guests`` (running ones), ``cold`` (shut-off ones), ``hosts``;
- ``op`` / ``fault`` / ``heal``: what the generator and the nemesis did, with
  ``what``, and ``domain`` / ``host`` where one is touched;
- ``round``: one palindrome sample of every host's domain list: ``reads`` is
  ``[host, started, ended, {domain: state} | None]`` for hosts in order and then
  in reverse order (None: the host did not answer);
- ``api``: one object as a watch delivered it (``kind``, ``name``, ``obj``);
- ``qemu``: one QEMU that a host's libvirtd started (``host``, ``domain``,
  ``at``, ``incoming``), read from libvirt's own log at the end;
- ``serial``: one guest's serial facts at the end (``boots``, ``monotonic``,
  ``failures``, ``last``, ``beat_after_heal``);
- ``final``: the settled state (``objects``, ``round``) or the last one tried.

A domain's state in a read is one of ``running``, ``paused:<reason>`` and
``shutoff`` (``other`` for the rest).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# A guest may be paused or away on every host for its move's forecast downtime (the
# largest status.plan.downtimeMs of its VMMigrations in the minute before), plus any
# fault that overlapped the stretch (a frozen or killed libvirtd holds a suspended
# source until it is back), plus this margin: a forecast's error, two NonLive copies
# sharing one link, and a retry's backoff (at most 10 s in the campaign's settings).
PAUSE_MARGIN_SECONDS = 30.0
FORECAST_LOOKBACK_SECONDS = 60.0
# A Placed/Ready write is checked against reads of its host this close to it.
PLACED_WINDOW_SECONDS = 3.0
# A DriftDetected Event is true if someone other than the operator moved (or
# stopped) the domain this long before it at most.
DRIFT_LOOKBACK_SECONDS = 180.0
# libvirt's log and our clocks are one machine's; its timestamps have milliseconds.
CLOCK_SLACK_SECONDS = 2.0
# Pause reasons a migration gives (either end): not the VM running.
MIGRATION_PAUSES = ("paused:migration", "paused:starting_up", "paused:postcopy",
                    "paused:postcopy_failed")

INVARIANTS = ("ExactlyOnce", "NeverLost", "ConditionsTrue", "EventsTrue", "Liveness")


@dataclasses.dataclass(frozen=True)
class Violation:
    invariant: str  # one of INVARIANTS
    rule: str  # the rule broken, by name
    at: float
    detail: str
    domain: str | None = None
    host: str | None = None


@dataclasses.dataclass
class Verdict:
    violations: list[Violation] = dataclasses.field(default_factory=list)
    checks: Counter[str] = dataclasses.field(default_factory=Counter)
    unchecked: Counter[str] = dataclasses.field(default_factory=Counter)

    def add(self, violation: Violation) -> None:
        self.violations.append(violation)

    @property
    def ok(self) -> bool:
        return not self.violations


def running(state: str | None) -> bool:
    """Active and not paused for a migration: the VM itself, executing (or paused by a user)."""
    return state is not None and state != "shutoff" and state not in MIGRATION_PAUSES


def present(state: str | None) -> bool:
    return state is not None


def _of(history: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [r for r in history if r.get("k") == kind]


def _setup(history: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    found = _of(history, "setup")
    if not found:
        raise ValueError("the history has no setup record")
    return found[0]


def _fault_windows(history: Sequence[Mapping[str, Any]]) -> list[tuple[float, float, Mapping[str, Any]]]:
    """Each fault with the moment it healed (or the end of the history)."""
    end = max((r["t"] for r in history), default=0.0)
    heals = {r["fault"]: r["t"] for r in _of(history, "heal") if "fault" in r}
    return [(r["t"], heals.get(r["id"], end), r) for r in _of(history, "fault")]


# ---- 1 and 2: exactly once, never lost --------------------------------------------

def _halves(reads: Sequence[Sequence[Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A palindrome round's first pass and second pass, by host."""
    half = len(reads) // 2
    return ({r[0]: r for r in reads[:half]}, {r[0]: r for r in reads[half:]})


def check_rounds(history: Sequence[Mapping[str, Any]], verdict: Verdict) -> None:
    """Exactly once: in a round read A B C C B A, a domain running in both reads of two
    hosts ran on both at one moment (each host's two reads bracket the other's).
    Never lost: no round with every host answering finds a guest defined nowhere, and
    no stretch longer than the margin finds a running guest running nowhere."""
    setup = _setup(history)
    guests, cold = list(setup["guests"]), list(setup.get("cold", ()))
    faults = _fault_windows(history)
    forecasts: dict[str, list[tuple[float, float]]] = defaultdict(list)  # domain: (t, seconds)
    for record in _of(history, "api"):
        if record["kind"] == "VMMigration":
            planned = ((record["obj"].get("status") or {}).get("plan") or {}).get("downtimeMs")
            if planned:
                forecasts[(record["obj"].get("spec") or {}).get("domain", "")].append(
                    (record["t"], planned / 1000))
    away_since: dict[str, float] = {}
    reported_away: set[str] = set()
    for record in _of(history, "round"):
        first, second = _halves(record["reads"])
        all_read = all(first[h][3] is not None and second[h][3] is not None for h in first)
        for domain in guests + cold:
            verdict.checks["ExactlyOnce"] += 1
            both = [h for h in first
                    if first[h][3] is not None and second[h][3] is not None
                    and running(first[h][3].get(domain)) and running(second[h][3].get(domain))]
            if len(both) > 1:
                verdict.add(Violation("ExactlyOnce", "RunningOnTwoHosts", record["t"],
                                      f"{domain} runs on {' and '.join(sorted(both))} in both passes "
                                      f"of one round", domain=domain, host=both[0]))
            if not all_read:
                verdict.unchecked["NeverLost"] += 1
                continue
            verdict.checks["NeverLost"] += 1
            anywhere = any(present(first[h][3].get(domain)) or present(second[h][3].get(domain))
                           for h in first)
            if not anywhere:
                verdict.add(Violation("NeverLost", "DefinedNowhere", record["t"],
                                      f"{domain} is defined on no host", domain=domain))
            if domain in cold:
                continue
            runs = any(running(first[h][3].get(domain)) or running(second[h][3].get(domain))
                       for h in first)
            if runs:
                away_since.pop(domain, None)
                reported_away.discard(domain)
                continue
            since = away_since.setdefault(domain, record["t"])
            overlapping = sum(min(end, record["t"]) - max(start, since)
                              for start, end, _ in faults if start < record["t"] and end > since)
            forecast = max((seconds for at, seconds in forecasts.get(domain, ())
                            if since - FORECAST_LOOKBACK_SECONDS <= at <= record["t"]), default=0.0)
            allowed = PAUSE_MARGIN_SECONDS + max(0.0, overlapping) + forecast
            if record["t"] - since > allowed and domain not in reported_away:
                reported_away.add(domain)
                verdict.add(Violation("NeverLost", "RunningNowhere", record["t"],
                                      f"{domain} has run on no host for {record['t'] - since:.1f} s "
                                      f"(allowed {allowed:.1f} s: {PAUSE_MARGIN_SECONDS:.0f} s plus "
                                      f"{overlapping:.1f} s of faults plus a forecast downtime of "
                                      f"{forecast:.1f} s)", domain=domain))


def check_serial(history: Sequence[Mapping[str, Any]], verdict: Verdict) -> None:
    """The guests' own word: one boot each, one writer (beats never go back), no
    corruption, and a heartbeat after everything healed."""
    for record in _of(history, "serial"):
        domain = record["domain"]
        verdict.checks["ExactlyOnce"] += 3
        verdict.checks["NeverLost"] += 1
        if len(record["boots"]) > 1:
            verdict.add(Violation("ExactlyOnce", "BootedTwice", record["t"],
                                  f"{domain} booted {len(record['boots'])} times: {record['boots']}",
                                  domain=domain))
        if not record["monotonic"]:
            verdict.add(Violation("ExactlyOnce", "TwoWriters", record["t"],
                                  f"{domain}'s heartbeat went backwards: two QEMUs ran it",
                                  domain=domain))
        if record["failures"]:
            verdict.add(Violation("ExactlyOnce", "Corrupted", record["t"],
                                  f"{domain} reported: {record['failures'][:3]}", domain=domain))
        if not record["beat_after_heal"]:
            verdict.add(Violation("NeverLost", "NoHeartbeatAfterHealing", record["t"],
                                  f"{domain} sent no heartbeat after the faults healed "
                                  f"(last: {record['last']})", domain=domain))


# ---- 3: conditions true when written -------------------------------------------

def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for found in (obj.get("status") or {}).get("conditions") or ():
        if found.get("type") == kind:
            return found  # type: ignore[no-any-return]
    return {}


def _reads_of(history: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, float, Any]]]:
    """Every read of every host, in order: (started, ended, domains or None)."""
    by_host: dict[str, list[tuple[float, float, Any]]] = defaultdict(list)
    for record in _of(history, "round"):
        for host, started, ended, domains in record["reads"]:
            by_host[host].append((started, ended, domains))
    return by_host


def check_conditions(history: Sequence[Mapping[str, Any]], verdict: Verdict) -> None:
    """Drained=True only on a host libvirt shows empty of managed VMs, from the moment
    it was written until maintenance ends; Placed/Ready only with the domain running on
    status.currentHypervisor."""
    setup = _setup(history)
    cold = set(setup.get("cold", ()))
    managed = set(setup["guests"]) | cold
    reads = _reads_of(history)
    api = _of(history, "api")
    end = max((r["t"] for r in history), default=0.0)
    # Drained: from each turn to True, to the next record that is not (or maintenance off).
    periods: list[tuple[str, float, float]] = []
    opened: dict[str, float] = {}
    for record in api:
        if record["kind"] != "Hypervisor":
            continue
        name, obj = record["name"], record["obj"]
        drained = (_condition(obj, "Drained").get("status") == "True"
                   and bool((obj.get("spec") or {}).get("maintenance")))
        if drained and name not in opened:
            opened[name] = record["t"]
        elif not drained and name in opened:
            periods.append((name, opened.pop(name), record["t"]))
    periods += [(name, since, end) for name, since in opened.items()]
    for host, since, until in periods:
        verdict.checks["ConditionsTrue"] += 1
        for started, _ended, domains in reads.get(host, ()):
            if started < since or started > until or domains is None:
                continue
            still = sorted(d for d, state in domains.items() if d in managed and state != "shutoff")
            if still:
                verdict.add(Violation("ConditionsTrue", "DrainedButNotEmpty", started,
                                      f"{host} says Drained (since {since:.1f}) while libvirt lists "
                                      f"{', '.join(f'{d} {domains[d]}' for d in still)}",
                                      domain=still[0], host=host))
                break
    # Placed: each write of Ready=True (a new one, not the same state seen again).
    seen: dict[str, tuple[str, str]] = {}
    touched = _touches(history)
    for record in api:
        if record["kind"] != "VMMigration":
            continue
        obj = record["obj"]
        status = obj.get("status") or {}
        key = record["name"]
        placed = status.get("phase") == "Placed" and _condition(obj, "Ready").get("status") == "True"
        state = (status.get("phase") or "", str(status.get("currentHypervisor")) if placed else "")
        before = seen.get(key)
        seen[key] = state
        if not placed or before == state:
            continue
        domain = (obj.get("spec") or {}).get("domain")
        host = status.get("currentHypervisor")
        at = record["t"]
        if _touched_near(touched, domain=domain, host=host, at=at):
            verdict.unchecked["ConditionsTrue"] += 1
            continue
        near = [d for s, _e, d in reads.get(host, ()) if abs(s - at) <= PLACED_WINDOW_SECONDS
                and d is not None]
        if not near:
            verdict.unchecked["ConditionsTrue"] += 1
            continue
        verdict.checks["ConditionsTrue"] += 1
        # A shut-off guest is placed where it is defined; a running one where it runs.
        there = (lambda s: s == "shutoff") if domain in cold else running
        if not any(there(d.get(domain)) for d in near):
            verdict.add(Violation("ConditionsTrue", "PlacedButNotThere", at,
                                  f"VMMigration {key} says Placed on {host}, but libvirt shows "
                                  f"{domain} there as {[d.get(domain) for d in near]}",
                                  domain=domain, host=host))


def _touches(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """What others did to domains and hosts: outside migrations, faults."""
    return [r for r in history if r.get("k") == "fault" or (r.get("k") == "op" and r.get("outside"))]


def _touched_near(touched: Sequence[Mapping[str, Any]], *, domain: str | None, host: str | None,
                  at: float, before: float = 15.0, after: float = PLACED_WINDOW_SECONDS) -> bool:
    for record in touched:
        if at - before <= record["t"] <= at + after and (
                (domain and record.get("domain") == domain) or (host and host in record.get("hosts", ()))):
            return True
    return False


# ---- 4: Events true -------------------------------------------------------------

_MOVED = re.compile(r"moved to (\S+) \((\w+)\)")
_STARTED = re.compile(r"migrating (\S+) from (\S+) to (\S+)(?: \((\w+)\))?")


def check_events(history: Sequence[Mapping[str, Any]], verdict: Verdict) -> None:
    """DriftDetected only after someone else moved or stopped the domain; each
    MigrationSucceeded matches its own incoming QEMU on its target in libvirt's log;
    no second MigrationStarted while the first's libvirt job still ran."""
    domains_of = {r["name"]: (r["obj"].get("spec") or {}).get("domain")
                  for r in _of(history, "api") if r["kind"] == "VMMigration"}
    # Events of an earlier campaign on the same API server come back in the watch's first
    # list; libvirt's records are read from this campaign's start only, and so are they.
    begun = _setup(history)["t"]
    events = sorted((r for r in _of(history, "api") if r["kind"] == "Event" and r["t"] >= begun),
                    key=lambda r: r["t"])
    others = [r for r in history if (r.get("k") == "op" and r.get("outside"))
              or (r.get("k") == "fault" and r.get("domain"))]
    starts: dict[tuple[str, str], list[float]] = defaultdict(list)
    every_start: dict[str, list[float]] = defaultdict(list)
    for record in _of(history, "qemu"):
        if record["incoming"]:
            starts[(record["domain"], record["host"])].append(record["at"])
            every_start[record["domain"]].append(record["at"])
    used: set[tuple[str, str, float]] = set()
    started_events: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    outcomes: dict[str, list[float]] = defaultdict(list)
    for record in events:
        obj = record["obj"]
        reason, message = obj.get("reason"), obj.get("message") or ""
        domain = domains_of.get((obj.get("involvedObject") or {}).get("name", ""))
        if domain is None:
            continue
        at = record["t"]
        if reason == "DriftDetected":
            verdict.checks["EventsTrue"] += 1
            if not any(r.get("domain") == domain and at - DRIFT_LOOKBACK_SECONDS <= r["t"] <= at
                       for r in others):
                verdict.add(Violation("EventsTrue", "DriftWithoutMover", at,
                                      f"DriftDetected for {domain} ({message!r}) but nobody else moved "
                                      f"or stopped it in the {DRIFT_LOOKBACK_SECONDS:.0f} s before",
                                      domain=domain))
        elif reason == "MigrationSucceeded":
            outcomes[domain].append(at)
            moved = _MOVED.search(message)
            if moved is None or moved.group(2) == "Offline":
                continue  # an offline move starts no QEMU
            target = moved.group(1)
            candidates = [s for s in starts.get((domain, target), ())
                          if s <= at + CLOCK_SLACK_SECONDS and (domain, target, s) not in used]
            if not candidates:
                verdict.add(Violation("EventsTrue", "SucceededWithoutIncomingQemu", at,
                                      f"MigrationSucceeded for {domain} to {target} ({message!r}) matches "
                                      f"no incoming QEMU start libvirt logged on {target}",
                                      domain=domain, host=target))
            else:
                used.add((domain, target, max(candidates)))
            verdict.checks["EventsTrue"] += 1
        elif reason == "MigrationStarted":
            started = _STARTED.search(message)
            if started is not None and started.group(4) != "Offline":
                started_events[domain].append(record)
        elif reason in ("MigrationFailed", "MigrationAborted", "Replanned", "Blocked"):
            outcomes[domain].append(at)
    for domain, announced in started_events.items():
        qemus = sorted(every_start.get(domain, ()))
        for first, second in zip(announced, announced[1:]):
            verdict.checks["EventsTrue"] += 1
            t1, t2 = first["t"], second["t"]
            # The job announced first began (its QEMU on the target) before the second
            # announcement, and the second got no QEMU of its own before the next one.
            own_first = [s for s in qemus if t1 - CLOCK_SLACK_SECONDS <= s < t2 - CLOCK_SLACK_SECONDS]
            later = [a["t"] for a in announced if a["t"] > t2]
            own_second = [s for s in qemus if t2 - CLOCK_SLACK_SECONDS <= s
                          < (later[0] if later else float("inf"))]
            ended = any(t1 < o < t2 for o in outcomes.get(domain, ()))
            if own_first and not own_second and not ended:
                verdict.add(Violation("EventsTrue", "StartedTwiceForOneJob", t2,
                                      f"two MigrationStarted for {domain} ({t2 - t1:.1f} s apart) and "
                                      f"libvirt began one migration for them",
                                      domain=domain))


# ---- 5: liveness -----------------------------------------------------------------

# A live copy cannot converge when the guest rewrites memory at half the copy's cap or
# faster (the rest of the cap must outrun the rewrite of its hot set, pass after pass).
NON_CONVERGING_SHARE = 0.5


def _cannot_converge(vmm: Mapping[str, Any], rates: Mapping[str, float]) -> bool:
    """A failure to converge whose cause is still true: the guest dirties memory fast
    enough, for the bandwidth its spec caps the move at, that a live copy never ends."""
    spec, status = vmm.get("spec") or {}, vmm.get("status") or {}
    failure = status.get("lastFailure") or {}
    cap = (spec.get("policy") or {}).get("bandwidthMiBPerSecond") or 0
    rate = rates.get(spec.get("domain", ""), 0.0)
    return (failure.get("reason") == "TimedOut" and "converge" in (failure.get("message") or "")
            and cap > 0 and rate >= NON_CONVERGING_SHARE * cap)


# Blocked reasons whose cause the checker can confirm from the objects themselves.
def _cause_still_true(reason: str, vmm: Mapping[str, Any], hypervisors: Mapping[str, Any]) -> bool:
    spec = vmm.get("spec") or {}
    target = spec.get("targetHypervisor")
    if reason == "HostInMaintenance":
        return bool(target and ((hypervisors.get(target) or {}).get("spec") or {}).get("maintenance"))
    if reason == "DowntimeBudget":
        return spec.get("mode", "Auto") == "Auto"
    if reason == "VolumeExists":
        # A carry back to a host that kept the earlier copy's volume: never overwritten, and
        # the campaign never removes one, so the cause stays true until a person acts.
        return spec.get("mode") == "Offline"
    return False


def settled(objects: Mapping[str, Any], reads: Mapping[str, Any] | None,
            rates: Mapping[str, float] | None = None) -> list[str]:
    """What still keeps the fleet from the state its specs ask for (empty: settled).

    ``objects`` has ``vmms`` and ``hypervisors`` (by name, as the API returns them);
    ``reads`` maps each host to its domains (None: not answering); ``rates`` each
    guest's dirty rate in MiB/s, as the campaign made it."""
    wrong: list[str] = []
    hypervisors = objects["hypervisors"]
    for name, hv in sorted(hypervisors.items()):
        spec, status = hv.get("spec") or {}, hv.get("status") or {}
        if spec.get("maintenance"):
            wrong.append(f"{name} is still in maintenance")
        elif (status.get("drain") or {}).get("state") == "Draining":
            wrong.append(f"{name}'s drain has not ended")
    for name, vmm in sorted(objects["vmms"].items()):
        spec, status = vmm.get("spec") or {}, vmm.get("status") or {}
        phase, domain = status.get("phase"), spec.get("domain")
        ready = _condition(vmm, "Ready")
        blocked = _condition(vmm, "Blocked")
        if blocked.get("status") == "True":
            if not _cause_still_true(blocked.get("reason", ""), vmm, hypervisors):
                wrong.append(f"{name} is Blocked ({blocked.get('reason')}: {blocked.get('message')}) "
                             "for a cause the checker cannot confirm")
            continue
        if spec.get("abort"):
            if phase not in ("Aborted", "Placed"):
                wrong.append(f"{name} asks to abort but is {phase}")
            continue
        if phase == "Displaced" and ((hypervisors.get(spec.get("targetHypervisor")) or {})
                                     .get("spec") or {}).get("maintenance"):
            continue
        if phase == "Failed" and _cannot_converge(vmm, rates or {}):
            continue
        if phase != "Placed":
            wrong.append(f"{name} is {phase} ({ready.get('reason')}: {ready.get('message')})")
            continue
        if spec.get("placement") == "Once":
            continue  # placed once and then left alone: anyone may move it since
        current = status.get("currentHypervisor")
        target = spec.get("targetHypervisor")
        if spec.get("driftAction") == "Report" and _condition(vmm, "Drifted").get("status") == "True":
            continue  # moved by someone else, and the spec only asks to be told
        if target and current != target:
            wrong.append(f"{name} is Placed on {current}, its spec asks for {target}")
            continue
        host_reads = (reads or {}).get(current)
        state = host_reads.get(domain) if host_reads else None
        cold = spec.get("mode") == "Offline"
        if host_reads is None:
            wrong.append(f"{current} (where {name} is placed) does not answer")
        elif (state == "shutoff") != cold or state is None:
            wrong.append(f"{name} is Placed on {current}, where libvirt shows {domain} as {state}")
    return wrong


def check_final(history: Sequence[Mapping[str, Any]], verdict: Verdict) -> None:
    finals = _of(history, "final")
    verdict.checks["Liveness"] += 1
    if not finals:
        verdict.add(Violation("Liveness", "NeverSettled", history[-1]["t"] if history else 0.0,
                              "the campaign recorded no final state"))
        return
    final = finals[-1]
    for problem in final.get("unsettled") or ():
        verdict.add(Violation("Liveness", "NotSettledAfterHealing", final["t"],
                              f"{problem} (bound {final.get('bound')} s after healing)"))


def check(history: Sequence[Mapping[str, Any]]) -> Verdict:
    verdict = Verdict()
    check_rounds(history, verdict)
    check_serial(history, verdict)
    check_conditions(history, verdict)
    check_events(history, verdict)
    check_final(history, verdict)
    verdict.violations.sort(key=lambda v: v.at)
    return verdict


def shortest_history(history: Sequence[Mapping[str, Any]], violation: Violation,
                     *, keep: int = 20) -> list[Mapping[str, Any]]:
    """The operations and faults before a violation that touched its domain or host, or
    were global (the operator, the API server): the least a reader needs to replay it."""
    relevant = []
    faults: set[int] = set()
    for record in history:
        if record["t"] > violation.at:
            break
        if record.get("k") == "heal":
            if record.get("fault") in faults:
                relevant.append(record)
            continue
        if record.get("k") not in ("op", "fault"):
            continue
        hosts = set(record.get("hosts", ()))
        if (record.get("domain") in (None, violation.domain) and not hosts) or \
                record.get("domain") == violation.domain or violation.host in hosts:
            relevant.append(record)
            if record.get("k") == "fault":
                faults.add(record["id"])
    return relevant[-keep:]
