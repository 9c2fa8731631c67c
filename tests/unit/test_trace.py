"""Recording a migration and drawing it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from vmmigration.cli import cli
from vmmigration.cli.common import EXIT_USAGE
from vmmigration.core.model import EffectiveMode, JobProgress, MigrationResult
from vmmigration.adapters.plot import render
from vmmigration.core.trace import Trace

MIB = 1024 * 1024


def hybrid() -> Trace:
    trace = Trace(domain="web")
    for second in range(10):
        mode = EffectiveMode.LIVE if second < 6 else EffectiveMode.LIVE_SUSPENDED
        trace.record(seconds=float(second), mode=mode,
                     progress=JobProgress(elapsed_seconds=second, memory_remaining=(40 - second) * MIB,
                                          dirty_rate_bytes_per_s=30 * MIB if second < 6 else 0,
                                          transfer_rate_bytes_per_s=8 * MIB, iteration=second),
                     note="no progress for 3 s: suspending the source" if second == 6 else None)
    trace.finish(MigrationResult(domain="web", mode=EffectiveMode.LIVE_SUSPENDED, duration_seconds=10.0,
                                 downtime_ms=4000, bytes_transferred=0, final=None), seconds=10.0)
    return trace


def test_a_mode_change_is_marked_as_the_switch_over_and_notes_are_kept() -> None:
    trace = hybrid()
    assert trace.switch_over() == 6.0
    assert [m.what for m in trace.moments][:2] == ["switch to LiveSuspended",
                                                  "no progress for 3 s: suspending the source"]
    assert trace.outcome == "succeeded" and trace.downtime_ms == 4000
    assert trace.moments[-1].what == "completed"


def test_a_pure_live_migration_switches_over_at_the_end_minus_its_downtime() -> None:
    trace = Trace(domain="web")
    trace.record(seconds=1.0, mode=EffectiveMode.LIVE, progress=JobProgress(elapsed_seconds=1.0), note=None)
    trace.finish(MigrationResult(domain="web", mode=EffectiveMode.LIVE, duration_seconds=3.0,
                                 downtime_ms=500, bytes_transferred=1, final=None), seconds=3.0)
    assert trace.switch_over() == 2.5


def test_a_trace_survives_a_json_round_trip() -> None:
    trace = hybrid()
    assert Trace.from_json(trace.to_json()) == trace


def test_something_that_is_not_a_trace_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="not a vmmigration trace"):
        Trace.from_json('{"samples": []}')


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    out = tmp_path / "web.png"
    render(hybrid(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_report_summarises_a_recording_and_saves_its_plot(tmp_path: Path) -> None:
    recording = tmp_path / "web.json"
    hybrid().save(recording)
    result = CliRunner().invoke(cli, ["report", str(recording)])
    assert result.exit_code == 0, result.output
    assert "LiveSuspended" in result.output and "switch-over" in result.output
    assert "at 6.00 s" in result.output
    assert (tmp_path / "web.png").exists()


def test_report_on_a_file_that_is_not_a_recording_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"nope": 1}')
    result = CliRunner().invoke(cli, ["report", str(bad)])
    assert result.exit_code == EXIT_USAGE
    assert "not a vmmigration trace" in result.output
