"""Change-aware training windows (issue 14): the spec's ``retrain`` block, where the alarms on
the champion locate the change (the verdict intake's own trigger rows), which window a cycle
gets by its triggers, and a drift-triggered cycle that waits for labels instead of training
on the old world (fakes: in-memory store, an empty prediction log, a recording launcher)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.intake import take_verdict
from controller.recent import alarm_start, change_start, choose_window
from controller.store import Store
from kernel.errors import SpecError
from kernel.spec import DatasetSpec, parse_spec
from monitoring.verdict import Verdict
from registry import ALIAS_CHAMPION
from tests.unit.controller_harness import add_version, make_world

T0 = datetime(2026, 1, 10, tzinfo=UTC)


def _verdict(version: int, start: datetime, status: str = "drift") -> Verdict:
    return Verdict(model="churn", version=version, window_start=start,
                   window_end=start + timedelta(days=1), created_at=start + timedelta(days=1),
                   rows=2000, labelled_rows=0, status=status, drift_share=0.6 if status == "drift" else 0.0,
                   drift_share_threshold=0.3, drifted_columns=["tenure_months"])


def _take(store: Store, verdict: Verdict) -> None:
    take_verdict(store, verdict.model_dump_json().encode(), verdict, models={"churn"},
                 now=verdict.window_end)


def test_the_spec_retrain_block_reads_auto_all_and_days() -> None:
    base = {"model_name": "m", "target": "y", "timestamp_column": "ts",
            "features": {"numerical": ["x"]}}
    assert parse_spec(base).retrain.window == "auto"
    assert parse_spec({**base, "retrain": {"window": "30 days"}}).retrain.window == 30.0
    assert parse_spec({**base, "retrain": {"window": "all", "refit": False}}).retrain.refit is False
    with pytest.raises(SpecError, match="retrain.window"):
        parse_spec({**base, "retrain": {"window": "soon"}})
    with pytest.raises(SpecError, match="retrain.window"):
        parse_spec({**base, "retrain": {"window": 0}})


def test_the_change_is_the_earliest_alarm_on_the_champion() -> None:
    store = Store("sqlite://")
    _take(store, _verdict(1, T0 - timedelta(days=40)))            # too old for the lookback
    _take(store, _verdict(1, T0))                                   # the change
    _take(store, _verdict(1, T0 + timedelta(days=1)))
    _take(store, _verdict(2, T0 - timedelta(days=2)))              # another version's alarm
    _take(store, _verdict(1, T0 - timedelta(days=1), status="ok"))  # no alarm: no trigger
    rows = store.triggers_of("churn")
    assert {alarm_start(t.dedup_key) for t in rows} >= {T0, T0 + timedelta(days=1)}
    found = change_start(rows, champion=1, before=T0 + timedelta(days=3),
                         lookback=timedelta(days=14))
    assert found == T0
    assert change_start(rows, champion=3, before=T0 + timedelta(days=3),
                        lookback=timedelta(days=14)) is None
    assert alarm_start("am:fingerprint:2026-01-01T00:00:00+00:00") is None


def test_the_window_follows_the_triggers_and_the_spec(churn_spec: DatasetSpec) -> None:
    now = T0 + timedelta(days=2)
    drift = choose_window(churn_spec, ("verdict",), now=now, change=T0, controller_days=3)
    assert (drift.kind, drift.since) == ("change", T0)
    assert T0.isoformat() in drift.tags()["driftloop.window_reason"]
    scheduled = choose_window(churn_spec, ("schedule",), now=now, change=T0, controller_days=3)
    assert (scheduled.kind, scheduled.since) == ("controller", now - timedelta(days=3))
    unlocated = choose_window(churn_spec, ("verdict",), now=now, change=None, controller_days=None)
    assert (unlocated.kind, unlocated.since) == ("controller", None)
    every = churn_spec.model_copy(update={"retrain": churn_spec.retrain.model_copy(
        update={"window": "all"})})
    assert choose_window(every, ("verdict",), now=now, change=T0, controller_days=3).since is None
    days = churn_spec.model_copy(update={"retrain": churn_spec.retrain.model_copy(
        update={"window": 7.0})})
    assert choose_window(days, ("labels",), now=now, change=None,
                         controller_days=3).since == now - timedelta(days=7)


def test_a_drift_cycle_waits_for_labels_since_the_change_then_fails(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    world = make_world(tmp_path, churn_spec, controller_recent_days=14)
    world.registry.set_alias("churn", ALIAS_CHAMPION, add_version(world.registry))
    clock = [T0 + timedelta(days=1)]
    world.controller.clock = lambda: clock[0]
    _take(world.store, _verdict(1, T0))
    world.controller.step("churn")
    state, _ = world.controller.load("churn")
    assert state.phase == "training" and world.launcher.requests == []  # waiting, not training
    assert state.cycle is not None
    wait = timedelta(hours=churn_spec.retrain.max_wait_hours)
    clock[0] = state.cycle.started_at + wait
    world.controller.step("churn")
    state, _ = world.controller.load("churn")
    assert state.phase == "failed" and world.launcher.requests == []
    [decision] = world.store.decisions_of("churn", limit=5)
    text = json.dumps(decision)
    assert f"< retrain.min_rows {churn_spec.retrain.min_rows}" in text
    assert "not training on the old world" in text


def test_a_scheduled_cycle_does_not_wait(tmp_path: Path, churn_spec: DatasetSpec) -> None:
    world = make_world(tmp_path, churn_spec, controller_recent_days=14)
    world.registry.set_alias("churn", ALIAS_CHAMPION, add_version(world.registry))
    world.controller.clock = lambda: T0
    start = T0 - timedelta(days=1)  # an alarm taken by an earlier cycle, not this one's
    world.store.add_trigger(model="churn", source="verdict", action="retrain", reason="drift",
                            now=T0, version=1, status="done",
                            dedup_key=f"verdict:churn:1:{start.isoformat()}:{T0.isoformat()}:drift")
    world.store.add_trigger(model="churn", source="schedule", action="retrain",
                            reason="scheduled", now=T0)
    world.controller.step("churn")
    assert len(world.launcher.requests) == 1
