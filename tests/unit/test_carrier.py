"""The carrier's verification and clean-up, against volumes held in memory.

The end-to-end path runs on real libvirt hosts (tests/integration/test_carry.py); a
target that silently writes wrong bytes cannot be had from a real libvirtd on demand, so
that rule is shown here.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from vmmigration.core.carry import CarryPlan, Pool, Slot, Volume, VolumeCopy, marker_name
from vmmigration.core.location import Location
from vmmigration.core.model import MIB, DomainSummary, MigrationRequest, Mode, PauseReason, PowerState, Storage
from vmmigration.core.reasons import Reason
from vmmigration.service.carrier import Carrier
from vmmigration.service.outcomes import MigrationCancelled, MigrationError


class Reader:
    def __init__(self, content: bytes) -> None:
        self.pieces: list[bytes | int] = []
        for at in range(0, len(content), MIB):
            chunk = content[at:at + MIB]
            self.pieces.append(len(chunk) if not any(chunk) else chunk)

    def read(self) -> bytes | int:
        return self.pieces.pop(0) if self.pieces else b""

    def finish(self) -> None: ...

    def abort(self) -> None: ...


class Writer:
    def __init__(self, store: Store, path: str) -> None:
        self.store, self.path, self.at = store, path, 0

    def write(self, data: bytes) -> None:
        if self.store.corrupt_at is not None and self.at <= self.store.corrupt_at < self.at + len(data):
            data = bytearray(data)
            data[self.store.corrupt_at - self.at] ^= 0xFF
        self.store.files[self.path][self.at:self.at + len(data)] = data
        self.at += len(data)

    def hole(self, length: int) -> None:
        self.at += length

    def finish(self) -> None: ...

    def abort(self) -> None: ...


@dataclasses.dataclass
class Store:
    """One host's volumes: paths to bytes."""

    files: dict[str, bytearray] = dataclasses.field(default_factory=dict)
    corrupt_at: int | None = None

    def refresh(self) -> None: ...

    def volume(self, path: str) -> Volume | None:
        if path not in self.files:
            return None
        size = len(self.files[path])
        return Volume(path=path, pool="local", name=path.rsplit("/", 1)[1], format="raw",
                      capacity_bytes=size, physical_bytes=size, allocation_bytes=size, mtime="7")

    def pools(self) -> dict[str, Pool]:
        return {"local": Pool(name="local", path="/images", available_bytes=1 << 40)}

    def names(self, pool: str) -> set[str]:
        return {p.rsplit("/", 1)[1] for p in self.files}

    def in_use(self) -> set[str]:
        return set()

    def create(self, *, pool: str, name: str, length: int) -> str:
        self.files[f"/images/{name}"] = bytearray(length)
        return f"/images/{name}"

    def delete(self, path: str) -> None:
        self.files.pop(path, None)

    def mark(self, *, pool: str, name: str, note: dict[str, Any]) -> None:
        self.files[f"/images/{marker_name(name)}"] = bytearray(b"{}")

    def unmark(self, *, pool: str, name: str) -> None:
        self.files.pop(f"/images/{marker_name(name)}", None)

    def download(self, path: str) -> Reader:
        return Reader(bytes(self.files[path]))

    def upload(self, path: str) -> Writer:
        return Writer(self, path)


@dataclasses.dataclass
class FakeHost:
    uri: str
    volumes: Store
    defines: bool = False

    def find(self, name: str) -> DomainSummary | None:
        return DomainSummary(name=name, uuid="u", state=PowerState.SHUT_OFF, pause_reason=PauseReason.NONE,
                             memory_bytes=MIB, persistent=True) if self.defines else None


CONTENT = bytes(3 * MIB) + b"data" * (MIB // 4) + bytes(2 * MIB)
REQUEST = MigrationRequest(domain="vm", source_uri="qemu+tcp://a/system", target_uri="qemu+tcp://b/system",
                           mode=Mode.OFFLINE, storage=Storage.COPY_ALL)


def _setup(**target: Any) -> tuple[FakeHost, FakeHost, CarryPlan]:
    source = FakeHost("qemu+tcp://a/system", Store({"/images/vm.img": bytearray(CONTENT)}), defines=True)
    there = FakeHost("qemu+tcp://b/system", Store(**target))
    volume = source.volumes.volume("/images/vm.img")
    assert volume is not None
    plan = CarryPlan(copies=(VolumeCopy(source=volume, target_pool="local", target_path="/images/vm.img",
                                        layer=0),))
    return source, there, plan


def carry(source: FakeHost, target: FakeHost, plan: CarryPlan, cancel: threading.Event | None = None):  # type: ignore[no-untyped-def]
    return Carrier(sleep=lambda _s: None).carry(REQUEST, plan, source=source, target=target,  # type: ignore[arg-type]
                                                cancel=cancel or threading.Event(), detach=None,
                                                on_update=None)


def test_a_verified_copy_holds_the_same_bytes_and_stays_marked_until_the_move_is_over() -> None:
    source, target, plan = _setup()
    carried = carry(source, target, plan)
    assert bytes(target.volumes.files["/images/vm.img"]) == CONTENT
    assert "/images/vm.img.vmm-partial" in target.volumes.files
    assert carried.sent_bytes == MIB and carried.hole_bytes == 5 * MIB


def test_a_copy_that_reads_back_different_is_refused_removed_and_the_source_kept() -> None:
    source, target, plan = _setup(corrupt_at=3 * MIB + 17)
    with pytest.raises(MigrationError) as failed:
        carry(source, target, plan)
    assert failed.value.reason is Reason.COPY_MISMATCH
    assert failed.value.location is Location.SOURCE
    assert target.volumes.files == {}, "the bad copy and its marker must be gone"
    assert bytes(source.volumes.files["/images/vm.img"]) == CONTENT


def test_a_cancelled_copy_leaves_nothing_on_the_target() -> None:
    source, target, plan = _setup()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(MigrationCancelled):
        carry(source, target, plan, cancel)
    assert target.volumes.files == {}


def test_our_leftover_from_a_crashed_attempt_is_removed_before_the_copy_starts() -> None:
    source, target, plan = _setup(files={"/images/vm.img": bytearray(b"half"),
                                         "/images/vm.img.vmm-partial": bytearray(b"{}")})
    plan = dataclasses.replace(plan, slots={"/images/vm.img": Slot(exists=True, ours=True, marked=True)})
    carry(source, target, plan)
    assert bytes(target.volumes.files["/images/vm.img"]) == CONTENT


def test_copies_of_a_domain_already_defined_on_the_target_are_never_removed() -> None:
    source, target, plan = _setup(corrupt_at=3 * MIB)
    target.defines = True
    with pytest.raises(MigrationError):
        carry(source, target, plan)
    assert "/images/vm.img" in target.volumes.files
