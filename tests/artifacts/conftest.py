"""What we ship besides the code (chart, alert rules, dashboard, health checks),
checked with the real tools: helm, promtool and Lua."""

from __future__ import annotations

import shutil

import pytest

from ..conftest import REPO as ROOT

CHART = ROOT / "charts" / "vmmigration-operator"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # scripts/bootstrap installs every one of these; a missing one is a
        # broken set-up, not a reason to skip.
        pytest.fail(f"{name} is not installed: run scripts/bootstrap")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("promtool")


@pytest.fixture(scope="session")
def lua() -> str:
    return tool("lua5.1")
