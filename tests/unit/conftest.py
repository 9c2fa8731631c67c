import pytest

from vmmigration.model import MIB, DomainSummary, PauseReason, PowerState


def domain(
    name: str = "web-01",
    *,
    uuid: str = "11111111-1111-1111-1111-111111111111",
    state: PowerState = PowerState.RUNNING,
    reason: PauseReason = PauseReason.NONE,
    memory_mib: int = 128,
) -> DomainSummary:
    return DomainSummary(name=name, uuid=uuid, state=state, pause_reason=reason,
                         memory_bytes=memory_mib * MIB, persistent=True)


@pytest.fixture
def make_domain():  # type: ignore[no-untyped-def]
    return domain
