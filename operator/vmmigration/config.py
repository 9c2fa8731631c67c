"""One typed settings object, read from the environment once and validated up front.

A wrong value fails at start-up with the variable's name, not deep inside a
migration.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path


class SettingsError(ValueError):
    pass


CACHE = Path.home() / ".cache" / "vmmigration"


@dataclasses.dataclass(frozen=True)
class Settings:
    # Where the sandbox keeps its hosts, shared storage and guests.
    sandbox_dir: Path = CACHE / "sandbox"
    # Where the test suite's own sandbox lives (beside a running demo, not in it).
    test_sandbox_dir: Path = CACHE / "test-sandbox"
    # auto: KVM if a Linux guest really boots under it, else TCG.
    accel: str = "auto"
    # The guest kernel; None means the newest Debian kernel in /boot.
    guest_kernel: Path | None = None
    # How often the engine polls a running job.
    poll_interval_seconds: float = 0.5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        accel = env.get("VMMIGRATION_ACCEL", defaults.accel).lower()
        if accel not in ("auto", "kvm", "tcg"):
            raise SettingsError(f"VMMIGRATION_ACCEL must be auto, kvm or tcg, not {accel!r}")
        raw_poll = env.get("VMMIGRATION_POLL_INTERVAL_SECONDS")
        try:
            poll = float(raw_poll) if raw_poll else defaults.poll_interval_seconds
        except ValueError:
            raise SettingsError(
                f"VMMIGRATION_POLL_INTERVAL_SECONDS must be a number of seconds, not {raw_poll!r}"
            ) from None
        if not 0.05 <= poll <= 10:
            raise SettingsError(f"VMMIGRATION_POLL_INTERVAL_SECONDS must be 0.05 to 10, not {poll}")
        kernel = env.get("VMMIGRATION_GUEST_KERNEL")
        return cls(
            sandbox_dir=Path(env.get("VMMIGRATION_SANDBOX_DIR", defaults.sandbox_dir)),
            test_sandbox_dir=Path(env.get("VMMIGRATION_TEST_SANDBOX_DIR", defaults.test_sandbox_dir)),
            accel=accel,
            guest_kernel=Path(kernel) if kernel else None,
            poll_interval_seconds=poll,
        )
