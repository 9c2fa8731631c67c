"""Pure: which strategy a request runs, chosen from the forecasts, and how the engine runs it.

``mode: Auto`` on a running guest takes Live when its forecast fits the
downtime budget: the guest then never pauses beyond the switch-over, never
runs degraded, and no link failure can split it. Otherwise it takes, among
the fallbacks its policy allows, the one that fits the budget at the least
total time (near-ties go to the earlier one in :data:`PREFERENCE`). An
explicit mode is kept as asked and only forecast. The rule a user can predict:

- Live is always allowed; with ``autoConverge`` it runs throttled;
- the hybrid is a fallback when ``onTimeout`` is Suspend, post-copy when it is
  PostCopy: the same opt-ins that let a live move escalate. Post-copy only
  where a link failure can be survived: the target's libvirt must be able to
  resume it, or a cut would leave the VM split for a person;
- NonLive is a fallback too; it fits a budget only for a copy shorter than it;
- nothing fits: the least downtime when the policy accepts exceeding the budget,
  that is ``overDowntimeBudget: LeastDowntime``, or ``onTimeout: Suspend``
  (a suspend always pauses longer than a switch-over: asking for it accepts
  that); otherwise Blocked with the numbers.
"""

from __future__ import annotations

import dataclasses

from vmmigration.core.forecast import Forecast, Strategy
from vmmigration.core.model import Mode, OnTimeout, OverBudget, Policy

# Among strategies within this share of the quickest, the preferred one wins:
# the guest is disturbed least by the first (it never pauses nor slows), most by the last.
PREFERENCE = (Strategy.LIVE, Strategy.AUTO_CONVERGE, Strategy.POST_COPY, Strategy.HYBRID,
              Strategy.NON_LIVE, Strategy.OFFLINE)
TIE_SHARE = 0.10


@dataclasses.dataclass(frozen=True)
class Choice:
    strategy: Strategy | None  # None: blocked, nothing fits the budget
    why: str
    forecasts: tuple[Forecast, ...]
    within_budget: bool = True

    @property
    def chosen(self) -> Forecast | None:
        return next((f for f in self.forecasts if f.strategy is self.strategy), None)


def allowed(*, policy: Policy, running: bool,
            post_copy_blocker: str | None = None) -> tuple[Strategy, ...]:
    """What Auto may choose for this policy, in order of preference."""
    if not running:
        return (Strategy.OFFLINE,)
    out = [Strategy.AUTO_CONVERGE if policy.auto_converge else Strategy.LIVE]
    if policy.on_timeout is OnTimeout.POST_COPY and post_copy_blocker is None:
        out.append(Strategy.POST_COPY)
    if policy.on_timeout is OnTimeout.SUSPEND:
        out.append(Strategy.HYBRID)
    out.append(Strategy.NON_LIVE)
    return tuple(out)


def budget_seconds(policy: Policy) -> float:
    """The downtime the policy accepts: maxDowntimeMs, else QEMU's own default of 300 ms."""
    return (policy.max_downtime_ms or 300) / 1000.0


