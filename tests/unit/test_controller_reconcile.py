"""The reconcile shell's own rules with hand-written fakes and a fake clock: retrain data
windows and their holdout cut, and throttles that run on the controller's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controller.core import decide
from controller.launcher import LaunchRequest, LaunchStatus
from controller.machine import GateDecision, Policy, ShadowEvidence, Tick
from controller.metrics import ControllerMetrics
from controller.recent import write_retrain_rows
from controller.reconcile import Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.spec import DatasetSpec
from registry import TAG_PREFIX, NewVersion
from registry.memory import InMemoryRegistry

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


class LogReader:
    """The prediction log's reader: labelled predictions, one every ``step`` before ``until``."""

    def __init__(self, spec: DatasetSpec, *, start: datetime, until: datetime,
                 step: timedelta) -> None:
        ts = pd.date_range(start, until, freq=step, inclusive="left")
        rng = np.random.default_rng(0)
        self.frame = pd.DataFrame({"ts": ts, "request_id": [f"r{i}" for i in range(len(ts))],
                                   "label": rng.integers(0, 2, len(ts)).astype(str),
                                   "label_received_at": ts + pd.Timedelta(hours=1)})
        for col in spec.features.numerical:
            self.frame[col] = rng.normal(size=len(ts))
        for col in spec.features.categorical:
            self.frame[col] = "a"
        self.calls: list[tuple[datetime, datetime]] = []

    def window(self, model: str, since: datetime, until: datetime, version: int | None = None,
               labels_as_of: datetime | None = None) -> pd.DataFrame:
        self.calls.append((since, until))
        ts = self.frame["ts"]
        return self.frame[(ts >= pd.Timestamp(since)) & (ts < pd.Timestamp(until))]


def test_holdout_cut_falls_inside_the_training_window(churn_spec: DatasetSpec,
                                                      tmp_path: Path) -> None:
    # 14 days of labelled rows, one an hour; a 2-day training window
    reader = LogReader(churn_spec, start=NOW - timedelta(days=14), until=NOW,
                       step=timedelta(minutes=10))
    since = NOW - timedelta(days=2)
    data = write_retrain_rows(reader, churn_spec, now=NOW, days=14, holdout_fraction=0.3,
                              since=since, dest=tmp_path / "recent.parquet")
    assert data.note is None and data.holdout_from is not None
    assert since < data.holdout_from < NOW
    # 30 % of the window's 288 rows are held out, the rest is training data in the window
    written = pd.read_parquet(data.path)
    assert data.rows == len(written) == int(288 * 0.7)
    assert written[churn_spec.timestamp_column].min() >= pd.Timestamp(since)
    assert written[churn_spec.timestamp_column].max() < pd.Timestamp(data.holdout_from)


def test_too_few_rows_in_the_window_means_no_holdout_and_says_so(churn_spec: DatasetSpec,
                                                                 tmp_path: Path) -> None:
    reader = LogReader(churn_spec, start=NOW - timedelta(days=14), until=NOW,
                       step=timedelta(hours=1))
    since = NOW - timedelta(days=2)                       # 48 rows: too few to hold 30 % out
    data = write_retrain_rows(reader, churn_spec, now=NOW, days=14, holdout_fraction=0.3,
                              since=since, dest=tmp_path / "recent.parquet")
    assert data.holdout_from is None and data.rows == 48
    assert data.note is not None and "no holdout" in data.note and "48" in data.note
    # without a window the history carries the retrain: the holdout stays
    whole = write_retrain_rows(reader, churn_spec, now=NOW, days=2, holdout_fraction=0.3,
                               dest=tmp_path / "all.parquet")
    assert whole.holdout_from is not None and whole.rows == int(48 * 0.7) and whole.note is None


class TaggingLauncher:
    """Training that registers a version tagged with the cycle id at once."""

    def __init__(self, registry: InMemoryRegistry) -> None:
        self.registry = registry
        self.requests: list[LaunchRequest] = []

    def launch(self, request: LaunchRequest) -> str:
        self.requests.append(request)
        empty = pd.DataFrame()
        self.registry.register(NewVersion(
            request.model, None, "", empty, empty, empty, {}, {},
            {TAG_PREFIX + "cycle_id": request.cycle_id}))
        return "registered"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("exited", 0)


