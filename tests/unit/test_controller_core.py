"""The pure decision core, driven with plain values and a fake clock (no sleeps, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.codec import state_from_json, state_to_json
from controller.core import decide, trigger_outcome
from controller.machine import (
    CheckTraining,
    DecisionRecorded,
    Evaluate,
    GateDecision,
    LaunchTraining,
    ModelState,
    Notify,
    PerformanceObserved,
    Policy,
    Promote,
    PromoteRequested,
    PromotionDone,
    RecordDecision,
    Reject,
    ReloadServing,
    Rollback,
    RollbackRequested,
    SetChallenger,
    ShadowEvidence,
    Tick,
    TrainingFailed,
    TrainingLaunched,
    TrainingSucceeded,
    Trigger,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(cooldown=timedelta(hours=6), training_timeout=timedelta(minutes=30),
                training_attempts=2, evaluation_timeout=timedelta(hours=2),
                probation=timedelta(hours=24), rollback_margin=0.02)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


def gate(outcome: str, n: int = 500, diff: float = 0.02) -> GateDecision:
    return GateDecision(outcome, (f"{outcome} on n={n}",), "roc_auc", n, evidence="offline_replay",
                        champion_metric=0.7, challenger_metric=0.7 + diff, difference=diff,
                        ci_low=diff - 0.01, ci_high=diff + 0.01, margin=0.01)


def kinds(actions: tuple) -> list[str]:
    return [type(a).__name__ for a in actions]


def to_shadow(clock: Clock, state: ModelState | None = None) -> tuple[ModelState, str]:
    state = state or ModelState("churn")
    state, actions = decide(state, Trigger("alertmanager", "DriftHigh"), clock.now, POLICY)
    assert state.phase == "training" and kinds(actions) == ["LaunchTraining"]
    cid = state.cycle.id
    state, _ = decide(state, TrainingLaunched(cid, 1), clock.advance(seconds=1), POLICY)
    state, actions = decide(state, Tick(), clock.advance(minutes=1), POLICY)
    assert actions == (CheckTraining("churn", cid, 1),)
    state, actions = decide(state, TrainingSucceeded(cid, 7), clock.advance(minutes=2), POLICY)
    assert state.phase == "shadow"
    assert kinds(actions) == ["SetChallenger", "Evaluate"]
    return state, cid


def finish(state: ModelState, cid: str, outcome: str, clock: Clock,
           new_champion: int | None) -> tuple[ModelState, tuple]:
    state, actions = decide(state, PromotionDone(cid, outcome, new_champion), clock.advance(
        seconds=1), POLICY)
    assert kinds(actions) == ["RecordDecision"]
    record = actions[0]
    assert record.outcome == outcome and record.cycle_id == cid
    return decide(state, DecisionRecorded(cid), clock.advance(seconds=1), POLICY)


def test_full_cycle_promotes_then_cools_down() -> None:
    clock = Clock()
    state, cid = to_shadow(clock)
    state, actions = decide(state, ShadowEvidence(cid, gate("wait", n=50), 3),
                            clock.advance(minutes=5), POLICY)
    assert state.phase == "shadow" and actions == ()
    state, actions = decide(state, ShadowEvidence(cid, gate("promote"), 3),
                            clock.advance(minutes=5), POLICY)
    assert state.phase == "deciding"
    assert actions == (Promote("churn", cid, 7, 3),)
    # Re-emitted on every tick until done: a crash between the two resumes the same promotion.
    assert decide(state, Tick(), clock.now, POLICY)[1] == actions
    state, actions = finish(state, cid, "promoted", clock, 7)
    assert state.phase == "cooldown" and state.last_outcome == "promoted"
    assert kinds(actions) == ["ReloadServing", "Notify"]
    assert state.probation is not None and state.probation.version == 7
    assert state.probation.previous == 3


def test_worse_challenger_is_rejected() -> None:
    clock = Clock()
    state, cid = to_shadow(clock)
    state, actions = decide(state, ShadowEvidence(cid, gate("reject", diff=-0.1), 3),
                            clock.now, POLICY)
    assert kinds(actions) == ["Reject"] and actions[0].challenger == 7
    state, actions = finish(state, cid, "rejected", clock, 3)
    assert state.phase == "cooldown"
    assert kinds(actions) == ["Notify"]          # no reload: the champion did not move
    assert state.probation is None


def test_evaluation_timeout_rejects_with_the_last_gate_reasons() -> None:
    clock = Clock()
    state, cid = to_shadow(clock)
    state, _ = decide(state, ShadowEvidence(cid, gate("wait", n=40), 3), clock.now, POLICY)
    state, actions = decide(state, Tick(), clock.advance(hours=2, minutes=3), POLICY)
    assert state.phase == "deciding" and kinds(actions) == ["Reject"]
    assert "evaluation timed out after 2h" in actions[0].reasons[0]
    assert "wait on n=40" in actions[0].reasons


def test_triggers_during_a_cycle_merge_as_reasons() -> None:
    clock = Clock()
    state, actions = decide(ModelState("churn"), Trigger("alertmanager", "A"), clock.now, POLICY)
    before = state
    state, actions = decide(state, Trigger("verdict", "drift 0.5"), clock.now, POLICY)
    assert actions == () and trigger_outcome(before, state) == "merged"
    state2, _ = decide(state, Trigger("verdict", "drift 0.5"), clock.now, POLICY)
    assert state2 == state                                      # same reason twice: once
    state3, actions = decide(state, Trigger("manual", "page", manual=True), clock.now, POLICY)
    assert state3.cycle.id == state.cycle.id and actions == ()  # never two retrains at once
    assert state3.cycle.reasons == ("alertmanager: A", "verdict: drift 0.5", "manual: page")


@pytest.mark.parametrize(("manual", "phase", "outcome"), [
    (False, "cooldown", "deferred"),
    (True, "training", "started"),
])
def test_cooldown_holds_automatic_triggers_but_not_manual(manual: bool, phase: str,
                                                          outcome: str) -> None:
    clock = Clock()
    state, cid = to_shadow(clock)
    state, _ = decide(state, ShadowEvidence(cid, gate("reject"), 3), clock.now, POLICY)
    state, _ = finish(state, cid, "rejected", clock, 3)
    source = "manual" if manual else "schedule"
    after, _ = decide(state, Trigger(source, "again", manual=manual),
                      clock.advance(hours=1), POLICY)
    assert after.phase == phase
    assert trigger_outcome(state, after) == outcome


def test_deferred_trigger_starts_a_cycle_when_cooldown_ends() -> None:
    clock = Clock()
    state, cid = to_shadow(clock)
    state, _ = decide(state, ShadowEvidence(cid, gate("reject"), 3), clock.now, POLICY)
    state, _ = finish(state, cid, "rejected", clock, 3)
    state, _ = decide(state, Trigger("labels", "5000 rows"), clock.advance(hours=1), POLICY)
    state, actions = decide(state, Tick(), clock.advance(hours=2), POLICY)
    assert state.phase == "cooldown" and actions == ()
    state, actions = decide(state, Tick(), clock.advance(hours=4), POLICY)
    assert state.phase == "training" and kinds(actions) == ["LaunchTraining"]
    assert state.cycle.reasons == ("labels: 5000 rows",) and state.cycle.id != cid


def test_training_timeout_relaunches_then_fails_and_records() -> None:
    clock = Clock()
    state, actions = decide(ModelState("churn"), Trigger("manual", "go", manual=True),
                            clock.now, POLICY)
    cid = state.cycle.id
    state, _ = decide(state, TrainingLaunched(cid, 1), clock.now, POLICY)
    state, actions = decide(state, Tick(), clock.advance(minutes=31), POLICY)
    assert actions == (LaunchTraining("churn", cid, 2, ("manual: go",), ("manual",), T0),)
    state, _ = decide(state, TrainingLaunched(cid, 2), clock.now, POLICY)
    state, actions = decide(state, Tick(), clock.advance(minutes=31), POLICY)
    assert state.phase == "deciding" and kinds(actions) == ["RecordDecision"]
    assert actions[0].outcome == "failed"
    assert "timed out after 30m" in actions[0].reasons[-1]
    state, actions = decide(state, DecisionRecorded(cid), clock.now, POLICY)
    assert state.phase == "failed" and state.last_outcome == "failed"
    state, _ = decide(state, Tick(), clock.advance(hours=1), POLICY)
    assert state.phase == "idle"


def test_permanent_training_failure_is_not_retried() -> None:
    clock = Clock()
    state, _ = decide(ModelState("churn"), Trigger("manual", "go", manual=True), clock.now, POLICY)
    cid = state.cycle.id
    state, actions = decide(state, TrainingFailed(cid, "no training data", retryable=False),
                            clock.now, POLICY)
    assert kinds(actions) == ["RecordDecision"] and actions[0].outcome == "failed"
    assert "training failed: no training data" in actions[0].reasons


def test_failed_launch_counts_as_an_attempt() -> None:
    clock = Clock()
    state, _ = decide(ModelState("churn"), Trigger("manual", "go", manual=True), clock.now, POLICY)
    cid = state.cycle.id
    state, actions = decide(state, TrainingFailed(cid, "GitHub unreachable"), clock.now, POLICY)
    assert kinds(actions) == ["LaunchTraining"] and actions[0].attempt == 2
    state, actions = decide(state, TrainingFailed(cid, "GitHub unreachable"), clock.now, POLICY)
    assert kinds(actions) == ["RecordDecision"]


def test_stale_events_of_another_cycle_are_ignored() -> None:
    clock = Clock()
    state, cid = to_shadow(clock)
    assert decide(state, TrainingSucceeded("other", 9), clock.now, POLICY) == (state, ())
    assert decide(state, ShadowEvidence("other", gate("promote"), 3), clock.now, POLICY) == (
        state, ())


def _promoted(clock: Clock, baseline: float | None = 0.80) -> ModelState:
    state = ModelState("churn")
    if baseline is not None:
        state, _ = decide(state, PerformanceObserved(3, baseline), clock.now, POLICY)
    state, cid = to_shadow(clock, state)
    state, _ = decide(state, ShadowEvidence(cid, gate("promote"), 3), clock.now, POLICY)
    state, _ = finish(state, cid, "promoted", clock, 7)
    return state


def test_automatic_rollback_on_realised_performance_within_probation() -> None:
    clock = Clock()
    state = _promoted(clock)
    assert state.probation.baseline == 0.80
    same, actions = decide(state, PerformanceObserved(7, 0.79), clock.advance(hours=1), POLICY)
    assert same.override is None and actions == ()             # within the rollback margin
    state, actions = decide(state, PerformanceObserved(7, 0.70), clock.advance(hours=1), POLICY)
    assert actions == (Rollback("churn", state.override.id, 7, 3, "rollback"),)
    oid = state.override.id
    state, actions = decide(state, PromotionDone(oid, "rolled_back", 3), clock.now, POLICY)
    assert kinds(actions) == ["RecordDecision"] and actions[0].kind == "rollback"
    assert "below the old champion's 0.8000" in actions[0].reasons[0]
    state, actions = decide(state, DecisionRecorded(oid), clock.now, POLICY)
    assert state.override is None and state.probation is None
    assert kinds(actions) == ["ReloadServing", "Notify"]


def test_rollback_alert_acts_only_within_probation() -> None:
    clock = Clock()
    state = _promoted(clock)
    request = RollbackRequested("BadModel", "alertmanager", 7, 3)
    late, actions = decide(state, request, clock.now + timedelta(hours=25), POLICY)
    assert actions == () and late.override is None
    state, actions = decide(state, request, clock.advance(hours=2), POLICY)
    assert kinds(actions) == ["Rollback"]


def test_manual_rollback_and_promote_any_time() -> None:
    clock = Clock()
    state, actions = decide(ModelState("churn"), RollbackRequested(
        "bad deploy", "manual", 5, 4, actor="ana", manual=True), clock.now, POLICY)
    assert actions == (Rollback("churn", state.override.id, 5, 4, "manual_rollback"),)
    # a second request while one is pending does nothing
    assert decide(state, PromoteRequested(9, "x", 5), clock.now, POLICY)[1] == ()
    state, actions = decide(state, PromotionDone(state.override.id, "rolled_back", 4),
                            clock.now, POLICY)
    assert actions[0].actor == "ana" and actions[0].kind == "manual_rollback"
    state, _ = decide(state, DecisionRecorded(state.override.id), clock.now, POLICY)
    state, actions = decide(state, PromoteRequested(9, "hotfix", 4, actor="ana"), clock.now, POLICY)
    assert actions == (Promote("churn", state.override.id, 9, 4, kind="manual_promote"),)


def test_performance_below_threshold_triggers_a_retrain() -> None:
    policy = Policy(performance_threshold=0.75)
    state, actions = decide(ModelState("churn"), PerformanceObserved(3, 0.70), T0, policy)
    assert state.phase == "training" and state.cycle.sources == ("performance",)
    assert "below threshold 0.75" in state.cycle.reasons[0]
    calm, actions = decide(ModelState("churn"), PerformanceObserved(3, 0.80), T0, policy)
    assert calm.phase == "idle" and calm.last_realised == (3, 0.80)


def test_state_round_trips_through_json() -> None:
    clock = Clock()
    state, cid = to_shadow(clock)
    state, _ = decide(state, ShadowEvidence(cid, gate("promote"), 3), clock.now, POLICY)
    state, _ = decide(state, PromotionDone(cid, "promoted", 7), clock.now, POLICY)
    assert state_from_json(state_to_json(state)) == state
    promoted = _promoted(Clock())
    assert state_from_json(state_to_json(promoted)) == promoted


def test_all_actions_are_plain_values() -> None:
    for action in (Evaluate("m", "c", 1, T0, None), SetChallenger("m", "c", 1),
                   Reject("m", "c", 1, 2, ("r",)), RecordDecision("m", "c", "gate", "rejected",
                   1, 2, 1, (), ()), Notify("m", "t"), ReloadServing("m")):
        assert hash(action) is not None


def test_reasons_are_bounded_but_every_trigger_counts() -> None:
    from controller.machine import MAX_REASONS

    state, _ = decide(ModelState("churn"), Trigger("alertmanager", "first"), T0, POLICY)
    for i in range(MAX_REASONS + 20):
        before = state
        state, _ = decide(state, Trigger("alertmanager", f"alert {i}"), T0, POLICY)
        assert trigger_outcome(before, state) == "merged"
    assert len(state.cycle.reasons) == MAX_REASONS and state.cycle.merged == MAX_REASONS + 20


def test_a_challenger_that_reproduces_the_champion_is_no_change() -> None:
    clock = Clock()
    state, cid = to_shadow(clock)
    same = GateDecision("no_change", ("no_change: challenger scores equal the champion's on "
                                      "all 500 offline_replay pairs",), "roc_auc", 500,
                        evidence="offline_replay", champion_metric=0.7,
                        challenger_metric=0.7, difference=0.0)
    state, actions = decide(state, ShadowEvidence(cid, same, 3), clock.now, POLICY)
    assert state.phase == "deciding" and state.cycle.plan == "no_change"
    # the alias does not move: the challenger is set aside like a rejection, never promoted
    assert actions == (Reject("churn", cid, 7, 3, same.reasons, "no_change"),)
    state, actions = finish(state, cid, "no_change", clock, 3)
    assert state.phase == "cooldown" and state.last_outcome == "no_change"
    assert state.until == clock.now + POLICY.cooldown
    assert kinds(actions) == ["Notify"]          # no reload: nothing changed
    assert state.probation is None and state.chain_drawdown == 0.0
    assert "no_change" in actions[0].text
