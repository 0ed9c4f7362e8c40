"""The pure decision core: ``decide(state, event, now, policy) -> (state, actions)``.

No I/O, no clock, no randomness: frozen dataclasses in, frozen dataclasses out. The shell
(controller/reconcile.py) persists the state, carries the actions out through ports and
feeds their results back as events; the backtest drives the same function with replayed
events and a simulated clock.

Per model, phases::

    idle -> training -> shadow -> deciding -> cooldown -> idle
                \\-> deciding (failed) -> failed -> idle

A decision ends promoted, rejected or ``no_change`` (the challenger's training data hash or
its scores on every evaluation pair equal the champion's: nothing to promote; the alias
stays and the cooldown applies, as after a rejection).

``deciding`` is durable: the planned outcome (promote, reject, fail) is persisted before the
registry is touched and re-emitted on every ``Tick`` until it is done and recorded, so a
crash anywhere resumes cleanly (every action is idempotent, keyed by the cycle id).
Human overrides and automatic rollbacks are held the same way in ``state.override``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

from controller.gate import against_chain
from controller.machine import (  # noqa: F401  (re-exported: the core's vocabulary)
    ACTIVE,
    DURABLE,
    EVIDENCE,
    MAX_REASONS,
    PHASES,
    SOURCES,
    Action,
    CheckTraining,
    Cycle,
    DecisionRecorded,
    Evaluate,
    Event,
    LaunchTraining,
    ModelState,
    Notify,
    Override,
    PerformanceObserved,
    Phase,
    Policy,
    Probation,
    Promote,
    PromoteRequested,
    PromotionDone,
    RecordDecision,
    Reject,
    ReloadServing,
    Result,
    Rollback,
    RollbackRequested,
    SetChallenger,
    ShadowEvidence,
    StepFailed,
    Tick,
    TrainingFailed,
    TrainingLaunched,
    TrainingSucceeded,
    TrainingTimedOut,
    Trigger,
)

# -- the decision function --------------------------------------------------------------------

def decide(state: ModelState, event: Event, now: datetime,
           policy: Policy = Policy()) -> tuple[ModelState, tuple[Action, ...]]:
    """The next state and what to do, for one event at time ``now``."""
    match event:
        case Tick():
            return _tick(state, now, policy)
        case Trigger():
            return _trigger(state, event, now)
        case RollbackRequested():
            return _rollback_requested(state, event, now)
        case PromoteRequested():
            if state.override is not None:
                return state, ()
            override = Override(_override_id(state, now, "promote"), "manual_promote", now,
                                event.reason, event.actor, event.champion, event.version)
            state = replace(state, seq=state.seq + 1, override=override)
            return state, _override_actions(state)
        case PerformanceObserved():
            return _performance(state, event, now, policy)
        case TrainingLaunched() if (current := _current(state, event.cycle_id, "training")):
            cycle = replace(current, attempt=event.attempt, launched_at=now,
                            holdout_from=event.holdout_from or current.holdout_from)
            state = replace(state, cycle=cycle)
            # check at once: a launch that finished already (in process, or an earlier attempt
            # found registered) is taken now, not after a tick that may outlast the timeout
            return state, _phase_actions(state)
        case TrainingSucceeded() if (current := _current(state, event.cycle_id, "training")):
            cycle = replace(current, challenger=event.version, shadow_since=now)
            state = replace(state, phase="shadow", since=now, cycle=cycle, last_trained_at=now)
            return state, _phase_actions(state)
        case TrainingFailed() if _current(state, event.cycle_id, "training"):
            return _training_failed(state, event.reason, event.retryable, now, policy)
        case TrainingTimedOut() if _current(state, event.cycle_id, "training"):
            return _training_failed(state, f"training timed out after "
                                    f"{_fmt(policy.training_timeout)}", True, now, policy)
        case ShadowEvidence() if _current(state, event.cycle_id, "shadow"):
            return _evidence(state, event, now, policy)
        case PromotionDone():
            return _promotion_done(state, event)
        case DecisionRecorded():
            return _recorded(state, event, now, policy)
        case StepFailed():
            return _step_failed(state, event, now, policy)
    return state, ()  # stale or unknown: events of a cycle that is no longer current


def _current(state: ModelState, cycle_id: str, phase: Phase) -> Cycle | None:
    """The state's cycle when it is ``cycle_id`` in ``phase`` (else the event is stale)."""
    if state.cycle is not None and state.cycle.id == cycle_id and state.phase == phase:
        return state.cycle
    return None