class CountingEvaluator:
    def __init__(self) -> None:
        self.calls: list[datetime] = []

    def evaluate(self, spec: DatasetSpec, challenger: int, *, shadow_since: datetime,
                 holdout_from: datetime | None, now: datetime,
                 evidence: str | None = None) -> tuple[GateDecision, int | None]:
        self.calls.append(now)
        return GateDecision("wait", ("too few pairs",), spec.metric, 3), 1


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def shell(tmp_path: Path, churn_spec: DatasetSpec) -> dict:
    registry = InMemoryRegistry()
    empty = pd.DataFrame()
    champion = registry.register(NewVersion("churn", None, "", empty, empty, empty, {}, {}, {}))
    registry.set_alias("churn", "champion", champion.version)
    spec = churn_spec.model_copy(update={"model_name": "churn", "history": [], "source": None})
    settings = ControllerSettings(home=tmp_path / "home", controller_recent_days=14,
                                  controller_evaluate_every_seconds=60,
                                  controller_retrain_labelled_rows=1,
                                  controller_labels_check_seconds=300)
    clock = Clock(NOW)
    reader = LogReader(churn_spec, start=NOW - timedelta(days=3), until=NOW,
                       step=timedelta(minutes=10))
    store = Store("sqlite://")
    evaluator = CountingEvaluator()
    controller = Controller(settings, store=store, registry=registry,
                            launcher=TaggingLauncher(registry), reader=reader,  # type: ignore[arg-type]
                            evaluator=evaluator,  # type: ignore[arg-type]
                            models={"churn": Managed(spec, tmp_path / "spec.yaml")},
                            metrics=ControllerMetrics.create(), clock=clock)
    yield {"c": controller, "clock": clock, "evaluator": evaluator, "reader": reader,
           "store": store}
    store.close()


def test_gate_throttle_runs_on_the_controllers_clock(shell: dict) -> None:
    c, clock, evaluator = shell["c"], shell["clock"], shell["evaluator"]
    shell["store"].add_trigger(model="churn", source="manual", action="retrain", reason="go",
                               now=clock())
    state = c.step("churn")                       # launch, trained, challenger, first evaluation
    assert state.phase == "shadow" and evaluator.calls == [NOW]
    clock.now += timedelta(seconds=30)
    c.step("churn")                               # within evaluate_every: not evaluated again
    assert len(evaluator.calls) == 1
    clock.now += timedelta(seconds=31)            # 61 s of the controller's time passed
    c.step("churn")
    assert evaluator.calls == [NOW, NOW + timedelta(seconds=61)]
    clock.now -= timedelta(hours=1)               # the wall clock stepped back: not stalled
    c.step("churn")
    assert len(evaluator.calls) == 3


def test_labels_check_throttle_runs_on_the_controllers_clock(shell: dict) -> None:
    c, clock, reader = shell["c"], shell["clock"], shell["reader"]
    c.step("churn")                               # checks the labels once (and triggers)
    checks = len(reader.calls)
    assert checks >= 1
    clock.now += timedelta(seconds=100)
    c.step("churn")
    assert len(reader.calls) == checks            # not due on the controller's clock
    clock.now += timedelta(seconds=201)
    c.step("churn")
    assert len(reader.calls) > checks


def _gate(outcome: str, n: int) -> GateDecision:
    return GateDecision(outcome, (f"{outcome} on n={n}",), "roc_auc", n, evidence="shadow",
                        champion_metric=0.7, challenger_metric=0.72, difference=0.02,
                        ci_low=0.005, ci_high=0.035, margin=0.01)


def test_default_evaluation_timeout_outlasts_a_day_of_label_delay(tmp_path: Path) -> None:
    """Labels arrive a day after the predictions: the shadow pairs of the first day get
    labels from +24 h on and reach min_pairs a few hours later; the default timeout must
    not reject the challenger before that."""
    from controller.machine import ModelState, TrainingLaunched, TrainingSucceeded, Trigger

    policy = ControllerSettings(home=tmp_path).policy()
    assert policy.evaluation_timeout == Policy().evaluation_timeout
    now = NOW
    state, _ = decide(ModelState("churn"), Trigger("manual", "go", manual=True), now, policy)
    cid = state.cycle.id
    state, _ = decide(state, TrainingLaunched(cid, 1), now, policy)
    state, _ = decide(state, TrainingSucceeded(cid, 2), now, policy)
    assert state.phase == "shadow"
    for hour in range(1, 31):                     # no labelled pairs for a day, then few
        now = NOW + timedelta(hours=hour)
        n = 0 if hour <= 24 else (hour - 24) * 30
        state, _ = decide(state, ShadowEvidence(cid, _gate("wait", n), 1), now, policy)
        state, _ = decide(state, Tick(), now, policy)
        assert state.phase == "shadow", f"gave up after {hour} h"
    state, actions = decide(state, ShadowEvidence(cid, _gate("promote", 240), 1), now, policy)
    assert state.phase == "deciding" and type(actions[0]).__name__ == "Promote"


