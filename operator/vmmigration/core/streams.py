"""Pure: the mechanics of one sparse volume stream, whatever it carries.

A stream gives data and holes in order. :class:`ContentDigest` says what content it
held, whichever end kept which holes, so a copy can be compared with what was sent;
:class:`Pacer` keeps the data under a bandwidth cap (holes cost nothing).
"""

from __future__ import annotations

import hashlib

from vmmigration.core.model import MIB

# Digest blocks: a block of zeros counts as a hole, wherever either end keeps one.
DIGEST_BLOCK_BYTES = 1 * MIB


class ContentDigest:
    """A digest of a volume's content that does not depend on where either end keeps holes.

    The content is cut into fixed blocks by offset; a block of zeros (read as data or
    sent as a hole) adds nothing, any other adds its offset and bytes. Two files with the
    same length and digest hold the same bytes at every offset, sparse or not.
    """

    _ZEROS = bytes(DIGEST_BLOCK_BYTES)

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._block = bytearray()
        self._block_start = 0
        self.length = 0

    def feed(self, piece: bytes | int) -> None:
        """One piece as a sparse stream gives it: data, or an int for a hole's length."""
        if isinstance(piece, int):
            self.hole(piece)
        else:
            self.data(piece)

    def data(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            room = DIGEST_BLOCK_BYTES - len(self._block)
            self._block += view[:room]
            view = view[room:]
            if len(self._block) == DIGEST_BLOCK_BYTES:
                self._flush()
        self.length += len(chunk)

    def hole(self, length: int) -> None:
        if length < 0:
            raise ValueError("a hole cannot be negative")
        left = length
        # Fill the open block with zeros; whole blocks of hole are skipped without touching memory.
        if self._block:
            fill = min(left, DIGEST_BLOCK_BYTES - len(self._block))
            self._block += self._ZEROS[:fill]
            left -= fill
            if len(self._block) == DIGEST_BLOCK_BYTES:
                self._flush()
        whole = left // DIGEST_BLOCK_BYTES
        self._block_start += whole * DIGEST_BLOCK_BYTES
        left -= whole * DIGEST_BLOCK_BYTES
        if left:
            self._block += self._ZEROS[:left]
        self.length += length

    def _flush(self) -> None:
        block = bytes(self._block)
        if block != self._ZEROS[:len(block)]:
            self._hash.update(self._block_start.to_bytes(8, "big"))
            self._hash.update(len(block).to_bytes(8, "big"))
            self._hash.update(block)
        self._block_start += len(block)
        self._block = bytearray()

    def hexdigest(self) -> str:
        """The digest (the length is compared on its own); ends the feed."""
        if self._block:
            self._flush()
        return self._hash.hexdigest()


class Pacer:
    """How long to wait before sending more, so data stays under a cap (holes are free).

    A cap of 0 means none. The allowance is measured from the stream's start, so a
    slow stretch (a busy disk) is not made up for by a burst above the cap later than
    one second's worth.
    """

    def __init__(self, *, mib_per_s: int, started: float) -> None:
        self.bytes_per_s = mib_per_s * MIB
        self.started = started
        self.sent = 0

    def wait_seconds(self, *, now: float) -> float:
        if not self.bytes_per_s:
            return 0.0
        due = self.started + self.sent / self.bytes_per_s
        if now - due > 1.0:
            # Idle for long: forget the unused allowance beyond a second.
            self.started += now - due - 1.0
            due = now - 1.0
        return max(0.0, due - now)

    def sent_data(self, count: int) -> None:
        self.sent += count

    def retune(self, *, mib_per_s: int, now: float) -> None:
        self.bytes_per_s = mib_per_s * MIB
        self.started, self.sent = now, 0
