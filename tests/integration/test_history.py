"""The promotion history rebuilt from the registry alone: the reconcile shell (in-memory
registry, real training) runs a promotion, an automatic rollback, a rejection and a manual
promotion by a named operator; then ``champion at T`` is answered for times across all of
them, from the decision runs and again from the version tags alone (the runs lost). The same
records on real MLflow: run names, users, params, metrics, version tags, descriptions and
``driftloop history --json`` / ``driftloop status`` with no controller."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.history import DECISION_TAG_PREFIX, champion_at, rebuild, record_on_versions
from registry import TAG_PREFIX, DecisionRecord, ModelRegistry
from tests.integration.test_controller_shell import add, shell  # noqa: F401
from tests.unit.test_registry_contract import new_version_factory  # noqa: F401


class RejectingOnce:
    """The real evaluator, except that the next decision it gives is turned into a rejection."""

    def __init__(self, real: Any) -> None:
        self.real, self.reject_next = real, False

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        decision, champion = self.real.evaluate(*args, **kwargs)
        if self.reject_next and decision.outcome != "wait":
            self.reject_next = False
            decision = replace(decision, outcome="reject", difference=-0.013,
                               reasons=(*decision.reasons, "forced by the test: worse"))
        return decision, champion

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def decision_tags(registry: ModelRegistry, name: str, version: int) -> list[dict[str, Any]]:
    tags = registry.get_version(name, version).tags
    found = [json.loads(v) for k, v in tags.items() if k.startswith(DECISION_TAG_PREFIX)]
    return sorted(found, key=lambda d: d["decided_at"])


def test_champion_at_any_time_from_the_registry_alone(shell: dict) -> None:  # noqa: F811
    c, registry, clock, v1 = shell["c"], shell["registry"], shell["clock"], shell["champion"]
    registry.clock = clock                        # versions made on the controller's clock
    c.evaluator = RejectingOnce(c.evaluator)
    t0 = clock()
    add(shell, "performance", source="performance", version=v1, value=0.80, reason="v1 realised")
    add(shell, "retrain", reason="concept change")
    v2 = c.step("churn").cycle.challenger         # promoted
    t_promoted = clock()
    assert registry.aliases("churn")["champion"] == v2

    clock.now += timedelta(hours=3)               # v2 realised clearly worse: rolled back
    add(shell, "performance", source="performance", version=v2, value=0.70, reason="v2 realised")
    c.step("churn")
    t_rolled_back = clock()
    assert registry.aliases("churn")["champion"] == v1

    clock.now += timedelta(hours=1)               # an emergency retrain, rejected by the gate
    c.evaluator.reject_next = True
    add(shell, "retrain", reason="try again")
    state = c.step("churn")
    v3 = state.cycle.challenger
    assert state.last_outcome == "rejected" and registry.aliases("churn")["champion"] == v1
    t_rejected = clock()

    clock.now += timedelta(hours=1)               # ana promotes v2 by hand
    add(shell, "promote", version=v2, actor="ana", reason="hotfix verified")
    c.step("churn")
    t_manual = clock()
    assert registry.aliases("churn") == {"champion": v2, "previous": v1}

    moves = rebuild(registry, "churn")
    champions = [(m.from_version, m.to_version, m.kind, m.actor) for m in moves
                 if m.alias == "champion"]
    assert champions == [(None, v1, "bootstrap", "driftloop train"),
                         (v1, v2, "gate", "controller"), (v2, v1, "rollback", "controller"),
                         (v1, v2, "manual_promote", "ana")]
    asked = {t0: v1, t_promoted - timedelta(seconds=1): v1, t_promoted: v2,
             t_rolled_back - timedelta(minutes=1): v2, t_rolled_back: v1, t_rejected: v1,
             t_manual - timedelta(seconds=1): v1, t_manual + timedelta(days=1): v2}
    assert {t: champion_at(moves, t) for t in asked} == asked
    challengers = [(m.from_version, m.to_version, m.outcome) for m in moves
                   if m.alias == "challenger"]
    assert (v3, None, "rejected") in challengers
    rejection = next(m for m in moves if m.alias == "challenger" and m.outcome == "rejected")
    assert rejection.numbers["difference"] == pytest.approx(-0.013)
    rollback = next(m for m in moves if m.kind == "rollback")
    assert rollback.numbers["realised_metric"] == pytest.approx(0.70)
    assert rollback.numbers["realised_baseline"] == pytest.approx(0.80)
    assert "realised metric 0.7000" in rollback.why
    assert not [m for m in moves if m.kind == "foreign"]

    # each decision left its own record on each version it judged: nothing overwritten
    assert [(d["kind"], d["role"]) for d in decision_tags(registry, "churn", v2)] == [
        ("gate", "promoted"), ("rollback", "rolled_back"), ("manual_promote", "manually_promoted")]
    assert [(d["kind"], d["role"]) for d in decision_tags(registry, "churn", v1)] == [
        ("gate", "replaced"), ("rollback", "restored"), ("gate", "defended"),
        ("manual_promote", "replaced")]
    v2_tags = registry.get_version("churn", v2).tags
    assert v2_tags[TAG_PREFIX + "decision"] == "manually_promoted"
    assert v2_tags[TAG_PREFIX + "gate_difference"] == ""      # latest: no gate numbers
    assert "manually promoted" in (registry.get_version("churn", v2).description or "")

    # the decision runs lost: the version tags alone tell the same champion story
    registry.decisions.clear()
    again = [(m.from_version, m.to_version, m.kind) for m in rebuild(registry, "churn")
             if m.alias == "champion"]
    assert again == [c[:3] for c in champions]

    # an alias moved outside driftloop shows up, time unknown
    registry.set_alias("churn", "champion", v3)
    (foreign,) = [m for m in rebuild(registry, "churn") if m.kind == "foreign"]
    assert (foreign.alias, foreign.from_version, foreign.to_version, foreign.at) == (
        "champion", v2, v3, None)

    # the controller's own pass notices it (no webhook here) and records it once, timed
    clock.now += timedelta(minutes=5)
    c.foreign.every = 0                           # look on every pass
    c.reconcile_once()
    c.reconcile_once()
    t_noticed = clock()
    (recorded,) = [m for m in rebuild(registry, "churn") if m.kind == "foreign"]
    assert (recorded.from_version, recorded.to_version, recorded.at) == (v2, v3, t_noticed)
    assert recorded.actor == "unknown (outside driftloop)" and "reconcile pass" in recorded.why
    assert champion_at(rebuild(registry, "churn"), t_noticed) == v3
    assert champion_at(rebuild(registry, "churn"), t_manual) == v2


# -- the same records on real MLflow -------------------------------------------------------

def decide(registry: ModelRegistry, record: DecisionRecord) -> DecisionRecord:
    saved = registry.record_decision(record)
    record_on_versions(registry, saved)
    return saved


def audit_story(registry: ModelRegistry, name: str, new_version_factory: Any) -> dict:  # noqa: F811
    """Three versions; v2 promoted over v1 by the gate, v3 rejected, then v2 rolled back to v1
    automatically and promoted again by alice: the records the controller leaves, an hour
    apart from a minute after now (the versions are made first) (``t0`` in the answer)."""
    for cycle in ("bootstrap", "c1", "c2"):
        tags = {} if cycle == "bootstrap" else {TAG_PREFIX + "cycle_id": f"{name}-{cycle}"}
        registry.register(new_version_factory(name, **tags))
    registry.set_alias(name, "champion", 1)
    T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    gate = dict(kind="gate", evidence="offline_replay", metric="roc_auc", margin=0.005,
                triggers=("verdict: drift on v1: share 0.6 >= 0.5 (tenure_months)",))
    registry.set_alias(name, "champion", 2)
    registry.set_alias(name, "previous", 1)
    promoted = decide(registry, DecisionRecord(
        model=name, outcome="promoted", cycle_id=f"{name}-c1", decided_at=T0,
        champion_version=1, challenger_version=2, new_champion_version=2, n=812,
        champion_metric=0.61, challenger_metric=0.881, difference=0.271, ci_low=0.22,
        ci_high=0.31, reasons=("ci low +0.22 >= -0.005: promote",), **gate))
    rejected = decide(registry, DecisionRecord(
        model=name, outcome="rejected", cycle_id=f"{name}-c2",
        decided_at=T0 + timedelta(hours=2), champion_version=2, challenger_version=3,
        new_champion_version=2, n=640, champion_metric=0.88, challenger_metric=0.867,
        difference=-0.013, ci_low=-0.03, ci_high=0.004,
        reasons=("ci low -0.030 < -0.005: reject",), **gate))
    registry.set_alias(name, "champion", 1)
    registry.set_alias(name, "previous", 2)
    rolled = decide(registry, DecisionRecord(
        model=name, kind="rollback", outcome="rolled_back", cycle_id=f"{name}-rollback-1",
        decided_at=T0 + timedelta(hours=3), champion_version=2, challenger_version=1,
        new_champion_version=1, evidence="realised", metric="roc_auc", champion_metric=0.70,
        challenger_metric=0.80, difference=0.10, margin=0.02,
        extra={"realised_metric": 0.70, "realised_baseline": 0.80},
        triggers=("performance: realised metric 0.7000 of v2 is below 0.8000",),
        reasons=("performance: realised metric 0.7000 of v2 is below 0.8000",)))
    registry.set_alias(name, "champion", 2)
    registry.set_alias(name, "previous", 1)
    manual = decide(registry, DecisionRecord(
        model=name, kind="manual_promote", outcome="promoted", cycle_id=f"{name}-promote-2",
        decided_at=T0 + timedelta(hours=4), champion_version=1, challenger_version=2,
        new_champion_version=2, actor="alice", evidence="none", metric="roc_auc",
        triggers=("hotfix verified",), reasons=("hotfix verified",)))
    return {"promoted": promoted, "rejected": rejected, "rolled": rolled, "manual": manual,
            "t0": T0}


@pytest.fixture
def mlflow_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded default store under ``home``; no controller listens."""
    from driftloop.processes import free_port

    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("DRIFTLOOP_CONTROLLER_SPECS", raising=False)
    return home


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The command's exit code and stdout (stderr only when it failed)."""
    from driftloop.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out if code == 0 else out + err


