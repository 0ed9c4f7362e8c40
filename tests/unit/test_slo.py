"""Model-performance SLOs (controller/slo.py): the error budget by hand, the evaluation of a
window (realised against scikit-learn, lower-is-better, too few labels, the CBPE estimate
marked as such), an exhausted budget asking exactly once, and the history across a restart."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from controller.metrics import ControllerMetrics
from controller.slo import SloMonitor, budget_of, judge, objective_met
from controller.store import Store
from kernel.calibration import fit_calibration
from kernel.spec import DatasetSpec, parse_spec
from monitoring.check import Reference
from registry import ALIAS_CHAMPION, NewVersion
from registry.memory import InMemoryRegistry

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _spec(*slos: dict[str, Any], metric: str = "roc_auc") -> DatasetSpec:
    return parse_spec({"model_name": "churn", "target": "y", "timestamp_column": "ts",
                       "features": {"numerical": ["a"]}, "metric": metric,
                       "drift": {"min_rows": 100, "min_labelled_rows": 200},
                       "slo": list(slos)})


def _window(rng: np.random.Generator, n: int, *, labelled: int, scores: np.ndarray | None = None,
            signal: float = 1.0) -> pd.DataFrame:
    """Scored rows, the first ``labelled`` with a label (as the log stores it: text)."""
    s = rng.uniform(0, 1, n) if scores is None else scores
    y = (rng.random(n) < (signal * s + (1 - signal) * 0.5)).astype(int)
    label = pd.Series([str(v) for v in y], dtype=object).where(np.arange(n) < labelled)
    return pd.DataFrame({"ts": pd.date_range(T0, periods=n, freq="min"), "score": s,
                         "label": label, "version": 1})


# -- the budget, by hand ----------------------------------------------------------------------

def test_budget_counts_bad_time_against_the_error_budget_by_hand() -> None:
    step, hold = timedelta(minutes=5), timedelta(minutes=10)
    now = T0 + timedelta(days=40)
    start = now - timedelta(days=30)
    evaluations = [(start - timedelta(hours=1), "bad")]          # reaches 10 min past nothing
    evaluations += [(start + i * step, "good") for i in range(12)]          # 1 h good
    evaluations += [(start + timedelta(hours=1) + i * step, "bad") for i in range(12)]  # 1 h bad
    evaluations += [(start + timedelta(hours=2) + i * step, "unknown") for i in range(6)]
    # one bad look, then the controller is down for a day: it counts 10 min (hold), not a day
    evaluations += [(start + timedelta(days=1), "bad")]
    evaluations += [(now - timedelta(minutes=3), "good")]        # counts until now: 3 min
    budget = budget_of(evaluations, now=now, period=timedelta(days=30), budget=0.995, hold=hold)
    assert budget.good_seconds == 3600 + 180
    assert budget.bad_seconds == 3600 + 600
    # the error budget: (1 - 0.995) x 30 days = 12,960 s (3.6 h)
    assert budget.allowed_seconds == pytest.approx(12_960)
    assert budget.consumed == pytest.approx(4200 / 12_960)
    assert budget.remaining == pytest.approx(1 - 4200 / 12_960)          # 0.6759...
    assert budget.bad_share == pytest.approx(4200 / (4200 + 3780))
    assert not budget.exhausted
    # 3.6 h of bad time spends it exactly: remaining 0, exhausted
    spent = budget_of([(start, "bad")], now=start + timedelta(hours=3.6),
                      period=timedelta(days=30), budget=0.995, hold=timedelta(hours=4))
    assert spent.remaining == pytest.approx(0) and spent.exhausted
    empty = budget_of([], now=now, period=timedelta(days=30), budget=0.995, hold=hold)
    assert empty.remaining == 1 and empty.bad_share is None


def test_objective_direction() -> None:
    assert objective_met(0.92, 0.91, lower_is_better=False)
    assert not objective_met(0.90, 0.91, lower_is_better=False)
    assert objective_met(0.40, 0.45, lower_is_better=True)
    assert not objective_met(0.50, 0.45, lower_is_better=True)


# -- judging a window ---------------------------------------------------------------------

def test_realised_auc_against_sklearn_meets_or_misses_the_objective() -> None:
    rng = np.random.default_rng(1)
    window = _window(rng, 600, labelled=400)
    labelled = window[window["label"].notna()]
    expected = roc_auc_score(labelled["label"].astype(int), labelled["score"])
    for objective, status in ((expected - 0.01, "good"), (expected + 0.01, "bad")):
        spec = _spec({"objective": objective})
        evaluation = judge(spec.slo[0], spec, window)
        assert evaluation.status == status and evaluation.source == "realised"
        assert evaluation.value == pytest.approx(expected) and evaluation.rows == 400


def test_a_lower_is_better_metric_meets_its_objective_from_below() -> None:
    rng = np.random.default_rng(2)
    window = _window(rng, 500, labelled=500)
    expected = log_loss(window["label"].astype(int), window["score"])
    spec = _spec({"metric": "log_loss", "objective": expected + 0.01},
                 {"metric": "log_loss", "objective": expected - 0.01, "name": "tight"})
    loose, tight = (judge(s, spec, window) for s in spec.slo)
    assert loose.value == pytest.approx(expected) and tight.value == pytest.approx(expected)
    assert loose.status == "good" and tight.status == "bad"


def test_too_few_labels_judge_nothing_unless_estimated() -> None:
    rng = np.random.default_rng(3)
    window = _window(rng, 1000, labelled=150)        # below drift.min_labelled_rows 200
    spec = _spec({"objective": 0.6})
    evaluation = judge(spec.slo[0], spec, window)
    assert evaluation.status == "unknown" and evaluation.source is None
    assert evaluation.value is None and evaluation.rows == 150
    assert "150 labelled rows < drift.min_labelled_rows 200" in evaluation.note
    # estimated: true but no reference (no calibration to estimate from): still unknown
    spec = _spec({"objective": 0.6, "estimated": True})
    assert judge(spec.slo[0], spec, window, reference=lambda: None).status == "unknown"


def _calibrated_reference(spec: DatasetSpec, rng: np.random.Generator) -> Reference:
    s = rng.uniform(0, 1, 5000)           # calibrated by construction: P(y = 1 | s) = s
    y = (rng.random(s.size) < s).astype(int)
    return Reference(spec, pd.DataFrame({"a": rng.normal(0, 1, 3000)}), s,
                     {"accuracy": float(np.mean((s >= 0.5) == (y == 1)))},
                     fit_calibration(y, s, metrics=["accuracy"]))


def test_the_label_free_estimate_is_used_and_marked_when_labels_are_too_few() -> None:
    rng = np.random.default_rng(4)
    spec = _spec({"objective": 0.7, "estimated": True}, metric="accuracy")
    reference = _calibrated_reference(spec, rng)
    # calibrated scores uniform on [0, 1]: expected accuracy E[max(s, 1 - s)] = 0.75
    sure = judge(spec.slo[0], spec, _window(rng, 3000, labelled=50), reference=lambda: reference)
    assert sure.source == "estimated" and sure.status == "good"
    assert sure.value == pytest.approx(0.75, abs=0.03) and sure.rows == 3000
    assert "estimated accuracy" in sure.note and "CBPE" in sure.note
    # scores near 0.5 (uniform on [0.35, 0.65]): E[max(s, 1 - s)] = 0.575 < 0.7
    unsure = judge(spec.slo[0], spec, _window(rng, 3000, labelled=50,
                                              scores=rng.uniform(0.35, 0.65, 3000)),
                   reference=lambda: reference)
    assert unsure.source == "estimated" and unsure.status == "bad"
    assert unsure.value == pytest.approx(0.575, abs=0.03)
    # enough labels: realised wins, the estimate is not asked for
    window = _window(rng, 3000, labelled=2000)
    labelled = window[window["label"].notna()]
    realised = judge(spec.slo[0], spec, window, reference=lambda: pytest.fail("asked"))
    assert realised.source == "realised"
    assert realised.value == pytest.approx(float(np.mean(
        (labelled["score"] >= 0.5) == (labelled["label"].astype(int) == 1))))


# -- the monitor: store, metrics, exhaustion ------------------------------------------------

class FixedReader:
    """The prediction log's reader: the same window whatever is asked (calls recorded)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.calls: list[tuple[datetime, datetime, int | None]] = []

    def window(self, model: str, since: datetime, until: datetime, *, version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame:
        self.calls.append((since, until, version))
        return self.frame


def _registry() -> InMemoryRegistry:
    registry = InMemoryRegistry()
    empty = pd.DataFrame()
    version = registry.register(NewVersion("churn", model=None, spec_yaml="", input_example=empty,
                                           reference=empty, validation=empty, metrics={},
                                           params={}, tags={})).version
    registry.set_alias("churn", ALIAS_CHAMPION, version)
    return registry


def _monitor(store: Store, reader: FixedReader, registry: InMemoryRegistry,
             ) -> tuple[SloMonitor, ControllerMetrics]:
    metrics = ControllerMetrics.create()
    return SloMonitor(store=store, registry=registry, reader=reader, metrics=metrics,
                      every_seconds=300), metrics


def _sample(metrics: ControllerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"model": "churn", "slo": "auc", **labels})


