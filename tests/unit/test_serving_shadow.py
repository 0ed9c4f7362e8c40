"""Shadow scoring never blocks and never loses a log row."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry

from serving.metrics import ServingMetrics
from serving.shadow import ShadowLogger


class SlowChallenger:
    """Stands in for a LoadedModel: scores 0.9 once released."""

    name, version = "m", 7

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def score_one(self, record: dict[str, Any]) -> float:
        self.started.set()
        self.release.wait(10)
        return 0.9

    def score_many(self, records: list[dict[str, Any]]) -> list[float]:
        return [self.score_one(r) for r in records]


def row(i: int, prediction: int = 1) -> dict[str, Any]:
    return {"request_id": f"r{i}", "prediction": prediction, "shadow_version": None,
            "shadow_score": None}


def test_full_queue_drops_the_shadow_sample_not_the_row() -> None:
    logged: list[dict[str, Any]] = []
    reg = CollectorRegistry()
    metrics = ServingMetrics(reg, "m")
    shadow = ShadowLogger(logged.append, metrics, queue_size=1).start()
    challenger = SlowChallenger()
    shadow.submit([row(0)], [{}], challenger)          # taken by the worker, which blocks
    assert challenger.started.wait(5)
    shadow.submit([row(1, 0)], [{}], challenger)       # fills the queue
    shadow.submit([row(2)], [{}], challenger)          # queue full: logged without shadow
    assert [r["request_id"] for r in logged] == ["r2"] and logged[0]["shadow_score"] is None
    shadow.submit([row(3)], [{}], None)                # no challenger: logged at once
    challenger.release.set()
    shadow.close()
    assert sorted(r["request_id"] for r in logged) == ["r0", "r1", "r2", "r3"]
    scored = {r["request_id"]: r for r in logged}
    assert scored["r0"]["shadow_score"] == 0.9 and scored["r0"]["shadow_version"] == 7
    assert reg.get_sample_value("driftloop_shadow_dropped_total", {"model": "m"}) == 1
    assert reg.get_sample_value("driftloop_shadow_scored_total", {"model": "m"}) == 2
    assert reg.get_sample_value("driftloop_shadow_agreed_total", {"model": "m"}) == 1
