"""A challenger trained without one of the champion's features would refuse every request
that still carries it (serving refuses unknown fields): the gate rejects it for schema
incompatibility before any pairs are counted, nothing is promoted; an operator can still
promote it with ``allow_schema_change`` naming the change, and the decision names it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from controller.evidence import Evaluator, ModelCache
from controller.launcher import LaunchRequest, LaunchStatus
from kernel.spec import DatasetSpec, Features
from kernel.tables import conform
from registry import TAG_PREFIX, NewVersion
from registry.memory import InMemoryRegistry
from tests.unit.controller_harness import AUTH, SyncClient, World, make_world
from training.generate import generate
from training.train import evaluate, fit, package, split

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
CHANGE = "dropped:support_tickets"


def trained(spec: DatasetSpec, data: pd.DataFrame, *, tags: dict[str, str]) -> NewVersion:
    parts = split(data, spec)
    fitted = fit(parts, spec, seed=1)
    return package(spec, data, parts, fitted, evaluate(fitted, parts, spec), tags=tags)


def without_tickets(spec: DatasetSpec) -> DatasetSpec:
    numerical = [f for f in spec.features.numerical if f != "support_tickets"]
    return spec.model_copy(update={"features": Features(
        numerical=numerical, categorical=list(spec.features.categorical))})


class NarrowTraining:
    """A launcher whose training run registers a version trained without support_tickets,
    tagged with the cycle id, as `driftloop train` would."""

    def __init__(self, registry: InMemoryRegistry, spec: DatasetSpec, data: pd.DataFrame) -> None:
        self.registry, self.spec, self.data = registry, spec, data

    def launch(self, request: LaunchRequest) -> str:
        self.registry.register(trained(self.spec, self.data,
                                       tags={TAG_PREFIX + "cycle_id": request.cycle_id}))
        return "registered"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("exited", 0)


@pytest.fixture
def world(tmp_path: Path, churn_spec: DatasetSpec) -> Iterator[tuple[World, SyncClient]]:
    w = make_world(tmp_path, churn_spec)
    spec = churn_spec.model_copy(update={"model_name": "churn"})
    data = conform(generate(3, rows_per_day=600, seed=5), spec)
    w.registry.register(trained(spec, data, tags={}))
    w.registry.set_alias("churn", "champion", 1)
    w.controller.launcher = NarrowTraining(w.registry, without_tickets(spec), data)
    client = SyncClient(w.app())
    try:
        yield w, client
    finally:
        client.close()
        w.store.close()


def test_the_evaluator_rejects_it_before_any_pairs(world: tuple[World, SyncClient],
                                                   tmp_path: Path) -> None:
    w, _ = world
    spec = w.controller.models["churn"].spec
    data = conform(generate(3, rows_per_day=600, seed=5), spec)
    w.registry.register(trained(without_tickets(spec), data, tags={}))
    evaluator = Evaluator(w.registry, w.controller.reader, ModelCache(w.registry, tmp_path / "c"))
    decision, champion = evaluator.evaluate(spec, 2, shadow_since=NOW, holdout_from=None,
                                            now=NOW + timedelta(hours=1))
    assert (decision.outcome, decision.n, champion, decision.broken) == ("reject", 0, 1, False)
    (reason,) = decision.reasons
    assert reason.startswith("v2 would refuse requests champion v1 accepts: feature "
                             "'support_tickets' dropped")
    assert CHANGE in reason


def test_rejected_by_the_gate_then_promoted_only_with_the_change_named(
        world: tuple[World, SyncClient]) -> None:
    w, client = world
    assert client.post("/retrain", json={"reason": "drift"}, headers=AUTH).status_code in (
        200, 202)
    for _ in range(6):
        w.controller.step("churn")
    (decision,) = w.registry.decisions
    assert (decision.kind, decision.outcome, decision.challenger_version) == (
        "gate", "rejected", 2)
    assert any("would refuse requests champion v1 accepts" in r for r in decision.reasons)
    assert w.registry.aliases("churn") == {"champion": 1}  # nothing promoted

    refused = client.post("/promote", json={"reason": "on-call", "version": 2}, headers=AUTH)
    assert refused.status_code == 409 and CHANGE in refused.json()["detail"]
    wrong = client.post("/promote", json={"reason": "on-call", "version": 2,
                                          "allow_schema_change": "dropped:tenure_months"},
                        headers=AUTH)
    assert wrong.status_code == 409 and "does not name dropped:support_tickets" in \
        wrong.json()["detail"]
    w.controller.step("churn")
    assert w.registry.aliases("churn") == {"champion": 1} and len(w.registry.decisions) == 1

    answer = client.post("/promote", json={"reason": "clients migrated", "version": 2,
                                           "allow_schema_change": CHANGE}, headers=AUTH)
    assert answer.status_code in (200, 202), answer.text
    w.controller.step("churn")
    manual = w.registry.decisions[-1]
    assert (manual.kind, manual.new_champion_version) == ("manual_promote", 2)
    assert w.registry.aliases("churn")["champion"] == 2
    assert any(f"schema change allowed by the operator: {CHANGE}" in r for r in manual.reasons)