def test_an_exhausted_budget_asks_for_one_retrain_and_survives_a_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frame = _window(rng, 400, labelled=400, signal=0.0)         # labels ignore the scores
    labelled = frame[frame["label"].notna()]
    auc = roc_auc_score(labelled["label"].astype(int), labelled["score"])
    assert auc < 0.6
    # a 1-day period at 99%: an error budget of 864 s; a look every 300 s (hold 600 s)
    spec = _spec({"name": "auc", "objective": 0.91, "window_days": 7, "budget": 0.99,
                  "period_days": 1})
    url = f"sqlite:///{tmp_path / 'controller.db'}"
    store, reader, registry = Store(url), FixedReader(frame), _registry()
    monitor, metrics = _monitor(store, reader, registry)
    expected_remaining = {0: 1.0, 300: 1 - 300 / 864, 600: 1 - 600 / 864, 900: 1 - 900 / 864}
    for seconds, remaining in expected_remaining.items():
        now = T0 + timedelta(seconds=seconds)
        assert monitor.check("churn", spec, now) == 0
        assert monitor.check("churn", spec, now + timedelta(seconds=10)) == 0   # not due
        assert _sample(metrics, "driftloop_slo_error_budget_remaining") == pytest.approx(
            remaining)
    assert len(reader.calls) == 4                                # throttled: 4 looks
    since, until, version = reader.calls[-1]
    assert until - since == timedelta(days=7) and version == 1   # the champion's 7-day window
    assert _sample(metrics, "driftloop_slo_objective_met") == 0
    assert _sample(metrics, "driftloop_slo_metric_value", source="realised") == pytest.approx(auc)
    assert _sample(metrics, "driftloop_slo_metric_value", source="estimated") is None
    assert _sample(metrics, "driftloop_slo_objective") == 0.91
    assert _sample(metrics, "driftloop_slo_budget") == 0.99
    assert _sample(metrics, "driftloop_slo_info", metric="roc_auc", fast_burn="page",
                   slow_burn="ticket", on_exhausted="retrain") == 1
    # exhausted at 900 s: exactly one retrain trigger of source slo
    triggers = store.triggers_of("churn")
    assert [(t.source, t.action, t.status) for t in triggers] == [("slo", "retrain", "pending")]
    assert "SLO auc: error budget exhausted" in triggers[0].reason
    for seconds in (1200, 1500, 1800):                           # still exhausted: no more
        monitor.check("churn", spec, T0 + timedelta(seconds=seconds))
    assert len(store.triggers_of("churn")) == 1
    assert _sample(metrics, "driftloop_slo_error_budget_remaining") == pytest.approx(
        1 - 1800 / 864)                                          # overspent: below 0
    store.close()

    # a restart: the history is in the store; the first pass exports it without a new look
    store = Store(url)
    reader = FixedReader(frame)
    monitor, metrics = _monitor(store, reader, registry)
    monitor.check("churn", spec, T0 + timedelta(seconds=1900))
    assert reader.calls == []                                    # not due (last at 1800 s)
    assert _sample(metrics, "driftloop_slo_error_budget_remaining") == pytest.approx(
        1 - 1900 / 864)                                          # the last bad look holds on
    assert _sample(metrics, "driftloop_slo_objective_met") == 0
    monitor.check("churn", spec, T0 + timedelta(seconds=2100))
    assert len(reader.calls) == 1
    assert len(store.triggers_of("churn")) == 1                  # the same exhaustion: once
    # a period after the first exhaustion, a budget still exhausted asks again, once
    later = T0 + timedelta(seconds=900) + timedelta(days=1)
    for step in range(0, 5):
        monitor.check("churn", spec, later - timedelta(seconds=1200) + step * timedelta(
            seconds=300))
    assert [t.source for t in store.triggers_of("churn")] == ["slo", "slo"]
    store.close()


