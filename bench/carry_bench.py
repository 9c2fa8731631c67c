"""Benchmark: carrying a shut-off VM's disk, against plain virsh, on the same hosts and image.

One sandbox of two real libvirtd hosts; one raw image of 2 GiB on host1's local pool
holding 256 MiB of random data in four extents (the rest is holes). Each way copies it
into host2's local pool, through each host's libvirtd over TCP, as the operator reaches them:

- vmmigration's carrier: sparse download → sparse upload through this process, then the copy
  read back and compared (the stream's time and the whole, verified, time);
- ``virsh vol-download … | virsh vol-upload …``: the plain pipe (a pipe cannot keep holes,
  so every byte of the 2 GiB crosses);
- ``virsh vol-download --sparse`` to a file, then ``virsh vol-upload --sparse``: the best
  virsh can do, in two steps through a local file;
- the floor: ``cp --sparse=always`` of the file on this machine's disk, no libvirt at all.

Prints medians of ``--runs`` runs each, the data rate, and the ratio to the carrier's stream.
A script, not a test: nothing here asserts speed.

    .venv/bin/python bench/carry_bench.py [--runs 3] [--data-mib 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


from vmmigration.adapters import libvirt as virt
from vmmigration.core.config import CACHE
from vmmigration.core.model import MIB, MigrationRequest, Mode, Storage, Update
from vmmigration.service.carrier import Carrier, survey
from vmtestbed.testbed import LOCAL_POOL, Sandbox

SIZE = 2048 * MIB
DOMAIN = "carry-bench"
VOLUME = f"{DOMAIN}.img"
POOL_DIR = "/var/lib/libvirt/images"


def make_image(path: Path, *, data_mib: int) -> None:
    subprocess.run(["truncate", "-s", str(SIZE), str(path)], check=True)
    extent = data_mib // 4
    with path.open("r+b") as out:
        for index in range(4):
            out.seek(index * SIZE // 4 + 7 * MIB)
            for _ in range(extent):
                out.write(os.urandom(MIB))


def virsh(uri: str, *args: str) -> list[str]:
    return ["virsh", "-q", "-c", uri, *args]


def fresh_target(uri: str) -> None:
    subprocess.run(virsh(uri, "vol-delete", "--pool", LOCAL_POOL, VOLUME), capture_output=True)
    subprocess.run(virsh(uri, "vol-create-as", LOCAL_POOL, VOLUME, str(SIZE), "--allocation", "0",
                         "--format", "raw"), check=True, capture_output=True)


def timed(action: Callable[[], None]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def serial_stream(a: virt.Host, b: virt.Host) -> None:
    """The carrier's own streams and loop without the digest: what verifying costs in the stream."""
    reader = a.volumes.download(f"{POOL_DIR}/{VOLUME}")
    writer = b.volumes.upload(f"{POOL_DIR}/{VOLUME}")
    while True:
        got = reader.read()
        if isinstance(got, int):
            writer.hole(got)
        elif got:
            writer.write(got)
        else:
            break
    reader.finish()
    writer.finish()


NAMES = {"stream": "vmmigration carrier: sparse stream",
         "verified": "vmmigration carrier: stream + read-back verify",
         "serial": "the same streams without the digest",
         "pipe": "virsh vol-download | virsh vol-upload (pipe)",
         "two-step": "virsh vol-download --sparse; vol-upload --sparse",
         "cp": "floor: cp --sparse=always on local disk"}


