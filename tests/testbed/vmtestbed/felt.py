"""What a move feels like from inside the guest, measured from the host.

The guest cannot time its own pause: QEMU stops its clock along with its CPU,
so after a switch-over the guest's monotonic clock simply carries on where it
stopped. The host's clock does not stop. :class:`HeartbeatTail` therefore
reads the guest's serial log as it grows and stamps every heartbeat line
(``HB boot=… n=… pass=… pages=…``, see memwriter.c) with the host's
``time.monotonic()`` when it shows up. Two figures come out of the stamps:

- the *felt downtime*: the longest silence between two heartbeats. It is an
  upper bound of the pause, too long by at most one heartbeat period (and by
  the tail's polling interval), so it is reported beside that period;
- the *slow time*: how long the guest wrote pages at under half its steady
  rate, as it does in post-copy while every page it touches is fetched over
  the link.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path

_BEAT = re.compile(rb"HB boot=(\w+) n=(\d+) pass=\d+ pages=(\d+)")


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One heartbeat and the host's monotonic time at which it reached the log."""

    at: float
    boot: str
    count: int
    pages: int


class HeartbeatTail:
    """Tails a serial log in a background thread and stamps each heartbeat as it arrives.

    Polling (every ``poll_seconds``, a few milliseconds) rather than inotify:
    the log is written by a QEMU in another network namespace and, after a
    move, by another QEMU, and a plain read of the appended bytes works the
    same for both. Only whole lines are parsed; a partial line waits for its end.
    """

    def __init__(self, log: Path, *, poll_seconds: float = 0.003) -> None:
        self.log = log
        self.poll_seconds = poll_seconds
        self._arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tail-{log.name}", daemon=True)

    def __enter__(self) -> HeartbeatTail:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # Start at the current end: older heartbeats carry no arrival time.
        offset = self.log.stat().st_size if self.log.exists() else 0
        pending = b""
        while not self._stop.is_set():
            try:
                with self.log.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            now = time.monotonic()
            if chunk:
                offset += len(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                beats = [m for m in (_BEAT.search(line) for line in lines) if m is not None]
                with self._lock:
                    self._arrivals += [Arrival(at=now, boot=m.group(1).decode(), count=int(m.group(2)),
                                               pages=int(m.group(3))) for m in beats]
            self._stop.wait(self.poll_seconds)

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals)

    def largest_gap(self, start: float, end: float) -> float:
        """The longest silence (seconds) between consecutive heartbeats that touches [start, end].

        Nothing is subtracted: a reader compares it with the heartbeat period
        (the figure's resolution). NaN when fewer than two heartbeats arrived.
        """
        beats = self.arrivals()
        gaps = [b.at - a.at for a, b in zip(beats, beats[1:]) if b.at >= start and a.at <= end]
        return max(gaps, default=float("nan"))

    def steady_rate(self, start: float, end: float) -> float:
        """Pages written per second between the first and the last heartbeat in [start, end]."""
        beats = [b for b in self.arrivals() if start <= b.at <= end]
        if len(beats) < 2 or beats[-1].at <= beats[0].at:
            return float("nan")
        return (beats[-1].pages - beats[0].pages) / (beats[-1].at - beats[0].at)

    def slow_seconds(self, start: float, end: float, *, steady: float,
                     window_seconds: float = 0.2) -> float:
        """How long in [start, end] the guest wrote pages at under half of ``steady`` (pages/s).

        Judged per window of ``window_seconds`` (several heartbeats: a single
        10 ms interval is too noisy on a busy TCG host), by the ``pages=``
        counter of the last heartbeat at or before each window's edges. A
        window with no heartbeat at all (a pause) counts as slow too.
        """
        beats = self.arrivals()
        if not beats or steady != steady or steady <= 0:
            return float("nan")

        def pages_at(t: float) -> int | None:
            seen = [b.pages for b in beats if b.at <= t]
            return seen[-1] if seen else None

        slow = 0.0
        t = start
        while t < end:
            step = min(window_seconds, end - t)
            before, after = pages_at(t), pages_at(t + step)
            if before is None or after is None or (after - before) / step < steady / 2:
                slow += step
            t += step
        return slow
