"""The checker's eyes: libvirt, the API server's watches, libvirt's QEMU logs and the
guests' serial consoles, recorded into the campaign's history.

Like the checker, it imports nothing of ``vmmigration``: it opens its own libvirt
connections with libvirt-python and runs kubectl for the watches.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import libvirt

from vmtestbed import guest

READ_TIMEOUT_SECONDS = 2.0

_PAUSES = {
    libvirt.VIR_DOMAIN_PAUSED_USER: "paused:user",
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "paused:migration",
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "paused:starting_up",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "paused:postcopy",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "paused:postcopy_failed",
}


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; a frozen host makes hundreds."""


libvirt.registerErrorHandler(_quiet, None)


def state_name(state: int, reason: int) -> str:
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return "running"
    if state == libvirt.VIR_DOMAIN_PAUSED:
        return _PAUSES.get(reason, "paused:other")
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return "shutoff"
    return "other"


class HostEye:
    """One host, read on a thread of its own so that a frozen libvirtd costs a read's
    timeout and never stalls the others."""

    def __init__(self, name: str, uri: str) -> None:
        self.name, self.uri = name, uri
        self._conn: libvirt.virConnect | None = None
        self._requests: queue.Queue[queue.Queue[dict[str, str] | None]] = queue.Queue()
        self._busy = threading.Event()
        threading.Thread(target=self._serve, daemon=True, name=f"eye-{name}").start()

    def _serve(self) -> None:
        while True:
            reply = self._requests.get()
            try:
                reply.put(self._read())
            finally:
                self._busy.clear()

    def _read(self) -> dict[str, str] | None:
        try:
            if self._conn is None:
                self._conn = libvirt.open(self.uri)
            found = {}
            for dom in self._conn.listAllDomains():
                try:
                    state, reason = dom.state()
                    found[dom.name()] = state_name(state, reason)
                except libvirt.libvirtError as error:
                    if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
            return found
        except libvirt.libvirtError:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass
            return None

    def read(self) -> dict[str, str] | None:
        """The host's domains and their states, or None if it did not answer in time."""
        if self._busy.is_set():
            return None  # still stuck in an earlier read (a frozen libvirtd)
        self._busy.set()
        reply: queue.Queue[dict[str, str] | None] = queue.Queue(maxsize=1)
        self._requests.put(reply)
        try:
            return reply.get(timeout=READ_TIMEOUT_SECONDS)
        except queue.Empty:
            return None


class Sampler:
    """Palindrome rounds (A B C C B A) of every host, as often as they go."""

    def __init__(self, hosts: Mapping[str, str], record: Callable[[dict[str, Any]], None],
                 interval: float = 0.5) -> None:
        self.eyes = [HostEye(name, uri) for name, uri in hosts.items()]
        self.record, self.interval = record, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self.rounds = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def round(self) -> dict[str, Any]:
        reads = []
        for eye in [*self.eyes, *reversed(self.eyes)]:
            started = time.time()
            found = eye.read()
            reads.append([eye.name, started, time.time(), found])
        self.rounds += 1
        return {"t": reads[0][1], "k": "round", "reads": reads}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.record(self.round())
            self._stop.wait(self.interval)


