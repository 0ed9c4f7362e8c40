"""The cron schedules behind scheduled retrains, and the store's lease and dedup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.schedule import CronError, last_fire, parse, validate
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.errors import UsageError

NOW = datetime(2026, 11, 22, 0, 34, 10, tzinfo=UTC)  # a Sunday


@pytest.mark.parametrize(("expr", "expected"), [
    ("@daily", datetime(2026, 11, 22, 0, 0, tzinfo=UTC)),
    ("@hourly", datetime(2026, 11, 22, 0, 0, tzinfo=UTC)),
    ("*/15 * * * *", datetime(2026, 11, 22, 0, 30, tzinfo=UTC)),
    ("30 2 * * 1", datetime(2026, 11, 16, 2, 30, tzinfo=UTC)),       # last Monday
    ("0 0 1 * *", datetime(2026, 11, 1, 0, 0, tzinfo=UTC)),
    ("0 6 * * 1-5", datetime(2026, 11, 20, 6, 0, tzinfo=UTC)),       # last weekday: Friday
    ("0 0 * * 7", datetime(2026, 11, 22, 0, 0, tzinfo=UTC)),         # 7 is Sunday too
    ("0 12 13 * 5", datetime(2026, 11, 20, 12, 0, tzinfo=UTC)),      # day 13 OR Friday
    ("0 0 29 2 *", datetime(2024, 2, 29, 0, 0, tzinfo=UTC)),         # beyond the horizon
])
def test_last_fire(expr: str, expected: datetime) -> None:
    found = last_fire(expr, NOW, horizon_days=366 * 3)
    assert found == expected


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "a b c d e", "*/0 * * * *"])
def test_bad_expressions_are_refused(expr: str) -> None:
    with pytest.raises(CronError):
        last_fire(expr, NOW)


@pytest.mark.parametrize(("expr", "expected"), [
    ("30 2 * * mon", datetime(2026, 11, 16, 2, 30, tzinfo=UTC)),
    ("0 6 * * MON-FRI", datetime(2026, 11, 20, 6, 0, tzinfo=UTC)),
    ("0 0 * * sun", datetime(2026, 11, 22, 0, 0, tzinfo=UTC)),
    ("0 0 1 jan,jul *", datetime(2026, 7, 1, 0, 0, tzinfo=UTC)),
    ("0 9 * dec fri", datetime(2025, 12, 26, 9, 0, tzinfo=UTC)),
    ("@yearly", datetime(2026, 1, 1, 0, 0, tzinfo=UTC)),
])
def test_named_days_and_months(expr: str, expected: datetime) -> None:
    assert validate(expr) == expr
    assert last_fire(expr, NOW) == expected


def test_named_fields_parse_to_the_same_sets_as_numbers() -> None:
    assert parse("0 6 * jan,dec mon-fri") == parse("0 6 * 1,12 1-5")
    assert parse("0 0 13 * 7")[4] == frozenset({0}) and parse("0 0 13 * 7")[5]


def test_a_slot_exactly_now_fires_and_an_impossible_date_never_does() -> None:
    assert last_fire("34 0 * * *", NOW) == datetime(2026, 11, 22, 0, 34, tzinfo=UTC)
    assert last_fire("0 0 30 2 *", NOW) is None
    assert last_fire("0 0 29 2 *", NOW) is None  # 2024-02-29 is beyond the default horizon


@pytest.mark.parametrize("expr", ["0 0 * * funday", "* * * *", "0 0 32 * *", "* * * * * *"])
def test_validate_names_the_expression_and_the_reason_on_one_line(expr: str) -> None:
    with pytest.raises(UsageError) as info:
        validate(expr)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("DRIFTLOOP_CONTROLLER_SCHEDULE: not a cron schedule: ")
    assert repr(expr) in message


def test_settings_cannot_be_built_with_a_bad_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_SCHEDULE", "0 3 * * someday")
    with pytest.raises(UsageError, match="'0 3 \\* \\* someday'"):
        ControllerSettings()
    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_SCHEDULE", "0 3 * * sat")
    assert ControllerSettings().controller_schedule == "0 3 * * sat"


def test_a_bad_schedule_stops_the_controller_with_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from driftloop.cli import main

    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_SCHEDULE", "61 * * * *")
    assert main(["controller", "--spec", "never-read.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: DRIFTLOOP_CONTROLLER_SCHEDULE: not a cron schedule: '61 * * * *'")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_lease_is_exclusive_until_it_expires() -> None:
    store = Store("sqlite://")
    assert store.acquire_lease("model:churn", "a", ttl=10, now=100)
    assert not store.acquire_lease("model:churn", "b", ttl=10, now=105)
    assert store.acquire_lease("model:churn", "a", ttl=10, now=105)    # renewal
    assert store.acquire_lease("model:churn", "b", ttl=10, now=116)    # expired: taken over
    store.release_lease("model:churn", "b")
    assert store.acquire_lease("model:churn", "a", ttl=10, now=117)


def test_dedup_key_is_unique_in_the_database() -> None:
    store = Store("sqlite://")
    first = store.add_trigger(model="m", source="alertmanager", action="retrain", reason="r",
                              now=NOW, dedup_key="am:f:t")
    second = store.add_trigger(model="m", source="alertmanager", action="retrain", reason="r",
                               now=NOW, dedup_key="am:f:t")
    assert first is not None and second is None
    assert len(store.pending_triggers("m")) == 1