@pytest.mark.parametrize("action", ["ticket", "none"])
def test_a_ticket_or_nothing_when_the_spec_says_so(action: str) -> None:
    rng = np.random.default_rng(6)
    frame = _window(rng, 300, labelled=300, signal=0.0)
    spec = _spec({"name": "auc", "objective": 0.95, "budget": 0.99, "period_days": 1,
                  "on_exhausted": action})
    store = Store("sqlite://")
    monitor, _ = _monitor(store, FixedReader(frame), _registry())
    for seconds in range(0, 1500, 300):
        monitor.check("churn", spec, T0 + timedelta(seconds=seconds))
    found = [(t.source, t.action, t.status) for t in store.triggers_of("churn")]
    assert found == ([("slo", "ticket", "ignored")] if action == "ticket" else [])
    assert store.last_slo_exhaustion("churn", "auc") == T0 + timedelta(seconds=900)


def test_unknown_looks_spend_nothing_and_export_no_objective_met() -> None:
    rng = np.random.default_rng(7)
    spec = _spec({"name": "auc", "objective": 0.99, "budget": 0.99, "period_days": 1})
    store = Store("sqlite://")
    monitor, metrics = _monitor(store, FixedReader(_window(rng, 300, labelled=20)), _registry())
    for seconds in range(0, 3000, 300):
        monitor.check("churn", spec, T0 + timedelta(seconds=seconds))
    assert _sample(metrics, "driftloop_slo_objective_met") is None
    assert _sample(metrics, "driftloop_slo_error_budget_remaining") == 1.0
    assert store.triggers_of("churn") == []
    rows = store.slo_evaluations_of("churn", "auc")
    assert len(rows) == 10 and {r.status for r in rows} == {"unknown"}


