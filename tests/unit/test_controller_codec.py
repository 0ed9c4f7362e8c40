"""The persisted state's JSON: decoded by its schema, versioned, readable from version 1."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from controller.codec import SCHEMA, StateSchemaError, gate_from_dict, state_from_json, state_to_json
from controller.machine import Cycle, GateDecision, ModelState, Override, Probation, Result

T = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

# Captured from state_to_json of the release before schema versions (schema 1, implicit),
# for the state built by _full_state() below. Do not regenerate: it is what is on disk.
V1_FULL = (
    '{"cycle": {"attempt": 1, "challenger": 7, "champion": 6, "gate": {"broken": false, '
    '"challenger_metric": 0.83, "champion_metric": 0.81, "ci_high": 0.041, "ci_low": -0.004, '
    '"difference": 0.02, "evidence": "shadow", "extra": {"p_value": 0.03}, "margin": 0.01, '
    '"metric": "roc_auc", "min_pairs": 200, "n": 412, "outcome": "promote", "reasons": '
    '["ci low -0.004 >= -0.01"]}, "holdout_from": "2026-03-01T05:00:00+00:00", "id": '
    '"churn-c3", "launched_at": "2026-03-01T10:01:00+00:00", "manual": false, "merged": 2, '
    '"plan": "promote", "plan_reasons": ["gate passed"], "reasons": ["alertmanager: '
    'DriftHigh"], "result": {"new_champion": 7, "outcome": "promoted", "reasons": ["gate '
    'passed"]}, "shadow_since": "2026-03-01T10:20:00+00:00", "sources": ["alertmanager"], '
    '"started_at": "2026-03-01T10:00:00+00:00"}, "deferred": ["schedule: @daily"], '
    '"deferred_count": 1, "deferred_sources": ["schedule"], "last_cycle_id": "churn-c2", '
    '"last_outcome": "promoted", "last_realised": [6, 0.79], "last_trained_at": '
    '"2026-02-28T10:00:00+00:00", "model": "churn", "override": {"actor": "alice", '
    '"from_version": 7, "id": "churn-o1", "kind": "manual_rollback", "reason": "bad release", '
    '"requested_at": "2026-03-01T12:00:00+00:00", "result": {"new_champion": 6, "outcome": '
    '"rolled_back", "reasons": ["manual"]}, "to_version": 6}, "phase": "deciding", '
    '"probation": {"baseline": 0.8, "cycle_id": "churn-c2", "previous": 5, "until": '
    '"2026-03-02T10:00:00+00:00", "version": 6}, "seq": 9, "since": '
    '"2026-03-01T11:00:00+00:00", "until": "2026-03-01T17:00:00+00:00"}')
V1_IDLE = ('{"cycle": null, "deferred": [], "deferred_count": 0, "deferred_sources": [], '
           '"last_cycle_id": null, "last_outcome": null, "last_realised": null, '
           '"last_trained_at": null, "model": "churn", "override": null, "phase": "idle", '
           '"probation": null, "seq": 0, "since": null, "until": null}')


def _full_state() -> ModelState:
    gate = GateDecision("promote", ("ci low -0.004 >= -0.01",), "roc_auc", 412, evidence="shadow",
                        champion_metric=0.81, challenger_metric=0.83, difference=0.02,
                        ci_low=-0.004, ci_high=0.041, margin=0.01, min_pairs=200,
                        extra={"p_value": 0.03})
    cycle = Cycle("churn-c3", T, reasons=("alertmanager: DriftHigh",), sources=("alertmanager",),
                  attempt=1, launched_at=T + timedelta(minutes=1),
                  holdout_from=T - timedelta(hours=5), challenger=7,
                  shadow_since=T + timedelta(minutes=20), champion=6, gate=gate, plan="promote",
                  plan_reasons=("gate passed",), result=Result("promoted", 7, ("gate passed",)),
                  merged=2)
    override = Override("churn-o1", "manual_rollback", T + timedelta(hours=2), "bad release",
                        "alice", 7, 6, result=Result("rolled_back", 6, ("manual",)))
    probation = Probation("churn-c2", 6, 5, T + timedelta(hours=24), baseline=0.8)
    return ModelState("churn", phase="deciding", since=T + timedelta(hours=1),
                      until=T + timedelta(hours=7), seq=9, cycle=cycle,
                      deferred=("schedule: @daily",), deferred_sources=("schedule",),
                      deferred_count=1, last_trained_at=T - timedelta(days=1),
                      last_cycle_id="churn-c2", last_outcome="promoted", probation=probation,
                      override=override, last_realised=(6, 0.79))


def test_version_1_json_decodes_to_the_same_state() -> None:
    state = state_from_json(V1_FULL)
    assert state == _full_state()
    # by type, not by name: tuples, datetimes and nested dataclasses all revived
    assert isinstance(state.cycle.gate, GateDecision) and state.cycle.gate.extra == {"p_value": 0.03}
    assert state.last_realised == (6, 0.79) and isinstance(state.last_realised, tuple)
    assert state.probation.until == T + timedelta(hours=24)
    assert state.override.result == Result("rolled_back", 6, ("manual",))
    assert state_from_json(V1_IDLE) == ModelState("churn")


@pytest.mark.parametrize("state", [_full_state(), ModelState("churn")], ids=["full", "idle"])
def test_the_json_carries_the_schema_version_and_round_trips(state: ModelState) -> None:
    text = state_to_json(state)
    assert json.loads(text)["schema"] == SCHEMA == 2
    assert state_from_json(text) == state
    assert state_to_json(state_from_json(text)) == text


def test_a_newer_schema_is_refused_with_a_clear_error() -> None:
    data = json.loads(state_to_json(_full_state()))
    data["schema"] = SCHEMA + 1
    with pytest.raises(StateSchemaError, match="schema version 3 is newer than this release"):
        state_from_json(json.dumps(data))


@pytest.mark.parametrize("text, match", [
    ('{"model": "churn", "schema": "two"}', "not a positive integer"),
    ('{"model": "churn", "schema": 0}', "not a positive integer"),
    ('[1, 2]', "JSON object"),
    ('{"model": "churn", "phase": "sleeping", "schema": 2}', "does not match schema 2"),
    ('{"model": "churn", "since": "yesterday", "schema": 2}', "does not match schema 2"),
])
def test_a_state_that_is_not_one_is_refused(text: str, match: str) -> None:
    with pytest.raises(StateSchemaError, match=match):
        state_from_json(text)


def test_gate_from_dict() -> None:
    gate = _full_state().cycle.gate
    assert gate_from_dict(json.loads(V1_FULL)["cycle"]["gate"]) == gate
    assert gate_from_dict(None) is None
