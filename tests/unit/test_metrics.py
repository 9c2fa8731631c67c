"""What the operator exports, read back through a registry of the test's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from vmmigration.adapters.prometheus import ABORTED, FAILED, SUCCEEDED, Metrics
from vmmigration.core.limiter import Limiter, Limits
from vmmigration.core.model import HostReport, JobProgress

from .test_runtime import KEY, body, run, runtime_with


def value(metrics: Metrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


LIMITER = Limiter(Limits())


def fresh() -> Metrics:
    """Metrics on a registry of their own, reading a limiter of their own as production does."""
    global LIMITER
    LIMITER = Limiter(Limits())
    metrics = Metrics(registry=CollectorRegistry())
    metrics.watch(LIMITER)
    return metrics


def started(key: str) -> None:
    LIMITER.hold(key, source="kvm-a", target="kvm-b")
    LIMITER.running(key, running=True)


def ended(metrics: Metrics, key: str, **outcome: object) -> None:
    metrics.ended(key, **outcome)  # type: ignore[arg-type]
    LIMITER.free(key)


def test_a_succeeded_migration_is_counted_by_mode_and_its_duration_and_downtime_observed() -> None:
    metrics = fresh()
    started(KEY)
    assert value(metrics, "vmmigration_migrations_in_progress") == 1
    ended(metrics, KEY, mode="Live", result=SUCCEEDED, duration_seconds=3.0, downtime_ms=40,
          transferred_bytes=5000)
    assert value(metrics, "vmmigration_migrations_total", mode="Live", result="succeeded") == 1
    assert value(metrics, "vmmigration_migration_duration_seconds_count", mode="Live") == 1
    assert value(metrics, "vmmigration_migration_duration_seconds_sum", mode="Live") == 3.0
    # 40 ms lands in the 0.05 s bucket and not in the 0.025 s one: seconds, not milliseconds.
    assert value(metrics, "vmmigration_migration_downtime_seconds_bucket", mode="Live", le="0.05") == 1
    assert value(metrics, "vmmigration_migration_downtime_seconds_bucket", mode="Live", le="0.025") == 0
    assert value(metrics, "vmmigration_migration_transferred_bytes_total") == 5000
    assert value(metrics, "vmmigration_migrations_in_progress") == 0


def test_failed_and_aborted_attempts_are_counted_but_not_timed() -> None:
    metrics = fresh()
    metrics.ended(KEY, mode="NonLive", result=FAILED, duration_seconds=9.0)
    metrics.ended(KEY, mode="Live", result=ABORTED)
    assert value(metrics, "vmmigration_migrations_total", mode="NonLive", result="failed") == 1
    assert value(metrics, "vmmigration_migrations_total", mode="Live", result="aborted") == 1
    assert value(metrics, "vmmigration_migration_duration_seconds_count", mode="NonLive") is None


def test_a_failed_placement_stays_flagged_through_its_retries_until_it_succeeds() -> None:
    metrics = fresh()
    metrics.ended(KEY, mode="Live", result=FAILED)
    assert value(metrics, "vmmigration_migration_failed", namespace="default", name="web") == 1
    started(KEY)  # the retry: still failing as far as an SRE is concerned
    assert value(metrics, "vmmigration_migration_failed", namespace="default", name="web") == 1
    metrics.ended(KEY, mode="Live", result=SUCCEEDED, duration_seconds=2.0)
    assert value(metrics, "vmmigration_migration_failed", namespace="default", name="web") is None


def test_in_flight_series_exist_only_while_the_migration_runs() -> None:
    metrics = fresh()
    started(KEY)
    metrics.sample(KEY, JobProgress(elapsed_seconds=1.0, memory_remaining=300,
                                    dirty_rate_bytes_per_s=70, transfer_rate_bytes_per_s=90,
                                    iteration=3), percent=42.0)
    assert value(metrics, "vmmigration_migration_progress_ratio", namespace="default", name="web") == 0.42
    assert value(metrics, "vmmigration_migration_memory_remaining_bytes",
                 namespace="default", name="web") == 300
    assert value(metrics, "vmmigration_migration_dirty_rate_bytes_per_second",
                 namespace="default", name="web") == 70
    assert value(metrics, "vmmigration_migration_iteration", namespace="default", name="web") == 3
    metrics.ended(KEY, mode="Live", result=SUCCEEDED, duration_seconds=1.0)
    for metric in ("vmmigration_migration_progress_ratio", "vmmigration_migration_memory_remaining_bytes",
                 "vmmigration_migration_dirty_rate_bytes_per_second",
                 "vmmigration_migration_transfer_rate_bytes_per_second", "vmmigration_migration_iteration"):
        assert value(metrics, metric, namespace="default", name="web") is None, metric


def test_queued_counts_each_waiting_resource_once() -> None:
    metrics = fresh()
    LIMITER.queue("a/x")
    LIMITER.queue("a/x")
    LIMITER.queue("a/y")
    assert value(metrics, "vmmigration_migrations_queued") == 2
    started("a/x")  # a queued resource that starts is no longer queued
    assert value(metrics, "vmmigration_migrations_queued") == 1
    assert value(metrics, "vmmigration_migrations_in_progress") == 1


def test_a_deleted_resource_leaves_no_series_behind() -> None:
    metrics = fresh()
    metrics.set_drift(KEY, drifted=True)
    metrics.set_failed(KEY, failed=True)
    LIMITER.queue(KEY)
    metrics.sample(KEY, None, percent=10.0)
    metrics.forget(KEY)
    LIMITER.forget(KEY)
    exported = [s for family in metrics.registry.collect() for s in family.samples
                if s.labels.get("name") == "web"]
    assert exported == []
    assert value(metrics, "vmmigration_migrations_queued") == 0
    assert value(metrics, "vmmigration_migrations_in_progress") == 0


def test_an_unreachable_hypervisor_is_down_counts_a_probe_error_and_drops_its_free_memory() -> None:
    metrics = fresh()
    metrics.probed("kvm-a", HostReport(reachable=True, probed_at=0.0, memory_free_bytes=2**30))
    assert value(metrics, "vmmigration_hypervisor_up", hypervisor="kvm-a") == 1
    assert value(metrics, "vmmigration_hypervisor_memory_free_bytes", hypervisor="kvm-a") == 2**30
    metrics.probed("kvm-a", HostReport(reachable=False, probed_at=1.0, error="refused"))
    assert value(metrics, "vmmigration_hypervisor_up", hypervisor="kvm-a") == 0
    assert value(metrics, "vmmigration_hypervisor_memory_free_bytes", hypervisor="kvm-a") is None
    assert value(metrics, "vmmigration_libvirt_errors_total", operation="probe") == 1
    metrics.hypervisor_gone("kvm-a")
    assert value(metrics, "vmmigration_hypervisor_up", hypervisor="kvm-a") is None


def test_error_counters_exist_at_zero_before_the_first_error() -> None:
    metrics = fresh()
    for operation in ("probe", "check", "migrate", "adopt"):
        assert value(metrics, "vmmigration_libvirt_errors_total", operation=operation) == 0
    assert value(metrics, "vmmigration_reconcile_errors_total") == 0


def test_the_runtime_counts_a_migration_it_drove_and_clears_drift_once_placed() -> None:
    runtime, _, _ = runtime_with({"kvm-a": ["web-01"], "kvm-b": []})
    run(runtime, body())
    metrics = runtime.metrics
    assert value(metrics, "vmmigration_migrations_total", mode="Live", result="succeeded") == 1
    assert value(metrics, "vmmigration_migration_downtime_seconds_sum", mode="Live") == 0.04
    assert value(metrics, "vmmigration_hypervisor_up", hypervisor="kvm-b") == 1
    assert value(metrics, "vmmigration_migrations_in_progress") == 0
    assert value(metrics, "vmmigration_placement_drift", namespace="default", name="web") is None


def test_the_runtime_counts_each_status_patch_and_none_for_a_decision_that_changes_nothing() -> None:
    runtime, kube, _ = runtime_with({"kvm-a": [], "kvm-b": ["web-01"]})
    resource = body()
    run(runtime, resource)
    run(runtime, resource)
    assert len(kube.patches) == 1
    assert value(runtime.metrics, "vmmigration_status_patches_total", resource="vmmigrations") == 1
    assert value(runtime.metrics, "vmmigration_status_patches_total", resource="hypervisors") == 0


def test_the_runtime_flags_a_refused_pre_check_as_failed_without_counting_a_migration() -> None:
    runtime, _, _ = runtime_with({"kvm-a": ["web-01"], "kvm-b": []}, refuse="InsufficientMemory")
    run(runtime, body())
    metrics = runtime.metrics
    assert value(metrics, "vmmigration_migration_failed", namespace="default", name="web") == 1
    assert value(metrics, "vmmigration_migrations_total", mode="Live", result="failed") is None


def test_counters_and_histograms_export_no_created_series() -> None:
    metrics = fresh()
    metrics.ended("ns/a", mode="Live", result=SUCCEEDED, duration_seconds=3.0, downtime_ms=40,
                  transferred_bytes=1024)
    metrics.forecast_checked(quantity="duration", ratio=1.1)
    metrics.reconcile_error()
    text = generate_latest(metrics.registry).decode()
    assert "vmmigration_migrations_total" in text and "vmmigration_migration_duration_seconds_bucket" in text
    assert [line for line in text.splitlines() if "_created" in line] == []
