"""Shadow pairs are a uniform sample of traffic, also when the challenger cannot keep up.

An in-process load test on a simulated clock: bursts (30 requests a second for a minute)
and quiet periods (3 a second for four minutes) for six hours, against a challenger that
takes 0.2 s a row (5 rows a second: well under the average load of 8.4). The worker is
driven as its thread would drive it, one item at a time while the challenger is free, so
nothing depends on the machine's speed. With the rate derived from capacity, every hour and
every kind of period is shadowed at the same share; the old drop-when-full behaviour
shadows the quiet periods almost fully and under half of each burst."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from serving.metrics import ServingMetrics
from serving.shadow import ShadowLogger

COST = 0.2
CYCLE, BURST = 300, 60
HOURS = 6


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class SlowChallenger:
    """Takes COST simulated seconds per row."""

    name, version = "m", 2

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def score_one(self, record: dict[str, Any]) -> float:
        self.clock.t += COST
        return 0.5

    def score_many(self, records: list[dict[str, Any]]) -> list[float]:
        return [self.score_one(r) for r in records]


def simulate(adaptive: bool) -> tuple[list[dict[str, Any]], ShadowLogger, CollectorRegistry]:
    clock = Clock()
    logged: list[dict[str, Any]] = []
    registry = CollectorRegistry()
    shadow = ShadowLogger(logged.append, ServingMetrics(registry, "m"), queue_size=2000,
                          adaptive=adaptive, cpu_share=0.5, clock=clock).start(thread=False)
    challenger = SlowChallenger(clock)
    free_at = 0.0  # when the worker is done with what it took
    for second in range(HOURS * 3600):
        per_second = 30 if second % CYCLE < BURST else 3
        clock.t = max(clock.t, float(second))
        shadow.adapt()  # the worker's turn while idle
        for k in range(per_second):
            t = second + k / per_second
            while shadow.items and free_at <= t:  # the worker catches up to t
                clock.t = free_at
                shadow.step(1)
                free_at = clock.t
            if not shadow.items:
                free_at = max(free_at, t)
            clock.t = t
            shadow.submit([{"request_id": f"r{second}-{k}", "ts": t, "prediction": 1,
                            "shadow_version": None, "shadow_score": None}], [{}], challenger)
    shadow.close()
    return logged, shadow, registry


def shares(rows: list[dict[str, Any]], key: Any) -> dict[Any, float]:
    total: collections.Counter[Any] = collections.Counter()
    paired: collections.Counter[Any] = collections.Counter()
    for r in rows:
        total[key(r["ts"])] += 1
        paired[key(r["ts"])] += r["shadow_score"] is not None
    return {k: paired[k] / total[k] for k in sorted(total)}


def hour(ts: float) -> int:
    return int(ts // 3600)


def period(ts: float) -> str:
    return "burst" if ts % CYCLE < BURST else "quiet"


@pytest.fixture(scope="module")
def adaptive() -> tuple[list[dict[str, Any]], ShadowLogger, CollectorRegistry]:
    return simulate(adaptive=True)


def test_every_row_is_logged_once(adaptive) -> None:
    logged, shadow, _ = adaptive
    assert len(logged) == len({r["request_id"] for r in logged}) == HOURS * 12 * (60 * 30 + 240 * 3)
    assert shadow.dropped == 0


def test_pairs_are_a_uniform_sample_of_traffic_per_hour_and_per_period(adaptive) -> None:
    logged, shadow, registry = adaptive
    overall = sum(r["shadow_score"] is not None for r in logged) / len(logged)
    # the challenger can score 5 rows a second on half a core (cpu_share) of 8.4 offered: about 0.3
    assert 0.2 < overall < 0.4
    per_hour = shares(logged, hour)
    assert len(per_hour) == HOURS
    assert all(abs(s - overall) < 0.1 * overall for s in per_hour.values()), per_hour
    after_warmup = [r for r in logged if r["ts"] >= 3600]
    per_period = shares(after_warmup, period)
    assert abs(per_period["burst"] - per_period["quiet"]) < 0.1 * overall, per_period
    achieved = registry.get_sample_value("driftloop_shadow_sample_rate", {"model": "m"})
    assert achieved == pytest.approx(overall, abs=0.03)
    assert registry.get_sample_value("driftloop_shadow_target_rate", {"model": "m"}) == \
        pytest.approx(overall, abs=0.03)
    assert registry.get_sample_value("driftloop_shadow_offered_total", {"model": "m"}) > 0


def test_the_old_drop_when_full_shadow_over_represents_quiet_periods() -> None:
    logged, shadow, _ = simulate(adaptive=False)
    per_period = shares(logged, period)
    assert shadow.dropped > 0
    assert per_period["quiet"] > 0.9 and per_period["burst"] < 0.5, per_period