def run_table(box: Sandbox, *, runs: int, data_mib: int, pipe: bool) -> dict[str, list[float]]:
    source, target = box.hosts
    image = source.root / "lib" / "images" / VOLUME
    copy = target.root / "lib" / "images" / VOLUME
    scratch = CACHE / "bench-carry" / "scratch.img"
    request = MigrationRequest(domain=DOMAIN, source_uri=source.uri, target_uri=target.uri,
                               mode=Mode.OFFLINE, storage=Storage.COPY_ALL)
    rows: dict[str, list[float]] = {key: [] for key in NAMES if pipe or key != "pipe"}
    carrier = Carrier()
    for _ in range(runs):
        with virt.connect(source.uri) as a, virt.connect(target.uri) as b:
            for left in (copy, copy.with_name(VOLUME + ".vmm-partial")):
                left.unlink(missing_ok=True)
            b.volumes.refresh()
            plan = survey(request, source=a, target=b)
            began = time.perf_counter()
            streamed: list[float] = []

            def seen(update: Update) -> None:
                if not streamed and update.disks and update.disks[0].state == "Verifying":
                    streamed.append(time.perf_counter() - began)

            carried = carrier.carry(request, plan, source=a, target=b, cancel=threading.Event(),
                                    detach=None, on_update=seen)
            rows["verified"].append(time.perf_counter() - began)
            rows["stream"].append(streamed[0])
            assert carried.sent_bytes == data_mib * MIB, carried
            carrier.discard(request, carried, target=b)
            fresh_target(target.uri)
            b.volumes.refresh()
            rows["serial"].append(timed(lambda: serial_stream(a, b)))
        if pipe:
            fresh_target(target.uri)
            rows["pipe"].append(timed(lambda: subprocess.run(
                f"{' '.join(virsh(source.uri, 'vol-download', '--pool', LOCAL_POOL, VOLUME, '/dev/stdout'))}"
                f" | {' '.join(virsh(target.uri, 'vol-upload', '--pool', LOCAL_POOL, VOLUME, '/dev/stdin'))}",
                shell=True, check=True)))
        fresh_target(target.uri)
        scratch.unlink(missing_ok=True)
        rows["two-step"].append(timed(lambda: (
            subprocess.run(virsh(source.uri, "vol-download", "--sparse", "--pool", LOCAL_POOL, VOLUME,
                                 str(scratch)), check=True),
            subprocess.run(virsh(target.uri, "vol-upload", "--sparse", "--pool", LOCAL_POOL, VOLUME,
                                 str(scratch)), check=True)) and None))
        subprocess.run(virsh(target.uri, "vol-delete", "--pool", LOCAL_POOL, VOLUME), check=True,
                       capture_output=True)
        scratch.unlink(missing_ok=True)
        rows["cp"].append(timed(lambda: subprocess.run(
            ["cp", "--sparse=always", str(image), str(scratch)], check=True)))
        scratch.unlink(missing_ok=True)
    return rows


def print_table(rows: dict[str, list[float]], *, data_mib: int, title: str,
                link_mbit: float | None) -> None:
    base = statistics.median(rows["stream"])
    print(f"\n{title}")
    print(f"{'way':<52} {'seconds':>8} {'data MiB/s':>11} {'vs stream':>10}")
    for key, label in NAMES.items():
        if key in rows:
            median = statistics.median(rows[key])
            print(f"{label:<52} {median:8.2f} {data_mib / median:11.0f} {median / base:9.2f}x")
    if link_mbit is not None:
        # Each host's link carries the data once: the copy cannot beat one link's rate.
        floor = data_mib * MIB / (link_mbit * 1e6 / 8)
        print(f"{'floor: the data at one link rate':<52} {floor:8.2f} {data_mib / floor:11.0f} "
              f"{floor / base:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--link-mbit", type=float, default=800.0,
                        help="the second table's rate on each host's management link")
    args = parser.parse_args()
    box = Sandbox(root=CACHE / "bench-carry", count=2, subnet=8)
    box.up()
    source = box.hosts[0]
    try:
        make_image(source.root / "lib" / "images" / VOLUME, data_mib=args.data_mib)
        box.define(box.guest_spec(DOMAIN, disks=(Path(f"{POOL_DIR}/{VOLUME}"),), disk_format="raw"),
                   host=source)
        print(f"2 GiB raw image, {args.data_mib} MiB of random data in 4 extents; "
              f"median of {args.runs} runs; {os.cpu_count()} CPUs")
        rows = run_table(box, runs=args.runs, data_mib=args.data_mib, pipe=True)
        print_table(rows, data_mib=args.data_mib, title="management links unshaped (veth)",
                    link_mbit=None)
        for host in box.hosts:
            box.shape(host, rate_mbit=args.link_mbit, link="management")
        rows = run_table(box, runs=args.runs, data_mib=args.data_mib, pipe=False)
        print_table(rows, data_mib=args.data_mib, link_mbit=args.link_mbit,
                    title=f"each host's management link shaped to {args.link_mbit:.0f} Mbit/s")
    finally:
        box.down()
        shutil.rmtree(CACHE / "bench-carry", ignore_errors=True)


if __name__ == "__main__":
    main()