def test_mlflow_decision_runs_tags_and_cli_history(mlflow_home: Path, new_version_factory: Any,  # noqa: F811
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    from controller.settings import ControllerSettings
    from registry import open_registry
    from registry.port import DECISIONS_EXPERIMENT, EXPERIMENT_KIND_TAG

    settings = ControllerSettings()
    registry = open_registry(settings)
    story = audit_story(registry, "churn", new_version_factory)

    client = MlflowClient(settings.resolved_tracking_uri)
    exp = client.get_experiment_by_name(DECISIONS_EXPERIMENT)
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    t0 = story.pop("t0")
    names = {k: runs[s.run_id].info.run_name for k, s in story.items()}
    assert names == {"promoted": "churn v2 -> champion (promoted, +0.271)",
                     "rejected": "churn v3 rejected (-0.013)",
                     "rolled": "churn rolled back v2 -> v1",
                     "manual": "churn v2 -> champion (manual, by alice)"}
    manual, rolled = runs[story["manual"].run_id], runs[story["rolled"].run_id]
    assert manual.data.tags["mlflow.user"] == "alice" and manual.info.user_id == "alice"
    assert manual.data.tags[TAG_PREFIX + "actor"] == "alice"
    assert "margin" not in manual.data.params and "None" not in manual.data.params.values()
    assert rolled.data.metrics["realised_metric"] == pytest.approx(0.70)
    assert rolled.data.metrics["difference"] == pytest.approx(0.10)
    assert set(runs[story["promoted"].run_id].data.params) <= set(rolled.data.params) | {"n"}
    v2 = registry.get_version("churn", 2)
    promoted = runs[story["promoted"].run_id]
    assert promoted.data.tags[TAG_PREFIX + "challenger_run_id"] == v2.run_id
    assert "#/models/churn/versions/2" in promoted.data.tags["mlflow.note.content"]
    assert [json.loads(v)["role"] for k, v in sorted(v2.tags.items())
            if k.startswith(DECISION_TAG_PREFIX)] == ["promoted", "defended", "manually_promoted",
                                                       "rolled_back"]   # sorted by cycle id
    assert "Latest decision" in (v2.description or "") and "alice" in (v2.description or "")
    assert "driftloop training run" in (v2.description or "")          # training note kept

    code, out = cli(capsys, "history", "--model", "churn", "--json")
    assert code == 0, out
    moves = json.loads(out)["moves"]
    champion = [(m["from_version"], m["to_version"], m["actor"]) for m in moves
                if m["alias"] == "champion"]
    assert champion == [(None, 1, "driftloop train"), (1, 2, "controller"),
                        (2, 1, "controller"), (1, 2, "alice")]
    challenger = [(m["from_version"], m["to_version"], m["outcome"]) for m in moves
                  if m["alias"] == "challenger"]
    assert challenger[-1] == (3, None, "rejected")    # (versions made before the story's clock)
    assert not [m for m in moves if m["kind"] == "foreign"]
    code, out = cli(capsys, "history", "--model", "churn")
    assert code == 0, out
    assert "by controller: churn v3 rejected (-0.013) [CI [-0.030, +0.004], n=640 roc_auc]" in out
    code, out = cli(capsys, "history", "--model", "churn",
                    "--since", (t0 + timedelta(hours=2, minutes=30)).isoformat())
    assert code == 0, out
    assert "churn rolled back v2 -> v1" in out and "(promoted, +0.271)" not in out

    code, out = cli(capsys, "status", "--model", "churn")
    assert code == 0, out
    assert "controller unreachable" in out
    assert "@champion=v2, @previous=v1" in out
    assert "churn v2 -> champion (manual, by alice)" in out
    assert "None" not in out
