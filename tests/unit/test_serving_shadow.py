"""Shadow scoring never blocks and never loses a log row."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from serving.metrics import ServingMetrics
from serving.schema import RecordSchema
from serving.shadow import ShadowLogger, rest_after


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


class NarrowChallenger:
    """A challenger trained without ``support_tickets``: its schema refuses requests carrying
    it (an unknown field), as serving would."""

    name, version = "m", 9

    def __init__(self) -> None:
        self.schema = RecordSchema(("tenure_months",), ())
        self.seen: list[dict[str, Any]] = []

    def score_one(self, record: dict[str, Any]) -> float:
        self.seen.append(record)
        return 0.8

    def score_many(self, records: list[dict[str, Any]]) -> list[float]:
        return [self.score_one(r) for r in records]


def test_requests_the_challenger_would_refuse_are_counted_not_scored() -> None:
    logged: list[dict[str, Any]] = []
    reg = CollectorRegistry()
    shadow = ShadowLogger(logged.append, ServingMetrics(reg, "m")).start(thread=False)
    challenger = NarrowChallenger()
    shadow.submit([row(0), row(1)], [{"tenure_months": 3.0, "support_tickets": 1.0},
                                     {"tenure_months": 4.0, "support_tickets": None}], challenger)
    shadow.submit([row(2)], [{"tenure_months": 5.0}], challenger)
    shadow.close()
    scores = {r["request_id"]: r["shadow_score"] for r in logged}
    assert scores == {"r0": None, "r1": None, "r2": 0.8}
    assert challenger.seen == [{"tenure_months": 5.0}]
    assert reg.get_sample_value("driftloop_shadow_refused_total", {"model": "m"}) == 2
    assert reg.get_sample_value("driftloop_shadow_scored_total", {"model": "m"}) == 1


def test_below_full_rate_requests_are_chosen_by_their_id_and_the_rest_logged_at_once() -> None:
    def shadowed(ids: list[str]) -> set[str]:
        logged: list[dict[str, Any]] = []
        shadow = ShadowLogger(logged.append, None).start(thread=False)
        shadow.rate = 0.25
        shadow.submit([{**row(0), "request_id": rid} for rid in ids],
                      [{"kind": "ok"}] * len(ids), OddChallenger())
        unsampled = {r["request_id"] for r in logged}
        shadow.close()
        assert sorted(r["request_id"] for r in logged) == sorted(ids)  # every row, once
        return set(ids) - unsampled

    ids = [f"req-{i}" for i in range(2000)]
    first = shadowed(ids)
    assert first == shadowed(list(reversed(ids)))  # by id, not by arrival or queue room
    assert 0.2 < len(first) / len(ids) < 0.3


class TickingChallenger:
    """Takes 0.1 s a row on the given clock."""

    name, version = "m", 10

    def __init__(self, now: list[float]) -> None:
        self.now = now

    def score_one(self, record: dict[str, Any]) -> float:
        self.now[0] += 0.1
        return 0.5

    def score_many(self, records: list[dict[str, Any]]) -> list[float]:
        return [self.score_one(r) for r in records]


def test_the_rate_follows_capacity_and_a_new_challenger_is_measured_afresh() -> None:
    now = [0.0]
    shadow = ShadowLogger(None, None, adjust_every=5, cpu_share=0.5,
                          clock=lambda: now[0]).start(thread=False)
    slow = TickingChallenger(now)
    for n in range(40):  # 100 requests every 10 s, then the worker's turn
        now[0] = max(now[0], 10.0 * n)
        shadow.submit([{**row(0), "request_id": f"{n}-{i}"} for i in range(100)],
                      [{"kind": "ok"}] * 100, slow)
        shadow.step()
    # half of one thread at 0.1 s a row scores 5 rows a second of the ~10 offered
    assert shadow.cost == pytest.approx(0.1)
    assert 0.3 < shadow.rate < 0.7
    shadow.submit([row(1)], [{"kind": "ok"}], TickingChallenger(now))
    now[0] += 5
    shadow.adapt()
    assert (shadow.rate, shadow.load, shadow.cost) == (1.0, None, None)


class CountingChallenger:
    """Counts its scoring calls; ``fast`` set: it has a compiled fast path."""

    name, version = "m", 11

    def __init__(self, fast: object = None) -> None:
        self.fast = fast
        self.calls: list[tuple[str, int]] = []

    def score_one(self, record: dict[str, Any]) -> float:
        self.calls.append(("one", 1))
        return 0.7

    def score_many(self, records: list[dict[str, Any]]) -> list[float]:
        self.calls.append(("many", len(records)))
        return [0.7] * len(records)


@pytest.mark.parametrize(("fast", "calls"), [(None, [("many", 3)]),
                                             (object(), [("one", 1)] * 3)])
def test_queued_requests_of_one_challenger_are_scored_in_one_turn(fast, calls) -> None:
    logged: list[dict[str, Any]] = []
    shadow = ShadowLogger(logged.append, None).start(thread=False)
    challenger = CountingChallenger(fast)
    for i in range(3):
        shadow.submit([row(i)], [{"kind": "ok"}], challenger)
    assert shadow.step() == 3
    assert challenger.calls == calls  # one vectorised call, or the fast path row by row
    assert sorted(r["request_id"] for r in logged) == ["r0", "r1", "r2"]
    assert {r["shadow_score"] for r in logged} == {0.7}


def test_the_worker_rests_so_that_it_uses_at_most_its_cpu_share() -> None:
    for spent, share in [(0.01, 0.05), (0.2, 0.5), (0.003, 0.02)]:
        rest = rest_after(spent, share, 0.0)
        assert spent / (spent + rest) == pytest.approx(share)
    assert rest_after(0.0, 0.05, 0.02) == 0.02  # an idle turn polls every interval
    with pytest.raises(ValueError, match="cpu_share"):
        ShadowLogger(None, None, cpu_share=0)
