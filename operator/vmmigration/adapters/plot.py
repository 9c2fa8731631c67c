"""Draw a :class:`~vmmigration.core.trace.Trace` as a PNG: memory remaining and dirty rate
over time, with the switch-over marked. Needs matplotlib (``pip install vmmigration[plot]``)."""

from __future__ import annotations

from pathlib import Path

from vmmigration.core.trace import Trace

MIB = 1024 * 1024


class PlotUnavailable(RuntimeError):
    pass


def _grouped(trace: Trace) -> list[tuple[float, list[str]]]:
    """Moments close in time share one line and one label, so labels never overprint."""
    groups: list[tuple[float, list[str]]] = []
    for moment in sorted(trace.moments, key=lambda m: m.seconds):
        if groups and moment.seconds - groups[-1][0] < 0.5:
            groups[-1][1].append(moment.what)
        else:
            groups.append((moment.seconds, [moment.what]))
    return groups


def render(trace: Trace, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'vmmigration[plot]'") from None
    if not trace.samples:
        raise ValueError(f"the trace of {trace.domain} has no samples to plot")
    seconds = [s.seconds for s in trace.samples]
    figure, memory_axis = plt.subplots(figsize=(10, 5), dpi=100)
    memory_axis.plot(seconds, [s.memory_remaining_bytes / MIB for s in trace.samples],
                     color="tab:blue", linewidth=2, label="memory remaining (MiB)")
    memory_axis.set_xlabel("seconds since start")
    memory_axis.set_ylabel("memory remaining (MiB)", color="tab:blue")
    memory_axis.set_ylim(bottom=0)
    rate_axis = memory_axis.twinx()
    rate_axis.plot(seconds, [s.dirty_rate_bytes_per_s / MIB for s in trace.samples],
                   color="tab:red", linewidth=1.5, label="dirty rate (MiB/s)")
    rate_axis.plot(seconds, [s.transfer_rate_bytes_per_s / MIB for s in trace.samples],
                   color="tab:green", linewidth=1, linestyle=":", label="transfer rate (MiB/s)")
    rate_axis.set_ylabel("MiB/s")
    rate_axis.set_ylim(bottom=0)
    switch = trace.switch_over()
    if switch is not None:
        # From the switch on the guest no longer runs on the source.
        memory_axis.axvspan(switch, max(switch, seconds[-1]), color="grey", alpha=0.15)
    for at, labels in _grouped(trace):
        switching = any(label.startswith("switch") for label in labels)
        memory_axis.axvline(at, color="black" if switching else "tab:orange",
                            linestyle="-" if switching else "--", linewidth=1.5 if switching else 1)
        memory_axis.annotate("; ".join(label[:48] for label in labels), xy=(at, 0.98),
                             xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                             fontsize=8)
    downtime = "unknown" if trace.downtime_ms is None else f"{trace.downtime_ms} ms"
    duration = "" if trace.duration_seconds is None else f", {trace.duration_seconds:.1f} s"
    memory_axis.set_title(f"{trace.domain}: {trace.mode or trace.outcome}{duration}, downtime {downtime}")
    lines = memory_axis.get_lines()[:1] + rate_axis.get_lines()
    memory_axis.legend(lines, [str(line.get_label()) for line in lines], loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