def _fmt(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def cycle_id_for(model: str, seq: int, now: datetime) -> str:
    return f"{model}-{now:%Y%m%dT%H%M%S}-{seq}"


def _override_id(state: ModelState, now: datetime, kind: str) -> str:
    return f"{state.model}-{kind}-{now:%Y%m%dT%H%M%S}-{state.seq + 1}"


def _start_cycle(state: ModelState, reasons: tuple[str, ...], sources: tuple[str, ...],
                 manual: bool, now: datetime) -> tuple[ModelState, tuple[Action, ...]]:
    seq = state.seq + 1
    cycle = Cycle(cycle_id_for(state.model, seq, now), now, reasons, sources, manual)
    state = replace(state, phase="training", since=now, until=None, seq=seq, cycle=cycle,
                    deferred=(), deferred_sources=(), deferred_count=0)
    return state, _phase_actions(state)


def _with(reasons: tuple[str, ...], reason: str) -> tuple[str, ...]:
    return (*reasons, reason) if len(reasons) < MAX_REASONS else reasons


def _trigger(state: ModelState, event: Trigger, now: datetime,
             ) -> tuple[ModelState, tuple[Action, ...]]:
    reason = f"{event.source}: {event.reason}"
    if state.phase in ACTIVE and state.cycle is not None:
        if reason in state.cycle.reasons:
            return state, ()
        cycle = replace(state.cycle, reasons=_with(state.cycle.reasons, reason),
                        merged=state.cycle.merged + 1,
                        sources=tuple(dict.fromkeys((*state.cycle.sources, event.source))))
        return replace(state, cycle=cycle), ()
    if state.phase == "idle" or event.manual:
        return _start_cycle(state, _with(state.deferred, reason) if event.manual else (reason,),
                            (event.source,), event.manual, now)
    if reason in state.deferred:
        return state, ()
    return replace(state, deferred=_with(state.deferred, reason),
                   deferred_count=state.deferred_count + 1,
                   deferred_sources=tuple(dict.fromkeys((*state.deferred_sources,
                                                         event.source)))), ()


def trigger_outcome(before: ModelState, after: ModelState) -> str:
    """How a trigger was taken: started, merged, deferred or ignored (for metrics and audit)."""
    if after.cycle is not None and (before.cycle is None or before.cycle.id != after.cycle.id):
        return "started"
    if after.cycle is not None and before.cycle is not None and \
            after.cycle.merged > before.cycle.merged:
        return "merged"
    if after.deferred_count > before.deferred_count:
        return "deferred"
    if after.override is not None and after.override != before.override:
        return "started"
    return "ignored"


def _tick(state: ModelState, now: datetime, policy: Policy) -> tuple[ModelState, tuple[Action, ...]]:
    extra: tuple[Action, ...] = ()
    if state.override is not None:
        extra = _override_actions(state)
    if state.probation is not None and now >= state.probation.until:
        state = replace(state, probation=None)
    if state.phase in ("cooldown", "failed") and state.until is not None and now >= state.until:
        state = replace(state, phase="idle", since=now, until=None)
    if state.phase == "idle" and state.deferred:
        state, actions = _start_cycle(state, state.deferred, state.deferred_sources, False, now)
        return state, (*extra, *actions)
    if state.phase == "training" and state.cycle is not None:
        cycle = state.cycle
        if cycle.launched_at is not None and now - cycle.launched_at >= policy.training_timeout:
            state, actions = _training_failed(
                state, f"training attempt {cycle.attempt} timed out after "
                f"{_fmt(policy.training_timeout)}", True, now, policy)
            return state, (*extra, *actions)
    if state.phase == "shadow" and state.cycle is not None and state.cycle.shadow_since is not None \
            and now - state.cycle.shadow_since >= policy.evaluation_timeout:
        last = state.cycle.gate.reasons if state.cycle.gate is not None else ()
        state, actions = _plan(state, "reject", (
            f"evaluation timed out after {_fmt(policy.evaluation_timeout)} without a "
            "conclusive gate", *last), now)
        return state, (*extra, *actions)
    return state, (*extra, *_phase_actions(state))


def _phase_actions(state: ModelState) -> tuple[Action, ...]:
    cycle = state.cycle
    if cycle is None:
        return ()
    if state.phase == "training":
        if cycle.launched_at is None:
            return (LaunchTraining(state.model, cycle.id, cycle.attempt + 1, cycle.reasons,
                                   cycle.sources, cycle.started_at),)
        return (CheckTraining(state.model, cycle.id, cycle.attempt),)
    if state.phase == "shadow" and cycle.challenger is not None:
        return (SetChallenger(state.model, cycle.id, cycle.challenger),
                Evaluate(state.model, cycle.id, cycle.challenger,
                         cycle.shadow_since or cycle.started_at, cycle.holdout_from,
                         cycle.evidence))
    if state.phase == "deciding":
        if cycle.result is None:
            if cycle.plan == "promote" and cycle.challenger is not None:
                return (Promote(state.model, cycle.id, cycle.challenger, cycle.champion),)
            outcome = "no_change" if cycle.plan == "no_change" else "rejected"
            return (Reject(state.model, cycle.id, cycle.challenger, cycle.champion,
                           cycle.plan_reasons, outcome),)
        return (_record(state.model, cycle),)
    return ()


def _record(model: str, cycle: Cycle) -> RecordDecision:
    assert cycle.result is not None
    return RecordDecision(model, cycle.id, "gate", cycle.result.outcome, cycle.champion,
                          cycle.challenger, cycle.result.new_champion, cycle.reasons,
                          (*cycle.plan_reasons, *cycle.result.reasons), cycle.gate)


def _plan(state: ModelState, plan: Literal["promote", "reject", "no_change", "fail"],
          reasons: tuple[str, ...], now: datetime,
          **changes: Any) -> tuple[ModelState, tuple[Action, ...]]:
    assert state.cycle is not None
    cycle = replace(state.cycle, plan=plan, plan_reasons=reasons, **changes)
    if plan == "fail":  # nothing to undo in the registry: the outcome is known now
        cycle = replace(cycle, result=Result("failed", cycle.champion, ()))
    state = replace(state, phase="deciding", since=now, cycle=cycle)
    return state, _phase_actions(state)


def _training_failed(state: ModelState, reason: str, retryable: bool, now: datetime,
                     policy: Policy) -> tuple[ModelState, tuple[Action, ...]]:
    assert state.cycle is not None
    cycle = state.cycle
    tried = cycle.attempt if cycle.launched_at is not None else cycle.attempt + 1
    if retryable and tried < policy.training_attempts:
        cycle = replace(cycle, launched_at=None, attempt=tried,
                        plan_reasons=(*cycle.plan_reasons, f"attempt {tried}: {reason}"))
        state = replace(state, cycle=cycle)
        return state, _phase_actions(state)
    cycle = replace(cycle, attempt=tried)
    state = replace(state, cycle=cycle)
    why = reason if not retryable else f"{reason} (attempt {tried} of " \
        f"{policy.training_attempts})"
    return _plan(state, "fail", (*cycle.plan_reasons, f"training failed: {why}"), now)


def _step_failed(state: ModelState, event: StepFailed, now: datetime,
                 policy: Policy) -> tuple[ModelState, tuple[Action, ...]]:
    """End the failed cycle or override. Training or shadow: plan ``fail`` (recorded like any
    decision). Deciding with its outcome known, where recording itself keeps failing: give up
    the record (the reason is notified and kept in the state) rather than fail forever. An
    override the same way: not carried out yet, it fails (recorded); carried out, its record
    is given up."""
    reason, cycle = event.reason, state.cycle
    o = state.override
    active = cycle is not None and state.phase in ACTIVE
    if o is not None and (event.cycle_id == o.id or (event.cycle_id is None and not active)):
        return _override_failed(state, o, reason)
    if cycle is None or not active or event.cycle_id not in (None, cycle.id):
        return state, ()
    why = f"failed: {reason}"
    if state.phase in ("training", "shadow"):
        return _plan(state, "fail", (*cycle.plan_reasons, why), now)
    if cycle.result is None:  # a planned move not done yet: it fails without touching anything
        cycle = replace(cycle, result=Result("failed", cycle.champion, (why,)))
        state = replace(state, cycle=cycle)
        return state, _phase_actions(state)
    state = replace(state, phase="failed", since=now, until=now + policy.failed_backoff,
                    last_cycle_id=cycle.id, last_outcome="failed")
    moved = cycle.result.new_champion not in (None, cycle.champion)
    note = Notify(state.model, f"{state.model}: cycle {cycle.id} ended failed, its decision "
                  f"was not recorded: {reason}")
    return state, ((ReloadServing(state.model),) if moved else ()) + (note,)


def _override_failed(state: ModelState, o: Override,
                     reason: str) -> tuple[ModelState, tuple[Action, ...]]:
    if o.result is None:  # not carried out: it fails (the champion as requested), recorded
        state = replace(state, override=replace(o, result=Result("failed", o.from_version,
                                                                 (f"failed: {reason}",))))
        return state, _override_actions(state)
    state = replace(state, override=None, last_outcome=f"{o.kind}:failed")
    moved = o.result.new_champion is not None and o.result.new_champion != o.from_version
    return state, (((ReloadServing(state.model),) if moved else ())
                   + (Notify(state.model, f"{state.model}: {o.kind.replace('_', ' ')} {o.id} "
                             f"{o.result.outcome} (champion v{o.from_version} -> "
                             f"v{o.result.new_champion}), its decision was not recorded: "
                             f"{reason}"),))


def _evidence(state: ModelState, event: ShadowEvidence, now: datetime,
              policy: Policy) -> tuple[ModelState, tuple[Action, ...]]:
    assert state.cycle is not None
    cycle = state.cycle
    gate = against_chain(event.gate, drawdown=state.chain_drawdown,
                         superiority=_superiority(cycle, policy))
    evidence = cycle.evidence or (gate.evidence if gate.evidence in EVIDENCE else None)
    if gate.outcome == "promote":
        return _plan(state, "promote", gate.reasons, now, gate=gate, champion=event.champion,
                     evidence=evidence)
    if gate.outcome == "reject":
        return _plan(state, "reject", gate.reasons, now, gate=gate, champion=event.champion,
                     evidence=evidence)
    if gate.outcome == "no_change":  # nothing to promote: the alias stays, the cooldown applies
        return _plan(state, "no_change", gate.reasons, now, gate=gate, champion=event.champion,
                     evidence=evidence)
    state = replace(state, cycle=replace(cycle, gate=gate, champion=event.champion,
                                         evidence=evidence))
    return state, ()


def _superiority(cycle: Cycle, policy: Policy) -> bool:
    """Whether this cycle's challenger must be better (CI low > 0), not only non-inferior:
    ``scheduled`` covers routine retrains (schedule or labelled-rows triggers only)."""
    if policy.require_superiority == "always":
        return True
    routine = bool(cycle.sources) and set(cycle.sources) <= {"schedule", "labels"}
    return policy.require_superiority == "scheduled" and routine and not cycle.manual


def _chain(state: ModelState, cycle: Cycle, new_champion: int) -> ModelState:
    """The chain's running bound after a gate promotion (a Lindley recursion over the CI
    lows): a promotion without an interval (first champion) starts a new chain."""
    low = cycle.gate.ci_low if cycle.gate is not None else None
    if low is None:
        return replace(state, chain_drawdown=0.0, chain_anchor=new_champion)
    drawdown = min(0.0, state.chain_drawdown + low)
    anchor = new_champion if drawdown == 0.0 else (state.chain_anchor or cycle.champion)
    return replace(state, chain_drawdown=drawdown, chain_anchor=anchor)


def _promotion_done(state: ModelState, event: PromotionDone,
                    ) -> tuple[ModelState, tuple[Action, ...]]:
    result = Result(event.outcome, event.new_champion, event.reasons)
    override = state.override
    if override is not None and override.id == event.cycle_id and override.result is None:
        state = replace(state, override=replace(override, result=result))
        return state, _override_actions(state)
    if state.phase == "deciding" and state.cycle is not None and state.cycle.id == event.cycle_id \
            and state.cycle.result is None:
        state = replace(state, cycle=replace(state.cycle, result=result))
        return state, _phase_actions(state)
    return state, ()


def _recorded(state: ModelState, event: DecisionRecorded, now: datetime,
              policy: Policy) -> tuple[ModelState, tuple[Action, ...]]:
    override = state.override
    if override is not None and override.id == event.cycle_id and override.result is not None:
        result = override.result
        probation = state.probation
        if result.outcome in ("rolled_back", "promoted"):
            probation = None
        state = replace(state, override=None, probation=probation,
                        last_outcome=f"{override.kind}:{result.outcome}")
        if result.outcome in ("rolled_back", "promoted"):  # a human or rollback move: new chain
            state = replace(state, chain_drawdown=0.0, chain_anchor=result.new_champion)
        text = (f"{state.model}: {override.kind.replace('_', ' ')} {result.outcome} "
                f"(champion v{override.from_version} -> v{result.new_champion}); "
                f"{override.reason}")
        moved = result.new_champion != override.from_version
        return state, ((ReloadServing(state.model),) if moved else ()) + (Notify(state.model, text),)
    cycle = state.cycle
    if not (state.phase == "deciding" and cycle is not None and cycle.id == event.cycle_id
            and cycle.result is not None):
        return state, ()
    result = cycle.result
    failed = result.outcome == "failed"
    probation = state.probation
    if result.outcome == "promoted" and result.new_champion is not None:
        baseline = None
        if state.last_realised is not None and state.last_realised[0] == cycle.champion:
            baseline = state.last_realised[1]
        probation = Probation(cycle.id, result.new_champion, cycle.champion,
                              now + policy.probation, baseline)
        state = _chain(state, cycle, result.new_champion)
    state = replace(state, phase="failed" if failed else "cooldown", since=now,
                    until=now + (policy.failed_backoff if failed else policy.cooldown),
                    last_cycle_id=cycle.id, last_outcome=result.outcome, probation=probation)
    text = (f"{state.model}: cycle {cycle.id} {result.outcome}"
            f" (champion v{cycle.champion}, challenger v{cycle.challenger}); "
            + "; ".join((*cycle.plan_reasons, *result.reasons)[-2:]))
    actions: tuple[Action, ...] = (Notify(state.model, text),)
    if result.outcome == "promoted" or (failed and result.new_champion not in (None,
                                                                              cycle.champion)):
        actions = (ReloadServing(state.model), *actions)
    return state, actions


def _override_actions(state: ModelState) -> tuple[Action, ...]:
    o = state.override
    if o is None:
        return ()
    if o.result is None:
        if o.kind == "manual_promote" and o.to_version is not None:
            return (Promote(state.model, o.id, o.to_version, o.from_version, kind=o.kind),)
        return (Rollback(state.model, o.id, o.from_version, o.to_version, o.kind),)
    return (RecordDecision(state.model, o.id, o.kind, o.result.outcome, o.from_version,
                           o.to_version, o.result.new_champion, (o.reason,),
                           (o.reason, *o.result.reasons), None, o.actor),)


def _rollback_requested(state: ModelState, event: RollbackRequested,
                        now: datetime) -> tuple[ModelState, tuple[Action, ...]]:
    if state.override is not None:
        return state, ()
    p = state.probation
    if not event.manual and (p is None or now >= p.until or event.champion != p.version):
        return state, ()  # automatic rollback only within probation of the promoted champion
    kind: Literal["rollback", "manual_rollback"] = "manual_rollback" if event.manual else "rollback"
    reason = f"{event.source}: {event.reason}"
    override = Override(_override_id(state, now, "rollback"), kind, now, reason, event.actor,
                        event.champion, event.previous)
    state = replace(state, seq=state.seq + 1, override=override)
    return state, _override_actions(state)


def _performance(state: ModelState, event: PerformanceObserved, now: datetime,
                 policy: Policy) -> tuple[ModelState, tuple[Action, ...]]:
    if event.value is not None:
        state = replace(state, last_realised=(event.version, event.value))
    p = state.probation
    sign = -1.0 if policy.lower_is_better else 1.0
    if p is not None and now < p.until and event.version == p.version and event.value is not None \
            and p.baseline is not None and sign * (event.value - p.baseline) < -policy.rollback_margin:
        why = (f"realised metric {event.value:.4f} of v{p.version} is below the old champion's "
               f"{p.baseline:.4f} by more than {policy.rollback_margin:.4f} within probation")
        return _rollback_requested(state, RollbackRequested(
            why, "performance", p.version, p.previous), now)
    below = (event.value is not None and policy.performance_threshold is not None
             and sign * (event.value - policy.performance_threshold) < 0)
    if event.degraded or below:
        why = event.reason or (f"realised metric {event.value:.4f} below threshold "
                               f"{policy.performance_threshold}")
        return _trigger(state, Trigger("performance", why), now)
    return state, ()