def _seconds(value: float | None) -> str:
    return "?" if value is None else (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s")


def choose(forecasts: tuple[Forecast, ...], *, requested: Mode, policy: Policy,
           running: bool, post_copy_blocker: str | None = None) -> Choice:
    choice = _choose(forecasts, requested=requested, policy=policy, running=running,
                     post_copy_blocker=post_copy_blocker)
    if (requested is Mode.AUTO and post_copy_blocker and running
            and policy.on_timeout is OnTimeout.POST_COPY):
        return dataclasses.replace(choice, why=f"{choice.why}; post-copy is not an option: "
                                               f"{post_copy_blocker}")
    return choice


def _choose(forecasts: tuple[Forecast, ...], *, requested: Mode, policy: Policy,
            running: bool, post_copy_blocker: str | None) -> Choice:
    by = {f.strategy: f for f in forecasts}
    over_budget = policy.over_downtime_budget
    budget = budget_seconds(policy)
    if requested is not Mode.AUTO:
        return _explicit(by, requested=requested, policy=policy, forecasts=forecasts, budget=budget)
    permitted = allowed(policy=policy, running=running, post_copy_blocker=post_copy_blocker)
    candidates = [by[s] for s in permitted if s in by and by[s].converges]
    if not candidates:
        return Choice(None, "no allowed strategy finishes the move", forecasts, within_budget=False)
    fitting = [f for f in candidates if f.downtime_seconds is not None
               and f.downtime_seconds <= budget]
    live_ones = (Strategy.LIVE, Strategy.AUTO_CONVERGE)
    if fitting and fitting[0].strategy in live_ones:
        live = fitting[0]
        passes = f"{live.passes} pass{'' if live.passes == 1 else 'es'}"
        return Choice(live.strategy, f"{live.strategy.value}: converges in {passes}, "
                      f"{_seconds(live.duration_seconds)} with {_seconds(live.downtime_seconds)} "
                      f"of downtime, within the budget of {_seconds(budget)}", forecasts)
    if fitting:
        best = _quickest(fitting)
        first = by.get(permitted[0])
        why_not = (f"; {first.strategy.value} cannot: {first.note or 'its downtime exceeds the budget'}"
                   if first is not None else "")
        return Choice(best.strategy, f"{best.strategy.value}: quickest ({_seconds(best.duration_seconds)}) "
                      f"within the downtime budget of {_seconds(budget)}{why_not}", forecasts)
    least = min(candidates, key=lambda f: (f.downtime_seconds or 0.0, f.duration_seconds or 0.0))
    numbers = ", ".join(f"{f.strategy.value} pauses {_seconds(f.downtime_seconds)}" for f in candidates)
    if over_budget is OverBudget.LEAST_DOWNTIME or policy.on_timeout is OnTimeout.SUSPEND:
        return Choice(least.strategy, f"{least.strategy.value}: least downtime "
                      f"({_seconds(least.downtime_seconds)}); none fits the budget of "
                      f"{_seconds(budget)} ({numbers})", forecasts, within_budget=False)
    return Choice(None, f"no allowed strategy fits the downtime budget of {_seconds(budget)}: "
                  f"{numbers}; raise policy.maxDowntimeMs, allow the hybrid (onTimeout: Suspend) or "
                  "post-copy (onTimeout: PostCopy), or set "
                  "policy.overDowntimeBudget: LeastDowntime", forecasts, within_budget=False)


def _quickest(fitting: list[Forecast]) -> Forecast:
    fastest = min(f.duration_seconds or 0.0 for f in fitting)
    near = [f for f in fitting if (f.duration_seconds or 0.0) <= fastest * (1 + TIE_SHARE) + 0.1]
    return min(near, key=lambda f: PREFERENCE.index(f.strategy))


def _explicit(by: dict[Strategy, Forecast], *, requested: Mode, policy: Policy,
              forecasts: tuple[Forecast, ...], budget: float) -> Choice:
    """An explicit mode runs as asked; a live one that cannot converge escalates by policy."""
    if requested is Mode.OFFLINE:
        return Choice(Strategy.OFFLINE, "Offline, as asked", forecasts)
    if requested is Mode.NON_LIVE:
        strategy = Strategy.NON_LIVE
        why = "NonLive, as asked"
    else:
        live = Strategy.AUTO_CONVERGE if policy.auto_converge else Strategy.LIVE
        strategy = live
        why = "Live, as asked"
        forecast = by.get(live)
        if forecast is not None and not forecast.converges:
            strategy = {OnTimeout.SUSPEND: Strategy.HYBRID,
                        OnTimeout.POST_COPY: Strategy.POST_COPY}.get(policy.on_timeout, live)
            why = (f"Live, as asked; it cannot converge, so onTimeout {policy.on_timeout.value} "
                   f"{'escalates it' if strategy is not live else 'aborts it'}")
    chosen = by.get(strategy)
    within = chosen is not None and chosen.downtime_seconds is not None \
        and chosen.downtime_seconds <= budget
    return Choice(strategy, why, forecasts, within_budget=within)


@dataclasses.dataclass(frozen=True)
class Execution:
    """How the engine runs a strategy: the mode and policy it hands libvirt, and when to escalate."""

    mode: Mode
    policy: Policy
    post_copy_at_start: bool = False


def execution(strategy: Strategy, *, policy: Policy) -> Execution:
    match strategy:
        case Strategy.OFFLINE:
            return Execution(Mode.OFFLINE, policy)
        case Strategy.NON_LIVE:
            return Execution(Mode.NON_LIVE, policy)
        case Strategy.AUTO_CONVERGE:
            return Execution(Mode.LIVE, dataclasses.replace(policy, auto_converge=True))
        case Strategy.HYBRID:
            return Execution(Mode.LIVE, dataclasses.replace(policy, on_timeout=OnTimeout.SUSPEND))
        case Strategy.POST_COPY:
            return Execution(Mode.LIVE, dataclasses.replace(policy, on_timeout=OnTimeout.POST_COPY),
                             post_copy_at_start=True)
        case _:
            return Execution(Mode.LIVE, policy)
