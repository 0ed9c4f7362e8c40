"""The request tally: folded in bulk, the metrics read exactly as if observed one by one."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram

from serving.metrics import LATENCY_BUCKETS, SCORE_BUCKETS, ServingMetrics, observe_many


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples
            if not s.name.endswith("_created")}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert math.isclose(value, b[key], rel_tol=1e-12, abs_tol=1e-12), key


def _traffic(seed: int, n: int = 3000) -> list[tuple[str, str, int, float, int, int, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        # values on the bucket bounds too: "le" is inclusive
        duration = rng.choice([rng.expovariate(300), rng.choice(LATENCY_BUCKETS)])
        score = rng.choice([rng.random(), rng.choice(SCORE_BUCKETS), 0.0, 1.0])
        out.append((rng.choice(["/predict", "/predict/batch", "other"]),
                    rng.choice(["POST", "GET"]), rng.choice([200, 200, 422, 503]), duration,
                    rng.choice([1, 2]), int(score > 0.5), score))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_folded_tally_equals_observing_each_request(seed: int) -> None:
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    direct, tallied = ServingMetrics(direct_registry, "m"), ServingMetrics(tallied_registry, "m")
    direct.tally.buffered = False  # what multiprocess mode does: each observation at once
    for route, method, status, seconds, version, predicted, score in _traffic(seed):
        for metrics in (direct, tallied):
            metrics.tally.http(route, method, status, seconds)
            metrics.tally.prediction(version, predicted, score)
    # Nothing folded yet: collecting the registry folds first, so a scrape never lags.
    assert tallied_registry.get_sample_value("driftloop_predictions_total",
                                             {"model": "m", "version": "1",
                                              "predicted_class": "1"}) is not None
    _same(_samples(tallied_registry), _samples(direct_registry))
    tallied.tally.fold()  # idempotent: nothing left to apply
    _same(_samples(tallied_registry), _samples(direct_registry))


def test_observe_many_falls_back_to_observe_without_bucket_internals() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    observe_many(plain, [0.1, 0.2])
    assert plain.seen == [0.1, 0.2]


def test_observe_many_counts_nan_in_the_sum_only_like_observe() -> None:
    one, bulk = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", buckets=(0.5, 1.0), registry=one)
    h2 = Histogram("h", "h", buckets=(0.5, 1.0), registry=bulk)
    values = [0.2, float("nan"), 0.7, 5.0]
    for v in values:
        h1.observe(v)
    observe_many(h2, values)
    a, b = _samples(one), _samples(bulk)
    assert a.keys() == b.keys()
    for key in a:
        assert (math.isnan(a[key]) and math.isnan(b[key])) or a[key] == b[key], key


def _text_without_created(registry: CollectorRegistry) -> list[str]:
    from prometheus_client import generate_latest

    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


def test_bulk_histogram_exposes_what_prometheus_histogram_does() -> None:
    from serving.metrics import BulkHistogram

    values = [0.2, 0.5, 1.0, float("nan"), 0.7, 5.0, float("inf"), float("-inf"), 0.0, 0.5]
    one, bulk = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h_seconds", "doc", ["route"], buckets=(0.5, 1.0), registry=one)
    mine = BulkHistogram("h_seconds", "doc", ["route"], buckets=(0.5, 1.0), registry=bulk)
    for v in values:
        reference.labels("/a").observe(v)
    observe_many(mine.labels("/a"), values[:4])
    mine.labels("/a").observe_many(values[4:])
    reference.labels("/b")
    mine.labels("/b")  # a label set without values is exposed with zeros, as a child is
    assert _text_without_created(bulk) == _text_without_created(one)
    created = {s.name for family in bulk.collect() for s in family.samples}
    assert "h_seconds_created" in created


def test_multiprocess_mode_observes_on_prometheus_histograms(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from serving.metrics import BulkHistogram

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = ServingMetrics(CollectorRegistry(), "m")
    assert not metrics.tally.buffered
    assert isinstance(metrics.http_duration, Histogram) and isinstance(metrics.score, Histogram)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    single = ServingMetrics(CollectorRegistry(), "m")
    assert single.tally.buffered and isinstance(single.score, BulkHistogram)
