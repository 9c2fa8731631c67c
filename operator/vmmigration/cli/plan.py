"""``vmmigration plan``: what moving a domain would cost with each strategy, moving nothing.

It runs every pre-check, measures the guest's dirty rate (a second or four),
and prints the forecast of every strategy and the one Auto (or the asked
mode) would run, with the figures the forecast rests on and where each came
from.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from vmmigration.cli.common import EXIT_PRECHECK, MODES, ON_TIMEOUT, choice, console, fail, hosts, mib
from vmmigration.core.config import Settings
from vmmigration.core.model import MigrationRequest, OverBudget, Policy
from vmmigration.core.plans import MovePlan

_OVER_BUDGET = {"block": OverBudget.BLOCK, "least-downtime": OverBudget.LEAST_DOWNTIME}


@click.command()
@hosts
@click.option("--mode", type=choice(MODES), default="auto", show_default=True)
@click.option("--on-timeout", type=choice(ON_TIMEOUT), default="abort", show_default=True,
              help="suspend allows the hybrid, post-copy allows post-copy.")
@click.option("--bandwidth", type=click.IntRange(min=0), default=0, metavar="MiB/s",
              help="Bandwidth cap (0 = unlimited; the link's rate is then what recent moves achieved).")
@click.option("--max-downtime", type=click.IntRange(min=0), default=0, metavar="MS",
              help="The downtime budget (0 = QEMU's default of 300 ms).")
@click.option("--auto-converge", is_flag=True, help="Live moves run with QEMU's vCPU throttling.")
@click.option("--over-budget", type=choice(_OVER_BUDGET), default="block", show_default=True,
              help="What Auto does when nothing fits the budget.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (status.plan's shape).")
def plan(domain: str, source: str, target: str, mode: str, on_timeout: str, bandwidth: int,
         max_downtime: int, auto_converge: bool, over_budget: str, as_json: bool) -> None:
    """Forecast moving DOMAIN with every strategy, and say which would run. Moves nothing."""
    from vmmigration.adapters import libvirt as virt
    from vmmigration.service.engine import PrecheckFailed

    request = MigrationRequest(
        domain=domain, source_uri=source, target_uri=target, mode=MODES[mode.lower()],
        policy=Policy(on_timeout=ON_TIMEOUT[on_timeout.lower()], bandwidth_mib_per_s=bandwidth,
                      max_downtime_ms=max_downtime, auto_converge=auto_converge,
                      over_downtime_budget=_OVER_BUDGET[over_budget.lower()]))
    settings = Settings.from_env()
    engine = virt.engine(poll_interval_seconds=settings.poll_interval_seconds,
                         libvirt_timeout_seconds=settings.libvirt_timeout_seconds)
    try:
        planned = engine.check(request, measure=True)
    except PrecheckFailed as error:
        fail(as_json, "PrecheckFailed", [f"{f.reason}: {f.message}" for f in error.findings],
             code=EXIT_PRECHECK)
    if as_json:
        click.echo(json.dumps(planned.as_fields(generation=0)))
        return
    show(planned, domain=domain)


def show(planned: MovePlan, *, domain: str) -> None:
    """The plan as a table of strategies and a line on what it rests on."""
    table = Table(title=f"moving {domain}: {planned.strategy.value if planned.strategy else 'blocked'}")
    for column in ("strategy", "converges", "duration", "downtime", "passes", "degraded", "note"):
        table.add_column(column)
    for f in planned.forecasts:
        chosen = "→ " if f.strategy is planned.strategy else "  "
        table.add_row(
            chosen + f.strategy.value, "yes" if f.converges else "no",
            "" if f.duration_seconds is None else f"{f.duration_seconds:.1f} s",
            "" if f.downtime_seconds is None else f"{f.downtime_seconds * 1000:.0f} ms",
            "" if f.passes is None else str(f.passes),
            f"{f.degraded_seconds:.1f} s" if f.degraded_seconds else "", f.note)
    if planned.forecasts:
        console.print(table)
    inputs: dict[str, Any] = planned.as_fields(generation=0)["inputs"]
    rate = inputs.get("dirtyRateBytesPerSecond")
    link = inputs.get("linkBytesPerSecond")
    console.print(
        f"memory {mib(inputs['memoryBytes'])}, in use {mib(inputs['inUseBytes'])} "
        f"({inputs['inUseSource']}); dirty rate "
        + ("not measured" if rate is None else
           f"{mib(rate)}/s (up to {mib(inputs['dirtyRateHighBytesPerSecond'])}/s), hot set "
           f"{'' if inputs['hotSetKnown'] else 'at least '}{mib(inputs['hotSetBytes'])}")
        + f"; link {'unknown' if link is None else mib(link) + '/s'} ({inputs['linkSource']}); "
        f"downtime budget {inputs['maxDowntimeMs']} ms")
    if planned.channels is not None:
        console.print(f"streams: {planned.channels.why}")
    console.print(f"[bold]{planned.why}[/]")
