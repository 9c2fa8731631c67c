"""The pure rules of carrying a shut-off domain's volumes: the plan, its refusals, the digest,
the pace and the progress."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmmigration.core import carry
from vmmigration.core.carry import Chain, Pool, Slot, Tally, Volume, VolumeCopy
from vmmigration.core.streams import DIGEST_BLOCK_BYTES, ContentDigest, Pacer
from vmmigration.core.model import MIB, Storage

IMAGES = "/var/lib/libvirt/images"


def volume(name: str, *, pool: str = "local", directory: str = IMAGES, backing: str | None = None,
           allocation: int = 10 * MIB, fmt: str = "qcow2", kind: str = "file") -> Volume:
    return Volume(path=f"{directory}/{name}", pool=pool, name=name, format=fmt,
                  capacity_bytes=1024 * MIB, physical_bytes=allocation + MIB,
                  allocation_bytes=allocation, backing=backing, kind=kind, mtime="1.5")


def chain(*layers: Volume, visible: tuple[bool, ...] | None = None, unmanaged: str | None = None,
          unmanaged_visible: bool = False) -> Chain:
    return Chain(layers=layers, visible=visible or (False,) * len(layers), unmanaged=unmanaged,
                 unmanaged_visible=unmanaged_visible)


POOLS = {"local": Pool(name="local", path=IMAGES, available_bytes=100 * 1024 * MIB),
         "fast": Pool(name="fast", path="/srv/fast", available_bytes=100 * 1024 * MIB),
         "lvm": Pool(name="lvm", path="/dev/vg", available_bytes=100 * 1024 * MIB, kind="logical")}


def empty(_copy: VolumeCopy) -> Slot:
    return Slot()


def plan(*chains: Chain, storage: Storage = Storage.COPY_ALL, pools: dict[str, Pool] = POOLS,
         slot=empty, target_pool: str | None = None) -> carry.CarryPlan:  # type: ignore[no-untyped-def]
    return carry.plan(storage=storage, chains=chains, pools=pools, slot=slot, target_pool=target_pool,
                      target="host2")


def reasons(refused: pytest.ExceptionInfo[carry.CarryRefused]) -> list[str]:
    return [f.reason for f in refused.value.findings]


def test_a_disk_the_target_cannot_see_is_copied_into_the_pool_of_the_same_name_at_the_same_path() -> None:
    planned = plan(chain(volume("vm.qcow2")))
    (copy,) = planned.copies
    assert (copy.target_pool, copy.target_path, copy.layer) == ("local", f"{IMAGES}/vm.qcow2", 0)
    assert planned.rewrites == {} and planned.total_bytes == 10 * MIB


def test_a_disk_the_target_already_sees_is_shared_and_nothing_is_copied() -> None:
    assert plan(chain(volume("vm.qcow2"), visible=(True,))).copies == ()


def test_copy_all_carries_the_backing_layers_down_to_the_first_one_the_target_sees() -> None:
    base, mid = volume("base.qcow2"), volume("mid.qcow2", backing=f"{IMAGES}/base.qcow2")
    top = volume("vm.qcow2", backing=mid.path)
    planned = plan(chain(top, mid, base, visible=(False, False, True)))
    assert [(c.source.name, c.layer) for c in planned.copies] == [("vm.qcow2", 0), ("mid.qcow2", 1)]
    assert [c.source.name for c in planned.top] == ["vm.qcow2"], "only top images are ever deleted"


def test_copy_incremental_carries_only_the_top_image_and_needs_its_backing_on_the_target() -> None:
    base = volume("base.qcow2")
    top = volume("vm.qcow2", backing=base.path)
    assert [c.layer for c in plan(chain(top, base, visible=(False, True)),
                                  storage=Storage.COPY_INCREMENTAL).copies] == [0]
    with pytest.raises(carry.CarryRefused) as refused:
        plan(chain(top, base), storage=Storage.COPY_INCREMENTAL)
    assert reasons(refused) == ["BackingNotVisible"]


def test_another_target_pool_rewrites_the_disk_path_but_a_backing_layer_must_keep_its_path() -> None:
    planned = plan(chain(volume("vm.qcow2")), target_pool="fast")
    assert planned.rewrites == {f"{IMAGES}/vm.qcow2": "/srv/fast/vm.qcow2"}
    base = volume("base.qcow2", pool="other", directory="/elsewhere")
    with pytest.raises(carry.CarryRefused) as refused:
        plan(chain(volume("vm.qcow2", backing=base.path), base),
             pools={**POOLS, "other": Pool(name="other", path="/srv/other", available_bytes=MIB * 1024)})
    assert reasons(refused) == ["BackingChainPath"]
    assert "flatten" in str(refused.value)


def test_every_refusal_is_said_at_once() -> None:
    with pytest.raises(carry.CarryRefused) as refused:
        plan(chain(volume("a.qcow2", pool="gone")), chain(volume("b.qcow2", pool="lvm")),
             chain(volume("c", kind="block")),
             chain(volume("d.qcow2", backing="/loose/base.qcow2"), unmanaged="/loose/base.qcow2"))
    assert reasons(refused) == ["NoTargetPool", "TargetPoolType", "VolumeNotAFile", "BackingNotAVolume"]


def test_a_backing_file_outside_every_pool_is_fine_when_the_target_sees_it() -> None:
    planned = plan(chain(volume("d.qcow2", backing="/loose/base.qcow2"), unmanaged="/loose/base.qcow2",
                         unmanaged_visible=True))
    assert len(planned.copies) == 1


def test_a_volume_of_the_same_name_on_the_target_is_refused_unless_it_is_our_own_leftover() -> None:
    def theirs(_copy: VolumeCopy) -> Slot:
        return Slot(exists=True, allocation_bytes=MIB)

    with pytest.raises(carry.CarryRefused) as refused:
        plan(chain(volume("vm.qcow2")), slot=theirs)
    assert reasons(refused) == ["VolumeExists"]
    assert "never overwritten" in str(refused.value)

    def ours(_copy: VolumeCopy) -> Slot:
        return Slot(exists=True, ours=True, marked=True, allocation_bytes=MIB)

    planned = plan(chain(volume("vm.qcow2")), slot=ours)
    assert planned.slots[f"{IMAGES}/vm.qcow2"].ours, "the carrier must know to remove it first"


def test_two_disks_that_would_land_on_one_path_are_refused() -> None:
    with pytest.raises(carry.CarryRefused) as refused:
        plan(chain(volume("vm.qcow2")), chain(volume("vm.qcow2", pool="fast", directory="/srv/fast")),
             target_pool="local")
    assert reasons(refused) == ["VolumeNameClash"]


def test_a_pool_without_room_for_the_copies_is_refused_counting_the_leftovers_that_will_be_removed() -> None:
    small = {"local": Pool(name="local", path=IMAGES, available_bytes=15 * MIB)}
    with pytest.raises(carry.CarryRefused) as refused:
        plan(chain(volume("a.qcow2")), chain(volume("b.qcow2")), pools=small)
    assert reasons(refused) == ["TargetPoolFull"]
    assert "20 MiB" in str(refused.value)

    def leftover(_copy: VolumeCopy) -> Slot:
        return Slot(exists=True, ours=True, allocation_bytes=3 * MIB)

    assert len(plan(chain(volume("a.qcow2")), chain(volume("b.qcow2")), pools=small,
                    slot=leftover).copies) == 2


def test_storage_shared_carries_nothing_and_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        plan(chain(volume("vm.qcow2")), storage=Storage.SHARED)


def test_the_plan_is_shown_with_every_copy_before_anything_moves() -> None:
    (shown,) = plan(chain(volume("vm.qcow2"))).as_fields()
    assert shown == {"source": f"{IMAGES}/vm.qcow2", "target": f"{IMAGES}/vm.qcow2", "pool": "local",
                     "format": "qcow2", "bytes": 10 * MIB, "capacityBytes": 1024 * MIB, "layer": 0}


def test_the_definition_the_target_gets_names_the_copies() -> None:
    xml = ("<domain><devices><disk type='file'><source file='/a/vm.qcow2'/></disk>"
           "<disk type='file'><source file='/a/other.img'/></disk></devices></domain>")
    out = carry.rewritten(xml, {"/a/vm.qcow2": "/b/vm.qcow2"})
    assert "/b/vm.qcow2" in out and "/a/other.img" in out and "/a/vm.qcow2" not in out


def test_a_marker_is_named_after_the_volume_it_stands_beside() -> None:
    assert carry.marked_volume(carry.marker_name("vm.qcow2")) == "vm.qcow2"
    assert carry.marked_volume("vm.qcow2") is None
    assert carry.marked_volume(carry.MARKER_SUFFIX) is None


def _digest(pieces: list[bytes | int]) -> tuple[int, str]:
    digest = ContentDigest()
    for piece in pieces:
        digest.feed(piece)
    return digest.length, digest.hexdigest()


def _cut(content: bytes, rng: random.Random) -> list[bytes | int]:
    """``content`` as a stream might send it: random chunks, runs of zeros sometimes as holes."""
    pieces: list[bytes | int] = []
    at = 0
    while at < len(content):
        size = rng.randint(1, 3 * MIB)
        chunk = content[at:at + size]
        pieces.append(len(chunk) if not any(chunk) and rng.random() < 0.7 else chunk)
        at += size
    return pieces


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), layout=st.lists(st.tuples(st.booleans(), st.integers(1, 3 * MIB)),
                                                   min_size=1, max_size=6))
def test_the_digest_depends_on_the_content_not_on_where_either_end_keeps_holes(
        seed: int, layout: list[tuple[bool, int]]) -> None:
    rng = random.Random(seed)
    content = b"".join(rng.randbytes(n) if data else bytes(n) for data, n in layout)
    assert _digest(_cut(content, rng)) == _digest(_cut(content, rng)) == _digest([content])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), length=st.integers(1, 4 * MIB))
def test_one_changed_byte_anywhere_changes_the_digest(seed: int, length: int) -> None:
    rng = random.Random(seed)
    content = bytearray(rng.randbytes(length) if rng.random() < 0.5 else bytes(length))
    before = _digest([bytes(content)])
    at = rng.randrange(length)
    content[at] ^= 0x01
    assert _digest(_cut(bytes(content), rng))[1] != before[1]


def test_a_moved_block_changes_the_digest_and_a_longer_file_of_zeros_keeps_it_but_not_the_length() -> None:
    block = b"x" * DIGEST_BLOCK_BYTES
    assert _digest([block, bytes(len(block))])[1] != _digest([bytes(len(block)), block])[1]
    short, long = _digest([block]), _digest([block, 5 * MIB])
    assert short[1] == long[1] and short[0] != long[0], "the length is compared on its own"


def test_the_pacer_keeps_data_under_the_cap_and_holes_cost_nothing() -> None:
    pacer = Pacer(mib_per_s=2, started=100.0)
    assert pacer.wait_seconds(now=100.0) == 0.0
    pacer.sent_data(4 * MIB)
    assert pacer.wait_seconds(now=100.5) == pytest.approx(1.5)
    assert Pacer(mib_per_s=0, started=0.0).wait_seconds(now=0.0) == 0.0


def test_the_pacer_lends_no_more_than_a_second_of_idle_allowance() -> None:
    pacer = Pacer(mib_per_s=1, started=0.0)
    assert pacer.wait_seconds(now=60.0) == 0.0  # idle for a minute
    pacer.sent_data(3 * MIB)
    assert pacer.wait_seconds(now=60.0) == pytest.approx(2.0), "a burst of 59 s of allowance"


def test_the_tally_reports_each_disk_the_total_the_rate_and_the_eta() -> None:
    planned = plan(chain(volume("a.qcow2", allocation=10 * MIB)), chain(volume("b.qcow2", allocation=30 * MIB)))
    tally = Tally(planned, started=0.0)
    tally.add(0, data=10 * MIB, now=1.0)
    tally.add(1, hole=500 * MIB, now=1.0)
    tally.add(1, data=10 * MIB, now=2.0)
    assert [d.copied_bytes for d in tally.disks] == [10 * MIB, 10 * MIB]
    assert tally.percent() == pytest.approx(50.0)
    assert tally.rate(now=2.0) == pytest.approx(10 * MIB)
    assert tally.eta_seconds(now=2.0) == pytest.approx(2.0)
    assert tally.sent_bytes == 20 * MIB and tally.hole_bytes == 500 * MIB
