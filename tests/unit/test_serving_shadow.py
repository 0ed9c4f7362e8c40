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


class OddChallenger:
    """Scores badly in several ways, each on its own request id."""

    name, version = "m", 8

    def score_one(self, record: dict[str, Any]) -> Any:
        if record["kind"] == "boom":
            raise RuntimeError("boom")
        return None if record["kind"] == "none" else 0.7

    def score_many(self, records: list[dict[str, Any]]) -> list[float]:
        return [0.2]  # one score for a batch of several: a broken challenger


def test_a_bad_challenger_answer_never_loses_the_rows_queued_behind_it() -> None:
    logged: list[dict[str, Any]] = []
    shadow = ShadowLogger(logged.append, None)  # no thread: close() drains the queue at once
    shadow._thread = threading.Thread()          # queue as if the worker were running
    challenger = OddChallenger()
    kinds = ["ok", "none", "boom", "ok"]
    for i, kind in enumerate(kinds):
        shadow.submit([row(i)], [{"kind": kind}], challenger)
    shadow.submit([row(10), row(11)], [{"kind": "ok"}, {"kind": "ok"}], challenger)
    shadow._thread = None
    shadow.close()
    assert sorted(r["request_id"] for r in logged) == ["r0", "r1", "r10", "r11", "r2", "r3"]
    scores = {r["request_id"]: r["shadow_score"] for r in logged}
    assert scores == {"r0": 0.7, "r1": None, "r2": None, "r3": 0.7, "r10": None, "r11": None}
    assert shadow.scored == 2
