"""Campaigns on the real test bed: random operations, random faults, and the checker's verdict."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from . import campaign
from .campaign import World
from .conftest import REPORTS

# The seed CI always runs (it found the watched Drained bug: its first operation drains a
# host in NonLive mode), and the length of each campaign.
FIXED_SEED = 4
SECONDS = float(os.environ.get("VMMIGRATION_NEMESIS_SECONDS", "100"))

pytestmark = [pytest.mark.timeout(SECONDS + campaign.SETTLE_SECONDS + 300)]


def _campaign(world: World, histories: Path, seed: int) -> campaign.Outcome:
    campaign.reset(world)
    outcome = campaign.run(world, seed=seed, seconds=SECONDS, history_dir=histories)
    REPORTS.append(outcome.report())
    return outcome


def test_no_vm_is_lost_nor_run_twice_and_every_status_is_true_under_the_fixed_seed(
        world: World, histories: Path) -> None:
    outcome = _campaign(world, histories, FIXED_SEED)
    assert outcome.operations and outcome.faults, "the campaign did nothing"
    assert outcome.verdict.checks["ExactlyOnce"] > 0 and outcome.verdict.checks["ConditionsTrue"] > 0
    assert outcome.verdict.ok, outcome.report()


def test_no_vm_is_lost_nor_run_twice_and_every_status_is_true_under_a_fresh_seed(
        world: World, histories: Path) -> None:
    seed = int(os.environ.get("VMMIGRATION_NEMESIS_SEED") or random.SystemRandom().randrange(1, 10**9))
    outcome = _campaign(world, histories, seed)
    assert outcome.operations and outcome.faults, "the campaign did nothing"
    assert outcome.verdict.ok, outcome.report()
