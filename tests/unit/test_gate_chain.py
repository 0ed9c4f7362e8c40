"""The gate inside the core: no ratchet over a chain of promotions, superiority for routine
retrains, and the evidence source kept for the whole cycle."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy.stats import norm

from controller.codec import state_from_json, state_to_json
from controller.core import decide
from controller.gate import GatePolicy, against_chain, evaluate
from controller.machine import (
    DecisionRecorded,
    Evaluate,
    GateDecision,
    ModelState,
    Policy,
    PromotionDone,
    ShadowEvidence,
    Tick,
    TrainingLaunched,
    TrainingSucceeded,
    Trigger,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = Policy(cooldown=timedelta(hours=1), evaluation_timeout=timedelta(hours=2))
MARGIN = 0.01


def _pairs(auc_a: float, auc_b: float, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Labels and two models' scores with true ROC AUCs exactly auc_a and auc_b (binormal)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    e_a = rng.normal(size=n)
    e_b = 0.97 * e_a + math.sqrt(1 - 0.97 ** 2) * rng.normal(size=n)
    mu_a, mu_b = (math.sqrt(2) * norm.ppf(v) for v in (auc_a, auc_b))
    return y, 1 / (1 + np.exp(-(mu_a * y + e_a))), 1 / (1 + np.exp(-(mu_b * y + e_b)))


def _cycle(state: ModelState, now: datetime, version: int, gate: GateDecision,
           champion: int | None, policy: Policy = POLICY, source: str = "alertmanager",
           ) -> tuple[ModelState, datetime]:
    """One whole cycle through ``decide``: trigger, train, one look, then promote or (after
    the evaluation timeout) reject, recorded; returns the state once idle again."""
    state, _ = decide(state, Trigger(source, f"cycle {version}"), now, policy)
    assert state.cycle is not None
    cid = state.cycle.id
    state, _ = decide(state, TrainingLaunched(cid, 1), now, policy)
    state, _ = decide(state, TrainingSucceeded(cid, version), now, policy)
    state, _ = decide(state, ShadowEvidence(cid, gate, champion), now, policy)
    if state.phase == "shadow":
        now += policy.evaluation_timeout
        state, _ = decide(state, Tick(), now, policy)
    assert state.phase == "deciding" and state.cycle is not None
    promoted = state.cycle.plan == "promote"
    outcome, new = ("promoted", version) if promoted else ("rejected", champion)
    state, _ = decide(state, PromotionDone(cid, outcome, new), now, policy)
    state, _ = decide(state, DecisionRecorded(cid), now, policy)
    now += policy.cooldown
    state, _ = decide(state, Tick(), now, policy)
    assert state.phase == "idle"
    return state, now


def test_a_chain_of_slightly_worse_challengers_loses_at_most_the_margin() -> None:
    """Each challenger is truly 0.6 margin worse than the one before (inside the margin, so
    each alone passes non-inferiority); the champion may not fall more than the margin."""
    policy = GatePolicy(min_pairs=200, margin=MARGIN, tuning_pairs=20_000)
    truth = {1: 0.80}
    state, now, champion = ModelState("churn", chain_anchor=1), T0, 1
    held_back = 0
    for version in range(2, 9):
        truth[version] = truth[champion] - 0.6 * MARGIN
        y, a, b = _pairs(truth[champion], truth[version], 20_000, seed=version)
        gate = evaluate(y, a, b, metric="roc_auc", policy=policy)
        assert gate.outcome == "promote", gate.reasons    # alone, each would pass
        state, now = _cycle(state, now, version, gate, champion)
        if state.last_outcome == "promoted":
            champion = version
        else:
            held_back += 1
            assert any("no ratchet" in r for r in state_reasons(state))
    assert truth[1] - truth[champion] <= MARGIN
    assert champion != 1 and held_back > 0               # some promoted, the rest held back
    assert -MARGIN <= state.chain_drawdown < 0 and state.chain_anchor == 1


def state_reasons(state: ModelState) -> tuple[str, ...]:
    return state.cycle.plan_reasons if state.cycle is not None else ()


def _gate(low: float, high: float, outcome: str = "promote") -> GateDecision:
    return GateDecision(outcome, ("numbers", f"{outcome}: ..."), "roc_auc", 1000,  # type: ignore[arg-type]
                        evidence="shadow", difference=(low + high) / 2, ci_low=low, ci_high=high,
                        margin=MARGIN)


@pytest.mark.parametrize(("drawdown", "superiority", "low", "high", "outcome", "says"), [
    (0.0, False, -0.004, 0.006, "promote", None),            # plain non-inferiority
    (-0.004, False, -0.004, 0.006, "promote", "chain: cumulative bound -0.0080"),
    (-0.007, False, -0.004, 0.006, "wait", "no ratchet"),     # -0.011 < -margin
    (-0.007, False, 0.001, 0.010, "promote", "chain: cumulative bound -0.0060"),  # a gain
    (0.0, True, -0.004, 0.006, "wait", "superiority required: CI low -0.0040 <= 0"),
    (0.0, True, 0.002, 0.012, "promote", None),
    (0.0, True, -0.008, -0.001, "reject", "cannot be better"),
])
def test_against_chain_table(drawdown: float, superiority: bool, low: float, high: float,
                             outcome: str, says: str | None) -> None:
    base = _gate(low, high, "promote" if low >= -MARGIN else "wait")
    judged = against_chain(base, drawdown=drawdown, superiority=superiority)
    assert judged.outcome == outcome, judged.reasons
    assert judged.reasons[:2] == base.reasons            # the gate's own numbers are kept
    if says is None:
        assert judged.reasons == base.reasons
    else:
        assert says in judged.reasons[-1]


@pytest.mark.parametrize(("setting", "source", "promoted"), [
    ("never", "schedule", True),
    ("scheduled", "schedule", False),
    ("scheduled", "labels", False),
    ("scheduled", "alertmanager", True),      # drift or an alert: non-inferiority is enough
    ("always", "alertmanager", False),
])
def test_superiority_setting_by_trigger(setting: str, source: str, promoted: bool) -> None:
    policy = replace(POLICY, require_superiority=setting)  # type: ignore[arg-type]
    state, _ = _cycle(ModelState("churn"), T0, 2, _gate(-0.004, 0.006), 1, policy, source)
    assert (state.last_outcome == "promoted") is promoted


def test_first_champion_and_manual_moves_start_a_new_chain() -> None:
    first = GateDecision("promote", ("no champion yet",), "roc_auc", 0)
    state, now = _cycle(ModelState("churn", chain_drawdown=-0.008), T0, 1, first, None)
    assert (state.chain_drawdown, state.chain_anchor) == (0.0, 1)
    state, now = _cycle(state, now, 2, _gate(-0.006, 0.004), 1)
    assert state.chain_drawdown == pytest.approx(-0.006) and state.chain_anchor == 1
    state, now = _cycle(state, now, 3, _gate(0.009, 0.02), 2)   # clearly better: bound back at 0
    assert (state.chain_drawdown, state.chain_anchor) == (0.0, 3)
    assert state_from_json(state_to_json(state)) == state


def test_the_evidence_source_of_the_first_look_is_kept_for_the_cycle() -> None:
    state, _ = decide(ModelState("churn"), Trigger("alertmanager", "drift"), T0, POLICY)
    assert state.cycle is not None
    cid = state.cycle.id
    state, _ = decide(state, TrainingLaunched(cid, 1), T0, POLICY)
    state, actions = decide(state, TrainingSucceeded(cid, 2), T0, POLICY)
    first = [a for a in actions if isinstance(a, Evaluate)]
    assert first and first[0].evidence is None           # the evaluator chooses at entry
    wait = GateDecision("wait", ("too few",), "roc_auc", 40, evidence="shadow")
    state, _ = decide(state, ShadowEvidence(cid, wait, 1), T0, POLICY)
    assert state.cycle is not None and state.cycle.evidence == "shadow"
    state, actions = decide(state, Tick(), T0 + timedelta(minutes=1), POLICY)
    again = [a for a in actions if isinstance(a, Evaluate)]
    assert again and again[0].evidence == "shadow"
    assert state_from_json(state_to_json(state)).cycle == state.cycle
