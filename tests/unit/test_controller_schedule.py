"""The cron subset behind scheduled retrains, and the store's lease and dedup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.schedule import CronError, last_fire
from controller.store import Store

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