def test_the_reconcile_pass_evaluates_slos_and_an_exhausted_budget_starts_a_retrain(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    from controller.machine import SOURCES
    from kernel.spec import SloSettings
    from tests.unit.controller_harness import add_version, make_world

    assert "slo" in SOURCES
    world = make_world(tmp_path, churn_spec)
    spec = world.controller.models["churn"].spec.model_copy(update={"slo": [SloSettings(
        name="auc", objective=0.91, budget=0.99, period_days=1)]})
    world.controller.models["churn"] = replace(world.controller.models["churn"], spec=spec)
    world.registry.set_alias("churn", ALIAS_CHAMPION, add_version(world.registry))
    rng = np.random.default_rng(8)
    world.controller.slo.reader = FixedReader(_window(rng, 300, labelled=300, signal=0.0))
    clock = [T0]
    world.controller.clock = lambda: clock[0]
    for seconds in (0, 300, 600):
        clock[0] = T0 + timedelta(seconds=seconds)
        world.controller.reconcile_once()
        assert world.controller.load("churn")[0].phase == "idle"
    assert world.metrics.registry.get_sample_value(
        "driftloop_slo_error_budget_remaining", {"model": "churn", "slo": "auc"}
    ) == pytest.approx(1 - 600 / 864)
    clock[0] = T0 + timedelta(seconds=900)                 # 900 s bad > 864 s of budget
    world.controller.reconcile_once()
    state = world.controller.load("churn")[0]
    assert state.phase == "training" and state.cycle is not None
    assert state.cycle.sources == ("slo",)
    assert [r.reason for r in world.launcher.requests] == ["slo"]
    taken = world.store.triggers_of("churn")
    assert [(t.source, t.status, t.outcome) for t in taken] == [("slo", "done", "started")]
    assert world.metrics.registry.get_sample_value(
        "driftloop_controller_triggers_total", {"source": "slo", "outcome": "started"}) == 1


def test_an_estimated_evaluation_is_exported_and_stored_as_estimated() -> None:
    rng = np.random.default_rng(9)
    spec = _spec({"name": "auc", "metric": "accuracy", "objective": 0.7, "estimated": True},
                 metric="accuracy")
    reference = _calibrated_reference(spec, rng)
    asked: list[tuple[str, int]] = []

    def reference_of(model: str, version: int) -> Reference:
        asked.append((model, version))
        return reference

    store = Store("sqlite://")
    metrics = ControllerMetrics.create()
    monitor = SloMonitor(store=store, registry=_registry(), metrics=metrics, every_seconds=300,
                         reader=FixedReader(_window(rng, 3000, labelled=10)),
                         reference_of=reference_of)
    for seconds in (0, 300):
        monitor.check("churn", spec, T0 + timedelta(seconds=seconds))
    assert asked == [("churn", 1)]                                # one reference per version
    value = _sample(metrics, "driftloop_slo_metric_value", source="estimated")
    assert value == pytest.approx(0.75, abs=0.03)                 # E[max(s, 1 - s)]
    assert _sample(metrics, "driftloop_slo_metric_value", source="realised") is None
    assert _sample(metrics, "driftloop_slo_objective_met") == 1
    rows = store.slo_evaluations_of("churn", "auc")
    assert [(r.status, r.source) for r in rows] == [("good", "estimated")] * 2
