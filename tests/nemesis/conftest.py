"""The nemesis tier: seeded campaigns of users' operations and faults on the real test bed.

It has its own world (three libvirt hosts, a control plane, the operator, seven
guests), because it breaks everything in it; CI runs two short campaigns on it,
one with a fixed seed and one with a fresh seed that the report prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vmmigration.core.config import Settings

from .campaign import World, world as make_world

HISTORIES = Settings.from_env().test_sandbox_dir.parent / "nemesis"
REPORTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for report in REPORTS:
        for line in report.splitlines():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    with make_world() as made:
        yield made


@pytest.fixture(scope="session")
def histories() -> Path:
    HISTORIES.mkdir(parents=True, exist_ok=True)
    return HISTORIES
