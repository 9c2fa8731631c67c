"""Opening libvirt connections that fail, rather than hang, when their host falls silent."""

from __future__ import annotations

import contextlib
import threading

import libvirt

from vmmigration.core.errors import HostUnreachable
from vmmigration.core.model import display_uri, redacted

# How long a libvirt host may stay silent before we give up on it: the time to
# connect, and, through libvirt's keepalive, the silence allowed on a connection
# (libvirtd gives its own peer-to-peer connections the same 30 s: 5 s x 5).
DEFAULT_TIMEOUT_SECONDS = 30.0
KEEPALIVE_COUNT = 5

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ensure_event_loop() -> None:
    """Run libvirt's default event loop in a thread of its own, once per process.

    libvirt's client sends keepalive messages only when an event loop is
    registered, and must have it before the first connection is opened.
    Without keepalive a call to a host that hangs (a stopped libvirtd, a host
    gone from the network without a reset) blocks forever.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def open_bounded(uri: str, *, timeout_seconds: float) -> libvirt.virConnect:
    """libvirt.open(), given up after ``timeout_seconds``.

    libvirt's client has no connect timeout: a host that accepts the TCP
    connection and never answers holds virConnectOpen forever. The opening
    runs in a thread of its own; if we stop waiting, that thread closes
    whatever it opens later, so nothing leaks but the thread, for as long as
    the host hangs.
    """
    lock = threading.Lock()
    outcome: list[libvirt.virConnect | libvirt.libvirtError] = []
    abandoned = False

    def opener() -> None:
        try:
            result: libvirt.virConnect | libvirt.libvirtError = libvirt.open(uri)
        except libvirt.libvirtError as error:
            result = error
        with lock:
            if not abandoned:
                outcome.append(result)
                return
        if isinstance(result, libvirt.virConnect):
            with contextlib.suppress(libvirt.libvirtError):
                result.close()

    thread = threading.Thread(target=opener, name=f"libvirt-open {display_uri(uri)}", daemon=True)
    thread.start()
    thread.join(timeout_seconds)
    with lock:
        if not outcome:
            abandoned = True
            raise HostUnreachable(f"cannot connect to {display_uri(uri)}: libvirt did not "
                                  f"answer within {timeout_seconds:g} s")
    result = outcome[0]
    if isinstance(result, libvirt.libvirtError):
        said = redacted(str(result.get_error_message() or result), uri=uri)
        raise HostUnreachable(f"cannot connect to {display_uri(uri)}: {said}") from result
    return result


def connection(uri: str, *, timeout_seconds: float) -> libvirt.virConnect:
    """A connection that fails, rather than hangs, once its host is silent for the timeout."""
    _ensure_event_loop()
    conn = open_bounded(uri, timeout_seconds=timeout_seconds)
    # Local drivers (test:///) have no keepalive; they cannot hang on a peer.
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(max(1, round(timeout_seconds / (KEEPALIVE_COUNT + 1))), KEEPALIVE_COUNT)
    return conn