class BrokenEvaluator:
    """The registry answers one model's evaluation with a permanent error."""

    def __init__(self, broken: str) -> None:
        self.broken = broken
        self.calls: list[str] = []

    def evaluate(self, spec: DatasetSpec, challenger: int, *, shadow_since: datetime,
                 holdout_from: datetime | None, now: datetime,
                 evidence: str | None = None) -> tuple[GateDecision, int | None]:
        from registry.port import RegistryError

        self.calls.append(spec.model_name)
        if spec.model_name == self.broken:
            raise RegistryError("INVALID_PARAMETER_VALUE: a permanent refusal")
        return GateDecision("wait", ("too few pairs",), spec.metric, 3), 1


def test_a_permanent_error_in_one_model_fails_its_cycle_and_the_others_go_on(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    registry = InMemoryRegistry()
    empty = pd.DataFrame()
    models = {}
    for name in ("alpha", "beta"):
        first = registry.register(NewVersion(name, None, "", empty, empty, empty, {}, {}, {}))
        registry.set_alias(name, "champion", first.version)
        spec = churn_spec.model_copy(update={"model_name": name, "history": [], "source": None})
        models[name] = Managed(spec, tmp_path / f"{name}.yaml")
    settings = ControllerSettings(home=tmp_path / "home", controller_recent_days=14,
                                  controller_labels_check_seconds=10**9)
    store = Store("sqlite://")
    evaluator = BrokenEvaluator("alpha")
    controller = Controller(settings, store=store, registry=registry,
                            launcher=TaggingLauncher(registry),
                            reader=LogReader(churn_spec, start=NOW - timedelta(days=3), until=NOW,
                                             step=timedelta(minutes=10)),  # type: ignore[arg-type]
                            evaluator=evaluator,  # type: ignore[arg-type]
                            models=models, metrics=ControllerMetrics.create(), clock=Clock(NOW))
    for name in ("alpha", "beta"):
        store.add_trigger(model=name, source="manual", action="retrain", reason="go", now=NOW)

    controller.reconcile_once()  # alpha's evaluation raises; beta's trigger is still taken

    alpha, _ = controller.load("alpha")
    beta, _ = controller.load("beta")
    assert evaluator.calls == ["alpha", "beta"]
    assert alpha.phase == "failed" and alpha.last_outcome == "failed"
    assert beta.phase == "shadow"
    decision = registry.list_decisions("alpha")[0]
    assert decision.outcome == "failed"
    assert any("a permanent refusal" in r for r in decision.reasons)
    assert registry.aliases("alpha")["champion"] == 1  # nothing moved
    controller.reconcile_once()  # and the next pass does not fail again
    assert controller.load("alpha")[0].phase == "failed"
    store.close()


def test_a_relaunch_of_a_trained_change_cycle_keeps_the_holdout_it_trained_before(
        shell: dict, churn_spec: DatasetSpec) -> None:
    """A change window's rows end when its labels suffice, so its cut moves with the clock:
    a second pass that finds the cycle already trained returns the first launch's cut, not a
    later one (the gate would ignore the held-out rows between the two)."""
    from controller.machine import LaunchTraining, TrainingLaunched
    from controller.recent import Window

    c, clock = shell["c"], shell["clock"]
    spec = c.models["churn"].spec.model_copy(update={"retrain": churn_spec.retrain.model_copy(
        update={"min_rows": 10})})
    c.models["churn"] = Managed(spec, c.models["churn"].spec_path)
    c._window = lambda a, s, now: Window("change", NOW - timedelta(days=2), "a change")
    action = LaunchTraining("churn", "churn-c1", 1, ("drift",), ("verdict",), started_at=NOW)
    first = c._launch(action)
    assert isinstance(first, TrainingLaunched) and first.holdout_from is not None
    shell["reader"].frame = pd.concat([shell["reader"].frame, LogReader(
        churn_spec, start=NOW, until=NOW + timedelta(hours=6),
        step=timedelta(minutes=10)).frame])   # six more hours of labelled rows
    clock.now = NOW + timedelta(hours=6)
    again = c._launch(action)
    assert isinstance(again, TrainingLaunched) and again.holdout_from == first.holdout_from
    assert len(c.launcher.requests) == 1      # trained once
    (c.settings.home_dir / "controller" / "data" / "churn-c1.holdout").unlink()
    moved = c._launch(action)                 # a launch made before the cut was recorded
    assert isinstance(moved, TrainingLaunched) and moved.holdout_from is not None
    assert moved.holdout_from > first.holdout_from
