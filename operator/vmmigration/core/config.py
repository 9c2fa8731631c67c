"""One typed settings object, read from the environment once and validated up front.

A wrong value fails at start-up with the variable's name, not deep inside a
migration.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

from vmmigration.core.recovery import ResumePolicy


class SettingsError(ValueError):
    pass


CACHE = Path.home() / ".cache" / "vmmigration"
# The label that splits the fleet between replicas (see Settings.shard), and what its value may be.
SHARD_LABEL = "vmmigration.dev/shard"
SHARD_PATTERN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")


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

    # ---- the operator ----
    # The operator's own namespace: credentials Secrets are read from here.
    namespace: str = "vmmigration-system"
    # Migrations in flight at once across the cluster (per-host limits are on each Hypervisor).
    max_concurrent_migrations: int = 4
    # How often each Hypervisor is probed: events alone miss what changes in libvirt.
    probe_interval_seconds: float = 10.0
    # How long one probe may take before the host is reported unreachable: libvirt's
    # client waits forever on a host that accepts connections but never answers.
    probe_timeout_seconds: float = 20.0
    # How long a libvirt host may stay silent during a migration (connecting, or
    # mid-call, through libvirt's keepalive) before the call fails and the
    # migration ends, saying where the VM runs. libvirtd allows its own peer
    # connections the same 30 s.
    libvirt_timeout_seconds: float = 30.0
    # How often the dirty-rate readings of running guests that Auto VMMigrations manage
    # are looked at, and renewed before they expire, so an Auto plan rarely waits for
    # one (0: never; each plan then measures what it lacks).
    measure_interval_seconds: float = 60.0
    # How often each Hypervisor is read in full although libvirt's events keep its
    # report current: a missed event heals by then (a dropped connection heals at once).
    inventory_resync_seconds: float = 300.0
    # False: no events; every probe reads the host in full, as before events were used
    # (for a libvirt whose events cannot be trusted, and as the drift bench's baseline).
    inventory_events: bool = True
    # The shard this replica serves: only Hypervisors, pools and VMMigrations labelled
    # vmmigration.dev/shard=<shard>, with a peering of its own; "" serves the unlabelled.
    shard: str = ""
    # How often each VMMigration is re-decided even when nothing woke it.
    resync_interval_seconds: float = 30.0
    # The least time between two progress writes of one migration (API load).
    progress_interval_seconds: float = 2.0
    # Retry backoff after a failure: base, doubling, capped.
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 300.0
    # Where client certificates and keys from Secrets are written (0700) for libvirt.
    credentials_dir: Path = Path("/tmp/vmmigration-credentials")
    # kopf peering object name; "" runs standalone (one replica only).
    peering: str = "vmmigration"
    # How long a replica's peering keep-alive stays valid. A replica killed
    # with -9 leaves its record behind; its successor waits this long before
    # acting, so it bounds failover time. kopf's own default is 60.
    peering_lifetime_seconds: int = 30
    # kopf pauses a replica that sees a peer of higher *or equal* priority, so
    # equal priorities would pause every replica. None: by seniority
    # (seniority_priority), so the replica that acts keeps acting.
    peering_priority: int | None = None
    # Where /metrics (Prometheus) and kopf's /healthz (liveness and readiness)
    # are served. Port 0 turns one off (several operators on one test machine).
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8000
    health_address: str = "0.0.0.0"
    health_port: int = 8080
    # Resume a post-copy migration whose link failed: auto (unless the target's
    # libvirt is known to crash on it), always, or never (leave it to a person).
    post_copy_resume: ResumePolicy = ResumePolicy.AUTO
    # How long one resume may wait in the target's Prepare before the operator
    # says the target's QEMU is stuck and hands the VM to a person.
    post_copy_resume_try_seconds: float = 60.0
    # How the operator's log lines are written: text for a person at a terminal,
    # json (one object per line, with the VMMigration and the domain as fields)
    # for a log pipeline.
    log_format: str = "text"

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

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = env.get(name)
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {raw!r}") from None
            if not low <= value <= high:
                raise SettingsError(f"{name} must be {low:g} to {high:g}, not {value:g}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw not in ("true", "false"):
                raise SettingsError(f"{name} must be true or false, not {raw!r}")
            return raw == "true"

        raw_resume = env.get("VMMIGRATION_POSTCOPY_RESUME", defaults.post_copy_resume.value).lower()
        try:
            resume = ResumePolicy(raw_resume)
        except ValueError:
            raise SettingsError("VMMIGRATION_POSTCOPY_RESUME must be auto, always or never, "
                                f"not {raw_resume!r}") from None
        log_format = env.get("VMMIGRATION_LOG_FORMAT", defaults.log_format).lower()
        if log_format not in ("text", "json"):
            raise SettingsError(f"VMMIGRATION_LOG_FORMAT must be text or json, not {log_format!r}")
        shard = env.get("VMMIGRATION_SHARD", defaults.shard)
        if shard and not SHARD_PATTERN.fullmatch(shard):
            raise SettingsError("VMMIGRATION_SHARD must be a label value (letters, digits, '-', "
                                f"'_', '.'; 63 at most, alphanumeric at both ends), not {shard!r}")
        raw_priority = env.get("VMMIGRATION_PEERING_PRIORITY")
        try:
            priority = int(raw_priority) if raw_priority else None
        except ValueError:
            raise SettingsError(
                f"VMMIGRATION_PEERING_PRIORITY must be an integer, not {raw_priority!r}") from None
        return cls(
            peering_priority=priority,
            sandbox_dir=Path(env.get("VMMIGRATION_SANDBOX_DIR", defaults.sandbox_dir)),
            test_sandbox_dir=Path(env.get("VMMIGRATION_TEST_SANDBOX_DIR", defaults.test_sandbox_dir)),
            accel=accel,
            guest_kernel=Path(kernel) if kernel else None,
            poll_interval_seconds=poll,
            namespace=env.get("VMMIGRATION_NAMESPACE", defaults.namespace),
            max_concurrent_migrations=int(number("VMMIGRATION_MAX_CONCURRENT_MIGRATIONS",
                                                 defaults.max_concurrent_migrations, 1, 1000)),
            probe_interval_seconds=number("VMMIGRATION_PROBE_INTERVAL_SECONDS",
                                          defaults.probe_interval_seconds, 0.5, 3600),
            probe_timeout_seconds=number("VMMIGRATION_PROBE_TIMEOUT_SECONDS",
                                         defaults.probe_timeout_seconds, 0.1, 600),
            libvirt_timeout_seconds=number("VMMIGRATION_LIBVIRT_TIMEOUT_SECONDS",
                                           defaults.libvirt_timeout_seconds, 2, 600),
            measure_interval_seconds=number("VMMIGRATION_MEASURE_INTERVAL_SECONDS",
                                            defaults.measure_interval_seconds, 0, 3600),
            inventory_resync_seconds=number("VMMIGRATION_INVENTORY_RESYNC_SECONDS",
                                            defaults.inventory_resync_seconds, 1, 86400),
            shard=shard,
            inventory_events=flag("VMMIGRATION_INVENTORY_EVENTS", defaults.inventory_events),
            resync_interval_seconds=number("VMMIGRATION_RESYNC_INTERVAL_SECONDS",
                                           defaults.resync_interval_seconds, 0.5, 3600),
            progress_interval_seconds=number("VMMIGRATION_PROGRESS_INTERVAL_SECONDS",
                                             defaults.progress_interval_seconds, 0.2, 600),
            retry_base_seconds=number("VMMIGRATION_RETRY_BASE_SECONDS",
                                      defaults.retry_base_seconds, 0.1, 3600),
            retry_max_seconds=number("VMMIGRATION_RETRY_MAX_SECONDS",
                                     defaults.retry_max_seconds, 0.1, 86400),
            credentials_dir=Path(env.get("VMMIGRATION_CREDENTIALS_DIR", defaults.credentials_dir)),
            peering=env.get("VMMIGRATION_PEERING", defaults.peering),
            peering_lifetime_seconds=int(number("VMMIGRATION_PEERING_LIFETIME_SECONDS",
                                                defaults.peering_lifetime_seconds, 12, 3600)),
            metrics_address=env.get("VMMIGRATION_METRICS_ADDRESS", defaults.metrics_address),
            metrics_port=int(number("VMMIGRATION_METRICS_PORT", defaults.metrics_port, 0, 65535)),
            health_address=env.get("VMMIGRATION_HEALTH_ADDRESS", defaults.health_address),
            health_port=int(number("VMMIGRATION_HEALTH_PORT", defaults.health_port, 0, 65535)),
            post_copy_resume=resume,
            post_copy_resume_try_seconds=number("VMMIGRATION_POSTCOPY_RESUME_TRY_SECONDS",
                                                defaults.post_copy_resume_try_seconds, 5, 3600),
            log_format=log_format,
        )

    def kopf_command(self, *, python: str, peering: str | None = None,
                     extra: tuple[str, ...] = ()) -> list[str]:
        """The ``kopf run`` command line of the operator with these settings."""
        name = self.peering if peering is None else peering
        if name and self.shard:
            # Each shard elects its own active replica: shards share the work, not one lock.
            name = f"{name}-{self.shard}"
        command = [python, "-m", "kopf", "run", "-m", "vmmigration.adapters.kube.handlers", "--all-namespaces"]
        command += ["--peering", name] if name else ["--standalone"]
        if self.health_port:
            host = f"[{self.health_address}]" if ":" in self.health_address else self.health_address
            command.append(f"--liveness=http://{host}:{self.health_port}/healthz")
        if self.log_format == "json":
            # kopf writes a few lines before the startup handler puts our JSON
            # formatter in place; with its own JSON formatter till then, every
            # line of the log parses.
            command += ["--log-format", "json"]
        return command + list(extra)


# Later than any start time this operator will see: seniority counts down from it.
_SENIORITY_HORIZON = 4_102_444_800  # 2100-01-01, in Unix seconds
_TIEBREAK_RANGE = 1000


def seniority_priority(*, started: float, tiebreak: int) -> int:
    """A kopf peering priority that ranks the replica started first above every later one.

    A random priority let each new replica (a rolled or rescheduled pod) preempt
    the one acting, which then paused mid-move and handed its migrations over:
    one failover too many per rollout. Older wins instead; ``tiebreak`` (0 to
    999, random) separates replicas started in the same second, which would
    otherwise both pause at equal priority.
    """
    if not 0 <= tiebreak < _TIEBREAK_RANGE:
        raise ValueError(f"tiebreak must be in [0, {_TIEBREAK_RANGE}), not {tiebreak}")
    return (_SENIORITY_HORIZON - int(started)) * _TIEBREAK_RANGE + tiebreak
