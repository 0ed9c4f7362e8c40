"""The reconcile shell end to end in one process: InMemoryRegistry, a launcher that trains in
process (the real training code), a real prediction log, a fake clock. Covers what the
process-level tests do not: rollbacks (automatic and manual), manual promotion, probation,
and a registry outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.evidence import Evaluator, ModelCache
from controller.launcher import LaunchRequest, LaunchStatus
from controller.metrics import ControllerMetrics
from controller.reconcile import Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.spec import DatasetSpec
from monitoring.predlog import LogStore, PredictionLogWriter, open_log
from registry import TAG_PREFIX
from registry.memory import InMemoryRegistry
from training.generate import Scenario, generate
from training.train import train


class InProcessLauncher:
    def __init__(self, registry: InMemoryRegistry, spec: DatasetSpec) -> None:
        self.registry, self.spec, self.launched = registry, spec, []

    def launch(self, request: LaunchRequest) -> str:
        self.launched.append(request)
        train(self.spec, request.data_paths, self.registry, since=request.since,
              until=request.until, tags={TAG_PREFIX + "cycle_id": request.cycle_id})
        return "trained in process"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("exited", 0)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def shell(tmp_path: Path, churn_spec: DatasetSpec) -> dict:
    now = datetime.now(UTC).replace(microsecond=0)
    registry = InMemoryRegistry()
    history = tmp_path / "history.parquet"
    generate(4, rows_per_day=500, seed=1, start=now - timedelta(days=10)).to_parquet(history)
    spec = churn_spec.model_copy(update={"model_name": "churn", "history": [str(history)],
                                         "source": None})
    champion = train(spec, [history], registry, alias="champion").version.version
    recent = generate(2, scenario=Scenario("concept", 0), rows_per_day=600, seed=2,
                      start=now - timedelta(days=2, hours=1))
    model = registry.load_model(registry.download("churn", champion, tmp_path / "b"))
    scores = model.predict_proba(recent[spec.features.all])[:, 1]
    writer = PredictionLogWriter(LogStore(tmp_path / "log"))
    for row, score in zip(recent.to_dict("records"), scores, strict=True):
        writer.append({"ts": row["ts"].floor("us").to_pydatetime(),
                       "request_id": row["customer_id"], "model_name": "churn",
                       "model_version": champion, "score": float(score), "prediction": 0,
                       "shadow_version": None, "shadow_score": None, "latency_ms": 1.0,
                       **{c: row[c] for c in spec.features.all}})
        writer.append_label(row["customer_id"], row["churned"], model="churn")
    writer.close()
    settings = ControllerSettings(home=tmp_path / "home", controller_recent_days=3,
                                  controller_retrain_window_days=3, controller_bootstrap=300,
                                  controller_evaluate_every_seconds=0)
    _, reader = open_log(tmp_path / "log")
    store = Store("sqlite://")
    clock = Clock(datetime.now(UTC) + timedelta(minutes=1))  # after the labels arrived
    metrics = ControllerMetrics.create()
    controller = Controller(
        settings, store=store, registry=registry, launcher=InProcessLauncher(registry, spec),
        reader=reader, evaluator=Evaluator(registry, reader, ModelCache(registry, tmp_path / "m"),
                                           settings.gate_policy()),
        models={"churn": Managed(spec, tmp_path / "spec.yaml")}, metrics=metrics, clock=clock)
    yield {"c": controller, "registry": registry, "store": store, "clock": clock,
           "champion": champion}
    store.close()


def add(shell: dict, action: str, source: str = "manual", **kw: object) -> None:
    shell["store"].add_trigger(model="churn", source=source, action=action,
                               reason=str(kw.pop("reason", action)), now=shell["clock"](), **kw)


def test_promotion_then_automatic_rollback_then_overrides(shell: dict) -> None:
    c, registry, clock, v1 = shell["c"], shell["registry"], shell["clock"], shell["champion"]
    add(shell, "performance", source="performance", version=v1, value=0.80, reason="v1 realised")
    add(shell, "retrain", reason="concept change")
    state = c.step("churn")                      # launch, train, evaluate, promote, record
    assert state.phase == "cooldown" and state.last_outcome == "promoted", state
    v2 = state.cycle.challenger
    assert registry.aliases("churn") == {"champion": v2, "previous": v1}
    assert state.probation.version == v2 and state.probation.baseline == 0.80
    (gate,) = registry.decisions
    assert gate.evidence == "offline_replay" and gate.n >= 200

    # realised performance of v2 clearly below v1's within probation: automatic rollback
    clock.now += timedelta(hours=3)
    add(shell, "performance", source="performance", version=v2, value=0.70, reason="v2 realised")
    state = c.step("churn")
    assert registry.aliases("churn") == {"champion": v1, "previous": v2}
    rollback = registry.decisions[-1]
    assert (rollback.kind, rollback.outcome, rollback.new_champion_version) == (
        "rollback", "rolled_back", v1)
    assert state.probation is None and state.override is None
    assert registry.get_version("churn", v2).tags[TAG_PREFIX + "decision"] == "rolled_back"

    # a rollback alert now (no probation) does nothing
    add(shell, "rollback", source="alertmanager", reason="BadModel")
    c.step("churn")
    assert registry.aliases("churn")["champion"] == v1 and len(registry.decisions) == 2

    # audited human overrides
    add(shell, "promote", version=v2, actor="ana", reason="hotfix verified")
    c.step("churn")
    assert registry.aliases("churn") == {"champion": v2, "previous": v1}
    promote = registry.decisions[-1]
    assert (promote.kind, promote.actor, promote.reasons[0]) == (
        "manual_promote", "ana", "hotfix verified")
    add(shell, "rollback", reason="changed my mind")
    c.step("churn")
    assert registry.aliases("churn")["champion"] == v1
    assert registry.decisions[-1].kind == "manual_rollback"
    assert len({(d.cycle_id, d.kind) for d in registry.decisions}) == len(registry.decisions) == 4


def test_registry_outage_is_retried_not_lost(shell: dict) -> None:
    c, registry = shell["c"], shell["registry"]
    add(shell, "retrain", reason="go")
    registry.down = True
    c.reconcile_once()                              # RetryableError: logged, nothing lost
    assert c.errors >= 1
    registry.down = False
    state = c.step("churn")  # launches (the launch hit the outage), finds the version at once
    assert state.cycle.attempt == 1
    assert state.phase == "cooldown" and state.last_outcome == "promoted"
    assert len(registry.find_versions("churn", {TAG_PREFIX + "cycle_id": state.cycle.id})) == 1
    assert len(registry.decisions) == 1


def test_training_without_data_fails_the_cycle_once(shell: dict, tmp_path: Path) -> None:
    c, registry = shell["c"], shell["registry"]
    spec = c.models["churn"].spec.model_copy(update={"history": []})
    c.models["churn"] = Managed(spec, tmp_path / "spec.yaml")
    c.settings = c.settings.model_copy(update={"controller_recent_days": 0})
    # nor files recorded by the champion (a spec without history falls back to them)
    registry.set_tags("churn", registry.aliases("churn")["champion"],
                      {"driftloop.data_sources": "[]"})
    add(shell, "retrain", reason="go")
    state = c.step("churn")
    assert state.phase == "failed" and state.last_outcome == "failed"
    (d,) = registry.decisions
    assert d.outcome == "failed" and "no training data" in d.reasons[-1]
    shell["clock"].now += timedelta(hours=1)
    assert c.step("churn").phase == "idle"


def test_two_replicas_insert_one_trigger_and_one_holds_the_lease(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'controller.db'}"
    replicas = [Store(url), Store(url)]
    now = datetime.now(UTC)

    def insert(i: int) -> int | None:
        return replicas[i % 2].add_trigger(model="churn", source="alertmanager",
                                           action="retrain", reason="r", now=now,
                                           dedup_key="am:fp:2026-03-01T10:00:00+00:00")

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(insert, range(200)))
    assert sum(i is not None for i in ids) == 1
    assert replicas[0].acquire_lease("model:churn", "r0", ttl=30, now=0)
    assert not replicas[1].acquire_lease("model:churn", "r1", ttl=30, now=1)
    for store in replicas:
        store.close()


def test_builtin_triggers_and_serving_reload(shell: dict) -> None:
    import time

    import httpx

    from controller.notify import Notifier, ServingReloader

    calls: list[httpx.Request] = []

    def serving(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503 if len(calls) == 1 else 200)   # first reload fails: retried

    client = httpx.Client(transport=httpx.MockTransport(serving))
    c = shell["c"]
    c.reloader = ServingReloader(client, "http://serving", "adm1n", backoff=0.01)
    c.notifier = Notifier(client, "http://chat/hook", backoff=0.01)
    c.settings = c.settings.model_copy(update={"controller_retrain_labelled_rows": 1000,
                                               "controller_labels_check_seconds": 0})
    state = c.step("churn")                          # 1,200 labels came in since v1 was made
    assert state.phase == "cooldown" and state.last_outcome == "promoted"
    assert state.cycle.sources == ("labels",)
    assert "1200 labels received" in state.cycle.reasons[0]
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    reloads = [r for r in calls if r.url.path == "/admin/reload"]
    assert len(reloads) == 2 and reloads[-1].headers["authorization"] == "Bearer adm1n"
    (note,) = [r for r in calls if r.url.host == "chat"]
    assert b"promoted" in note.content
    # the same label count does not trigger twice; a schedule slot after start does, once,
    # and the cooldown holds it back
    c.settings = c.settings.model_copy(update={"controller_schedule": "* * * * *"})
    shell["clock"].now += timedelta(minutes=2)
    c.step("churn")
    c.step("churn")
    rows = shell["store"].triggers_of("churn")
    assert [r.source for r in rows].count("labels") == 1
    (scheduled,) = [r for r in rows if r.source == "schedule"]
    assert scheduled.outcome == "deferred"


def test_retrain_with_a_short_window_trains_inside_it(shell: dict) -> None:
    """recent_days 14 with a half-day retrain window: the holdout cut is taken inside the
    window (before the fix it came from the whole 14 days and fell before --since, and
    ``driftloop train`` failed with "no rows in the window")."""
    c, registry = shell["c"], shell["registry"]
    c.settings = c.settings.model_copy(update={"controller_recent_days": 14,
                                               "controller_retrain_window_days": 0.5})
    add(shell, "retrain", reason="concept change")
    state = c.step("churn")
    (request,) = c.launcher.launched
    assert request.since is not None and request.until is not None
    assert request.since < request.until <= shell["clock"]()
    assert state.phase == "shadow" and state.cycle.challenger is not None, state
    assert state.cycle.holdout_from == request.until
    (trained,) = registry.find_versions("churn", {TAG_PREFIX + "cycle_id": state.cycle.id})
    assert trained.version == state.cycle.challenger
