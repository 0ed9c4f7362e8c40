"""Backtest pieces without a replay: policy files, the replay log's time guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.adapters import (
    ClockedRegistry,
    load_policy,
    parse_duration,
    parse_period,
    policy_overrides,
)
from backtest.replay import ReplayLog, SimClock
from controller.settings import ControllerSettings
from kernel.errors import UsageError
from kernel.spec import DatasetSpec
from registry import NewVersion

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_durations() -> None:
    assert parse_duration("90s", option="x") == timedelta(seconds=90)
    assert parse_duration("6h", option="x") == timedelta(hours=6)
    assert parse_duration("1d", option="x") == timedelta(days=1)
    assert parse_duration(30, option="x") == timedelta(seconds=30)
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration("soon", option="x")


def test_periods_are_fixed_lengths_or_calendar_months() -> None:
    assert parse_period("1mo") == (timedelta(days=30), 1)
    assert parse_period(" 3mo ") == (timedelta(days=90), 3)
    assert parse_period("1w") == (timedelta(weeks=1), 0)
    assert parse_period("30m") == (timedelta(minutes=30), 0)     # minutes, not months
    with pytest.raises(UsageError, match="at least 1"):
        parse_period("0mo")
    with pytest.raises(UsageError, match="not a duration"):
        parse_period("1month")


def test_default_policy_is_the_live_default(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRIFTLOOP_CONTROLLER_MIN_PAIRS", raising=False)
    chosen = load_policy(None, home=tmp_path)
    live = ControllerSettings()
    assert chosen.settings.policy() == live.policy()
    assert chosen.settings.gate_policy() == live.gate_policy()
    assert chosen.drift_trigger and chosen.performance_trigger


def test_policy_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("cooldown: 2d\nmin_pairs: 50\ncontroller_margin: 0.02\n"
                    "drift_trigger: false\nretrain_window_days: 3\n")
    chosen = load_policy(path, home=tmp_path)
    assert chosen.settings.policy().cooldown == timedelta(days=2)
    assert chosen.settings.gate_policy().min_pairs == 50
    assert chosen.settings.gate_policy().margin == 0.02
    assert chosen.settings.controller_retrain_window_days == 3
    assert chosen.drift_trigger is False and chosen.performance_trigger is True
    assert chosen.describe()["controller_min_pairs"] == 50


@pytest.mark.parametrize("text, message", [
    ("colldown: 1d\n", "unknown policy key 'colldown'"),
    ("controller_token: x\n", "wiring, not policy"),
    ("drift_trigger: maybe\n", "true or false"),
    ("- 1\n", "mapping"),
])
def test_bad_policy_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_policy(path, home=tmp_path)


def test_overrides_without_a_file() -> None:
    overrides, switches = policy_overrides({"margin": 0.05, "performance_trigger": False})
    assert overrides == {"controller_margin": 0.05}
    assert switches == {"drift_trigger": True, "performance_trigger": False}


def _log(clock: SimClock) -> ReplayLog:
    spec = DatasetSpec(model_name="m", target="y", timestamp_column="t", id_column="id",
                       features={"numerical": ["x"]})
    ts = pd.Series([T0 + timedelta(hours=h) for h in range(10)])
    rows = pd.DataFrame({"t": ts, "x": np.arange(10.0)})
    label_at = ts + pd.Timedelta(hours=5)
    label_at.iloc[3] = pd.Timestamp(T0 + timedelta(days=365))   # a label from the far future
    return ReplayLog(spec, rows, pd.Series([1, 0] * 5), label_at,
                     pd.Series([f"r{i}" for i in range(10)]), np.array([1, 0] * 5), clock)


def test_replay_log_shows_only_what_exists_at_the_clock() -> None:
    clock = SimClock(T0)
    log = _log(clock)
    scores = np.linspace(0.1, 0.9, 10)
    clock.advance(T0 + timedelta(hours=6))
    log.serve(clock(), 1, scores)
    far = T0 + timedelta(days=400)
    frame = log.window("m", T0, far, labels_as_of=far)  # asking for the future is capped
    assert len(frame) == 6                               # rows served by 6h: hours 0..5
    assert frame["label"].notna().sum() == 2             # labels of hours 0 and 1 (arrive 5h, 6h)
    assert (frame["label_received_at"].dropna() <= pd.Timestamp(clock())).all()
    assert log.window("m", T0, far, labels_as_of=T0 + timedelta(hours=5))["label"].notna().sum() == 1
    clock.advance(T0 + timedelta(days=2))
    log.serve(clock(), 1, scores)
    frame = log.window("m", T0, far)
    assert len(frame) == 10 and frame["label"].notna().sum() == 9  # row 3's label not yet
    assert frame.loc[3, "label"] is None
    assert all(r.newest_label is None or r.newest_label <= r.now for r in log.audit)
    assert log.labels(as_of=far)["request_id"].tolist() == [
        f"r{i}" for i in range(10) if i != 3]


def test_clock_never_goes_back() -> None:
    clock = SimClock(T0)
    clock.advance(T0 + timedelta(hours=1))
    with pytest.raises(ValueError):
        clock.advance(T0)


def test_the_replay_log_counts_fresh_labels_as_the_window_would() -> None:
    """``count_labels`` (the labelled-rows trigger's fast path) equals counting the window's
    labels received since a time, at every clock and cut, and never sees the future."""
    clock = SimClock(T0)
    log = _log(clock)
    log.serve(T0 + timedelta(hours=10), 1, np.linspace(0.1, 0.9, 10))
    for hours in range(0, 30, 3):
        clock.advance(T0 + timedelta(hours=hours))
        now = clock()
        for received in range(0, hours + 1, 2):
            since = T0 + timedelta(hours=received)
            rows = log.window("m", T0, now, labels_as_of=now)
            expected = int((rows["label"].notna() & (rows["label_received_at"] >= since)).sum())
            assert log.count_labels("m", T0, now, received_since=since, as_of=now) == expected
    assert all(r.newest_label is None or r.newest_label <= r.now for r in log.audit)


def test_a_retrain_takes_simulated_time_its_version_is_hidden_until_then() -> None:
    clock = SimClock(T0)
    registry = ClockedRegistry(clock)
    empty = pd.DataFrame()
    info = registry.register(NewVersion("m", model=None, spec_yaml="", input_example=empty,
                                        reference=empty, validation=empty, metrics={},
                                        params={}, tags={"driftloop.cycle_id": "c1"}))
    done = T0 + timedelta(seconds=90)
    registry.ready_at("m", info.version, done)
    assert registry.find_versions("m", {"driftloop.cycle_id": "c1"}) == []
    clock.advance(done)
    [found] = registry.find_versions("m", {"driftloop.cycle_id": "c1"})
    assert found.version == info.version and found.created_at == done


def test_a_multiclass_history_names_a_label_that_is_no_class(tmp_path: Path) -> None:
    """A multi-class spec replays (tests/unit/test_backtest_classes.py); a label outside its
    classes is refused as training refuses it, naming the value."""
    from backtest.engine import load_history
    from kernel.errors import DataError

    spec = DatasetSpec(model_name="tickets", target="label", timestamp_column="ts",
                       classes=["billing", "network"], features={"text": ["body"]})
    path = tmp_path / "h.csv"
    pd.DataFrame({"ts": ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"],
                  "body": ["wifi down", "refund"], "label": ["network", "printer"]}
                 ).to_csv(path, index=False)
    with pytest.raises(DataError, match="'printer' is not one of the spec's labels"):
        load_history(spec, [path], None, timedelta(days=1))
    path.write_text(path.read_text().replace("printer", "billing"))
    history = load_history(spec, [path], None, timedelta(days=1))
    assert history.classes == ("billing", "network") and history.y.tolist() == [1, 0]
