import os

import pytest
from hypothesis import HealthCheck, settings

from vmmigration.core.model import MIB, DomainSummary, JobDirection, PauseReason, PowerState


def domain(
    name: str = "web-01",
    *,
    uuid: str = "11111111-1111-1111-1111-111111111111",
    state: PowerState = PowerState.RUNNING,
    reason: PauseReason = PauseReason.NONE,
    memory_mib: int = 128,
    job: JobDirection = JobDirection.NONE,
) -> DomainSummary:
    return DomainSummary(name=name, uuid=uuid, state=state, pause_reason=reason,
                         memory_bytes=memory_mib * MIB, persistent=True, job=job)


@pytest.fixture
def make_domain():  # type: ignore[no-untyped-def]
    return domain


# Hypothesis in CI: the same examples on every run (derandomize), no example
# database left behind in the checkout, a bounded number of examples so the
# fuzz stays well under half a minute on two slow cores, and no per-example
# deadline or speed health check, which would turn a loaded runner into a flaky
# failure. VMMIGRATION_HYPOTHESIS_PROFILE=deep explores far more, randomly, on a
# developer's machine.
settings.register_profile(
    "ci", derandomize=True, database=None, max_examples=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], print_blob=False)
settings.register_profile(
    "deep", derandomize=False, database=None, max_examples=5000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("VMMIGRATION_HYPOTHESIS_PROFILE", "ci"))
