"""The real test bed, shared by the integration and end-to-end tiers: three libvirt
daemons on this machine and QEMU guests that really run.

Every test gets a watchdog: a migration that cannot converge blocks libvirt's
migrate call forever, so after a deadline the watchdog aborts every job on
every host and the test fails instead of hanging CI.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmmigration.core.config import Settings
from vmtestbed import guest
from vmtestbed.daemons import Daemon
from vmtestbed.testbed import Sandbox
from vmtestbed.hosts import Host
from vmmigration.core.errors import VirtError


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        parents = Path(item.fspath).parents
        if here / "integration" in parents:
            item.add_marker(pytest.mark.integration)
        if here / "e2e" in parents:
            item.add_marker(pytest.mark.e2e)
        if here / "artifacts" in parents:
            item.add_marker(pytest.mark.artifacts)
        if here / "faults" in parents:
            item.add_marker(pytest.mark.faults)
        if here / "nemesis" in parents and not item.name.startswith("test_the_checker"):
            item.add_marker(pytest.mark.nemesis)

REPO = Path(__file__).resolve().parents[1]


def cached_tool(script: str) -> Path:
    """Run one of scripts/ that builds or fetches a tool into the cache; its output directory."""
    out = subprocess.run([str(REPO / "scripts" / script)], check=True, capture_output=True,
                         text=True).stdout.strip()
    return Path(out)


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm that scripts/build-helm built (cached; instant after the first build)."""
    return str(cached_tool("build-helm") / "helm")


# The test bed's subnet (hosts 10.240.<subnet>.2, .3, .4). Overridable so that
# two checkouts can run their slow tiers side by side on one machine.
TEST_SUBNET = int(os.environ.get("VMMIGRATION_TEST_SUBNET", "1"))

WATCHDOG_SECONDS = 150.0
_TESTBED: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _TESTBED:
        terminalreporter.write_line(f"test bed: {line}")
_names = itertools.count(1)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(root=Settings.from_env().test_sandbox_dir, count=3, subnet=TEST_SUBNET)
    box.up()
    _TESTBED.append(f"{len(box.hosts)} libvirt hosts {[h.uri for h in box.hosts]}, "
                    f"guests under {box.accelerator().upper()}")
    yield box
    box.down()


@pytest.fixture
def source_host(sandbox: Sandbox) -> Daemon:
    return sandbox.hosts[0]


@pytest.fixture
def target_host(sandbox: Sandbox) -> Daemon:
    return sandbox.hosts[1]


@pytest.fixture
def source(source_host: Daemon) -> Iterator[Host]:
    with Host(source_host.uri) as host:
        yield host


@pytest.fixture
def target(target_host: Daemon) -> Iterator[Host]:
    with Host(target_host.uri) as host:
        yield host


@pytest.fixture
def name(sandbox: Sandbox) -> Iterator[str]:
    """A fresh domain name, removed from every host after the test."""
    chosen = f"vmm-it-{os.getpid()}-{next(_names)}"
    yield chosen
    for daemon in sandbox.hosts:
        with contextlib.suppress(VirtError), Host(daemon.uri) as host:
            host.remove_everywhere(chosen)


@pytest.fixture(autouse=True)
def watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Only for tests that use the libvirt test bed; unit tests never start it."""
    if "sandbox" not in request.fixturenames:
        yield
        return
    sandbox: Sandbox = request.getfixturevalue("sandbox")
    # A test that runs many migrations in a row (the fault suite) sets its own budget.
    marker = request.node.get_closest_marker("watchdog")
    seconds = float(marker.kwargs["seconds"]) if marker else WATCHDOG_SECONDS
    done = threading.Event()
    fired: list[str] = []

    def guard() -> None:
        if done.wait(seconds):
            return
        for daemon in sandbox.hosts:
            with contextlib.suppress(VirtError), Host(daemon.uri) as host:
                for dom in host.domains():
                    with contextlib.suppress(VirtError):
                        host.abort_job(dom.name)
                        fired.append(f"{dom.name}@{daemon.name}")

    thread = threading.Thread(target=guard, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join()
    assert not fired, f"watchdog aborted stuck migration jobs: {fired}"


class GuestWatch:
    """The serial-log oracle: same boot, heartbeat still beating, nothing corrupted."""

    def __init__(self, log: Path) -> None:
        self.log = log
        beats = guest.heartbeats(log)
        assert beats, f"guest wrote no heartbeat to {log}"
        self.boot = beats[0].boot

    def count(self) -> int:
        return guest.heartbeats(self.log)[-1].count

    def assert_kept_running(self, *, after: int, timeout_seconds: float = 20.0) -> None:
        """The heartbeat passes ``after`` within the timeout, from the same boot, with no corruption."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline and self.count() <= after + 2:
            time.sleep(0.25)
        beats = guest.heartbeats(self.log)
        assert beats[-1].count > after + 2, (
            f"heartbeat stopped at {beats[-1].count} (was {after} at the move)\n"
            + self.log.read_text(errors="replace")[-1500:]
        )
        assert {b.boot for b in beats} == {self.boot}, "the guest rebooted"
        counts = [b.count for b in beats]
        assert counts == sorted(counts), "heartbeat went backwards: two guests wrote the log"
        assert guest.failures(self.log) == []


@pytest.fixture
def boot(sandbox: Sandbox, source_host: Daemon):  # type: ignore[no-untyped-def]
    """Boot a guest on the source and return its serial-log oracle."""

    def start(domain: str, **spec: object) -> GuestWatch:
        log = sandbox.boot(sandbox.guest_spec(domain, **spec), host=source_host)
        return GuestWatch(log)

    return start
