"""The operator's Prometheus metrics, in one place.

Every metric lives on the registry given to :class:`Metrics`, so tests read
values from a registry of their own and production serves the default one
(which also carries the process and platform collectors).

Names follow Prometheus practice: the ``vmmigration_`` prefix, base units
(seconds, bytes, ratios), ``_total`` on counters, and few labels. Per-resource
series (``namespace``, ``name``) exist only while they mean something — a
migration in flight, a drifted or failed placement — and are removed after,
so a thousand placed VMs cost no series at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import start_http_server as _start_http_server

from vmmigration.core.drain import Counts as DrainCounts
from vmmigration.core.limiter import Limiter
from vmmigration.core.model import HostReport, JobProgress
from vmmigration.service.driver import ABORTED, FAILED, SUCCEEDED

__all__ = ["ABORTED", "FAILED", "SUCCEEDED", "Metrics", "serve"]

# prometheus-client adds a ``_created`` series (the child's creation time) to
# every counter and histogram. Nothing here reads them (rate() and increase()
# handle restarts from the counter itself), and they double every counter's
# series. The switch is process-wide and read at each scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]

# A live move of a small VM takes seconds; a big one over a capped link, an
# hour. Downtime is tens of milliseconds when live works and seconds to
# minutes for non-live or a suspended hybrid.
DURATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
DOWNTIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# Actual ÷ forecast: 1 is a perfect forecast; ±25 % is the bench's target.
FORECAST_ERROR_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2, 4)

# libvirt operations whose errors are counted (the ``operation`` label).
OPERATIONS = ("probe", "check", "migrate", "adopt")
DRAIN_STATES = ("total", "moved", "moving", "queued", "failed", "blocked", "remaining")


class Metrics:
    """Everything the operator exports. Thread-safe: prometheus-client locks each child."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = REGISTRY if registry is None else registry
        r = self.registry
        self.migrations = Counter(
            "vmmigration_migrations", "Migration attempts that ended, by effective mode and result.",
            ["mode", "result"], registry=r)
        self.duration = Histogram(
            "vmmigration_migration_duration_seconds",
            "Wall time of migrations that succeeded, from the libvirt job's start to its end.",
            ["mode"], buckets=DURATION_BUCKETS, registry=r)
        self.downtime = Histogram(
            "vmmigration_migration_downtime_seconds",
            "How long the guest was paused at switch-over, as libvirt measured it on the target.",
            ["mode"], buckets=DOWNTIME_BUCKETS, registry=r)
        self.forecast_error = Histogram(
            "vmmigration_forecast_error_ratio",
            "Actual over forecast duration and downtime of migrations that succeeded "
            "(1 is exact), by quantity.", ["quantity"], buckets=FORECAST_ERROR_BUCKETS, registry=r)
        self.transferred = Counter(
            "vmmigration_migration_transferred_bytes",
            "Bytes that migrations sent over the wire (memory and copied disks).", registry=r)
        self.in_progress = Gauge(
            "vmmigration_migrations_in_progress", "Migrations that libvirt is running now.",
            registry=r)
        self.queued = Gauge(
            "vmmigration_migrations_queued",
            "VMMigrations waiting for a free slot under the concurrency limits.", registry=r)
        per_migration = ["namespace", "name"]
        self.progress_ratio = Gauge(
            "vmmigration_migration_progress_ratio",
            "Share of the migration's data sent so far (0 to 1), for each migration in flight.",
            per_migration, registry=r)
        self.memory_remaining = Gauge(
            "vmmigration_migration_memory_remaining_bytes",
            "Guest memory still to copy, for each migration in flight.", per_migration, registry=r)
        self.data_remaining = Gauge(
            "vmmigration_migration_data_remaining_bytes",
            "Data still to send (memory and disks; an Offline move's carried disks), for each "
            "migration in flight.", per_migration, registry=r)
        self.dirty_rate = Gauge(
            "vmmigration_migration_dirty_rate_bytes_per_second",
            "How fast the guest dirties memory, for each migration in flight.", per_migration,
            registry=r)
        self.transfer_rate = Gauge(
            "vmmigration_migration_transfer_rate_bytes_per_second",
            "How fast memory is sent, for each migration in flight.", per_migration, registry=r)
        self.iteration = Gauge(
            "vmmigration_migration_iteration",
            "The memory copy pass the migration is in, for each migration in flight.",
            per_migration, registry=r)
        self.drift = Gauge(
            "vmmigration_placement_drift",
            "1 while a VM runs somewhere other than its VMMigration's target.", per_migration,
            registry=r)
        self.failed = Gauge(
            "vmmigration_migration_failed",
            "1 while a VMMigration's last attempt failed (phase Failed).", per_migration,
            registry=r)
        self.hypervisor_up = Gauge(
            "vmmigration_hypervisor_up", "1 if the last probe reached the Hypervisor's libvirt.",
            ["hypervisor"], registry=r)
        self.hypervisor_memory_free = Gauge(
            "vmmigration_hypervisor_memory_free_bytes",
            "Free memory the last probe of the Hypervisor found.", ["hypervisor"], registry=r)
        self.libvirt_errors = Counter(
            "vmmigration_libvirt_errors", "libvirt calls that failed, by operation.",
            ["operation"], registry=r)
        self.status_patches = Counter(
            "vmmigration_status_patches",
            "Status patches the operator sent to the API server, by resource. It writes only "
            "on change, so this tracks real changes (and progress at a bounded rate).",
            ["resource"], registry=r)
        for resource in ("vmmigrations", "hypervisors", "hypervisorpools"):
            self.status_patches.labels(resource=resource)
        self.drain_vms = Gauge(
            "vmmigration_drain_vms",
            "Domains of a Hypervisor's drain by state (total, moved, moving, queued, failed, "
            "blocked, remaining), while its status shows a drain.", ["hypervisor", "state"],
            registry=r)
        self.drain_progress = Gauge(
            "vmmigration_drain_last_progress_timestamp_seconds",
            "When a domain last left the Hypervisor being drained (its start before the first).",
            ["hypervisor"], registry=r)
        self.pool_spread = Gauge(
            "vmmigration_pool_load_spread_ratio",
            "Memory load of a HypervisorPool's most loaded host minus its least loaded (0 to 1).",
            ["pool"], registry=r)
        self.pool_threshold = Gauge(
            "vmmigration_pool_rebalance_threshold_ratio",
            "The spread above which the pool is rebalanced (0 to 1), while rebalancing is enabled.",
            ["pool"], registry=r)
        self.rebalance_moves = Counter(
            "vmmigration_rebalance_moves", "Moves started to rebalance a HypervisorPool.",
            ["pool"], registry=r)
        self.inventory_updates = Counter(
            "vmmigration_inventory_updates",
            "Hypervisor reports renewed, by how: 'event' (domains a libvirt event named, read "
            "back) or 'probe' (the host read in full: first sight, reconnect, resync).",
            ["how"], registry=r)
        for how in ("event", "probe"):
            self.inventory_updates.labels(how=how)
        self.reconcile_errors = Counter(
            "vmmigration_reconcile_errors",
            "Reconcile passes that raised an unexpected error and were retried.", registry=r)
        for operation in OPERATIONS:  # present at 0, so rate() works from the first failure
            self.libvirt_errors.labels(operation=operation)

    @classmethod
    def isolated(cls) -> Metrics:
        """Metrics on a registry of their own (tests, and runtimes that export nothing)."""
        return cls(registry=CollectorRegistry())

    def watch(self, limiter: Limiter) -> None:
        """Read the running and queued counts from the limiter at every scrape: one copy."""
        self.in_progress.set_function(limiter.running_count)
        self.queued.set_function(limiter.queued_count)

    def inventory_updated(self, *, how: str) -> None:
        self.inventory_updates.labels(how=how).inc()

    def status_patched(self, resource: str) -> None:
        self.status_patches.labels(resource=resource).inc()

    def reconcile_error(self) -> None:
        self.reconcile_errors.inc()

    # ---- migrations --------------------------------------------------------------

    def sample(self, key: str, progress: JobProgress | None, *, percent: float) -> None:
        """One progress sample of a migration in flight."""
        labels = _labels(key)
        self.progress_ratio.labels(*labels).set(max(0.0, min(1.0, percent / 100.0)))
        if progress is not None:
            self.memory_remaining.labels(*labels).set(progress.memory_remaining)
            self.data_remaining.labels(*labels).set(progress.data_remaining)
            self.dirty_rate.labels(*labels).set(progress.dirty_rate_bytes_per_s)
            self.transfer_rate.labels(*labels).set(progress.transfer_rate_bytes_per_s)
            self.iteration.labels(*labels).set(progress.iteration)

    def ended(self, key: str, *, mode: str, result: str, duration_seconds: float | None = None,
              downtime_ms: int | None = None, transferred_bytes: int = 0) -> None:
        """An attempt ended: count it and drop its in-flight series."""
        self.migrations.labels(mode=mode, result=result).inc()
        if result == SUCCEEDED and duration_seconds is not None:
            self.duration.labels(mode=mode).observe(duration_seconds)
        if result == SUCCEEDED and downtime_ms is not None:
            self.downtime.labels(mode=mode).observe(downtime_ms / 1000.0)
        if transferred_bytes > 0:
            self.transferred.inc(transferred_bytes)
        self.set_failed(key, failed=result == FAILED)
        self.left(key)

    def forecast_checked(self, *, quantity: str, ratio: float) -> None:
        """How far a forecast was from what happened (``quantity``: duration or downtime)."""
        self.forecast_error.labels(quantity=quantity).observe(ratio)

    def left(self, key: str) -> None:
        """The migration is no longer watched here (ended, or handed to another replica)."""
        labels = _labels(key)
        for gauge in (self.progress_ratio, self.memory_remaining, self.data_remaining, self.dirty_rate,
                      self.transfer_rate, self.iteration):
            _remove(gauge, labels)

    # ---- placement -----------------------------------------------------------------

    def set_drift(self, key: str, *, drifted: bool) -> None:
        if drifted:
            self.drift.labels(*_labels(key)).set(1)
        else:
            _remove(self.drift, _labels(key))

    def set_failed(self, key: str, *, failed: bool) -> None:
        if failed:
            self.failed.labels(*_labels(key)).set(1)
        else:
            _remove(self.failed, _labels(key))

    def forget(self, key: str) -> None:
        """The VMMigration is gone: none of its series may linger."""
        self.set_drift(key, drifted=False)
        self.set_failed(key, failed=False)
        self.left(key)

    # ---- hypervisors ---------------------------------------------------------------

    def probed(self, name: str, report: HostReport) -> None:
        self.hypervisor_up.labels(hypervisor=name).set(1 if report.reachable else 0)
        if report.reachable:
            self.hypervisor_memory_free.labels(hypervisor=name).set(report.memory_free_bytes)
        else:
            self.libvirt_error("probe")
            # Stale free memory would mislead capacity dashboards.
            _remove(self.hypervisor_memory_free, (name,))

    def hypervisor_gone(self, name: str) -> None:
        _remove(self.hypervisor_up, (name,))
        _remove(self.hypervisor_memory_free, (name,))

    def libvirt_error(self, operation: str) -> None:
        self.libvirt_errors.labels(operation=operation).inc()

    # ---- drains and pools -----------------------------------------------------------

    def drain(self, name: str, counts: DrainCounts | None, *, last_progress: float | None) -> None:
        """A drain's figures, or None: no drain to show (the series go)."""
        if counts is None:
            for state in DRAIN_STATES:
                _remove(self.drain_vms, (name, state))
            _remove(self.drain_progress, (name,))
            return
        for state in DRAIN_STATES:
            value = counts.remaining if state == "remaining" else getattr(counts, state)
            self.drain_vms.labels(hypervisor=name, state=state).set(value)
        if last_progress is not None:
            self.drain_progress.labels(hypervisor=name).set(last_progress)

    def pool(self, name: str, *, spread_ratio: float | None, threshold_ratio: float | None) -> None:
        if spread_ratio is None:
            _remove(self.pool_spread, (name,))
        else:
            self.pool_spread.labels(pool=name).set(spread_ratio)
        if threshold_ratio is None:
            _remove(self.pool_threshold, (name,))
        else:
            self.pool_threshold.labels(pool=name).set(threshold_ratio)

    def rebalanced(self, pool: str, *, moves: int) -> None:
        self.rebalance_moves.labels(pool=pool).inc(moves)


def _labels(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


def _remove(metric: Gauge, labels: Iterable[str]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:  # never set: nothing to remove
        pass


def serve(*, address: str, port: int, registry: CollectorRegistry | None = None) -> None:
    """Serve ``/metrics`` over HTTP in a daemon thread."""
    _start_http_server(port, addr=address, registry=REGISTRY if registry is None else registry)