# The fields of our objects the checker reads (by the CRDs' names), to keep the history small.
def _reduce(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    if kind == "Event":
        return {"reason": obj.get("reason"), "message": obj.get("message"), "type": obj.get("type"),
                "involvedObject": {k: (obj.get("involvedObject") or {}).get(k) for k in ("kind", "name")},
                "count": obj.get("count"), "lastTimestamp": obj.get("lastTimestamp"),
                "uid": meta.get("uid")}
    status = obj.get("status") or {}
    kept = {"conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                           for c in status.get("conditions") or ()]}
    if kind == "Hypervisor":
        kept["drain"] = {k: (status.get("drain") or {}).get(k) for k in ("state", "total", "moved")}
    else:
        kept.update({k: status.get(k) for k in ("phase", "currentHypervisor", "targetHypervisor",
                                                "effectiveMode", "domainState")})
        kept["plan"] = {"downtimeMs": (status.get("plan") or {}).get("downtimeMs")}
    return {"spec": obj.get("spec") or {}, "status": kept,
            "generation": meta.get("generation"), "deleted": False}


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return None


class Watch:
    """``kubectl get KIND --watch`` as JSON, restarted whenever it ends (an API server
    restart ends it; the re-list brings the current state back)."""

    def __init__(self, *, kubectl: Sequence[str], resource: str, kind: str,
                 record: Callable[[dict[str, Any]], None], all_namespaces: bool = False) -> None:
        self.command = [*kubectl, "get", resource, "--watch", "--output-watch-events", "-o", "json"]
        if all_namespaces:
            self.command.append("--all-namespaces")
        self.kind, self.record = kind, record
        self._stop = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._seen: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{kind}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.kill()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        decoder = json.JSONDecoder()
        while not self._stop.is_set():
            self._process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True)
            assert self._process.stdout is not None
            buffer = ""
            for line in self._process.stdout:
                buffer += line
                while True:
                    stripped = buffer.lstrip()
                    if not stripped:
                        buffer = ""
                        break
                    try:
                        event, used = decoder.raw_decode(stripped)
                    except ValueError:
                        break
                    buffer = stripped[used:]
                    self._deliver(event)
            self._process.wait()
            self._stop.wait(0.5)

    def _deliver(self, event: Mapping[str, Any]) -> None:
        obj = event.get("object") or {}
        now = time.time()
        name = (obj.get("metadata") or {}).get("name", "")
        reduced = _reduce(self.kind, obj)
        at = now
        if self.kind == "Event":
            uid = reduced.get("uid") or ""
            if uid in self._seen:
                return
            self._seen.add(uid)
            # An Event first seen in a re-list after a restart of the watch happened
            # earlier: its own timestamp (seconds) is nearer the truth than now.
            stamped = _timestamp(reduced.get("lastTimestamp"))
            if stamped is not None and now - stamped > 3.0:
                at = stamped + 0.5
        if event.get("type") == "DELETED":
            reduced["deleted"] = True
        self.record({"t": at, "k": "api", "kind": self.kind, "name": name, "obj": reduced})


# ---- after the run: libvirt's QEMU logs, the serial consoles ----------------------

_QEMU_START = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\+0000: starting up libvirt",
                         re.MULTILINE)


def _libvirt_time(text: str) -> float:
    whole, _, fraction = text.partition(".")
    base = time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) - time.timezone
    return base + float(f"0.{fraction}")


def qemu_starts(*, host: str, log_dir: Path, domain: str, since: float) -> list[dict[str, Any]]:
    """Every QEMU the host's libvirtd started for ``domain`` since ``since``, from its own log."""
    path = log_dir / f"{domain}.log"
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    marks = list(_QEMU_START.finditer(text))
    found = []
    for index, mark in enumerate(marks):
        at = _libvirt_time(mark.group(1))
        if at < since:
            continue
        block = text[mark.start():marks[index + 1].start() if index + 1 < len(marks) else len(text)]
        found.append({"t": at, "k": "qemu", "host": host, "domain": domain, "at": at,
                      "incoming": bool(re.search(r"^-incoming ", block, re.MULTILINE))})
    return found


_HEARTBEAT = re.compile(rb"HB boot=(\w+) n=(\d+) pass=(\d+)")


def serial_facts(*, domain: str, log: Path, healed_at: float) -> dict[str, Any]:
    """What the guest itself said: its boots, whether its beats only went up, what it
    reported, and whether it beat after everything healed (the log grew since)."""
    data = log.read_bytes() if log.exists() else b""
    beats = [(m.group(1).decode(), int(m.group(2))) for m in _HEARTBEAT.finditer(data)]
    boots = sorted({boot for boot, _ in beats})
    counts = [n for _, n in beats]
    return {"t": time.time(), "k": "serial", "domain": domain, "boots": boots,
            "monotonic": counts == sorted(counts),
            "failures": [m.group(0).decode() for m in guest.FAILURE.finditer(data)][:5],
            "last": counts[-1] if counts else None,
            "beat_after_heal": log.exists() and log.stat().st_mtime > healed_at}
