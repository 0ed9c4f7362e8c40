"""Human overrides are checked against the registry before they are accepted: an override
that cannot happen is refused with a reason and leaves no trace (no trigger, no alias moved,
no decision); a registry outage at that moment is a 503, never "started"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.spec import DatasetSpec
from tests.unit.controller_harness import AUTH, SyncClient, World, add_version, make_world


@pytest.fixture
def world(tmp_path: Path, churn_spec: DatasetSpec) -> Iterator[tuple[World, SyncClient]]:
    w = make_world(tmp_path, churn_spec)
    v1, _ = add_version(w.registry), add_version(w.registry)
    w.registry.set_alias("churn", "champion", v1)
    client = SyncClient(w.app())
    try:
        yield w, client
    finally:
        client.close()
        w.store.close()


def unchanged(w: World) -> None:
    assert w.registry.aliases("churn") == {"champion": 1}
    assert w.registry.decisions == []
    assert w.store.triggers_of() == []


@pytest.mark.parametrize(("path", "body", "code", "detail"), [
    ("/promote", {"version": 99}, 404, "churn v99 not found"),
    ("/promote", {"version": 1}, 409, "v1 is already champion"),
    ("/rollback", {}, 409, "churn has no @previous version to roll back to"),
    ("/promote", {"version": 2, "model": "nope"}, 404, "model 'nope' is not managed here"),
    ("/rollback", {"model": "nope"}, 404, "model 'nope' is not managed here"),
    ("/retrain", {"model": "nope"}, 404, "model 'nope' is not managed here"),
])
def test_impossible_overrides_are_refused_and_change_nothing(
        world: tuple[World, SyncClient], path: str, body: dict, code: int, detail: str) -> None:
    w, client = world
    response = client.post(path, json={"reason": "on-call", **body}, headers=AUTH)
    assert response.status_code == code
    assert detail in response.json()["detail"]
    w.controller.step("churn")
    unchanged(w)


@pytest.mark.parametrize(("path", "body"), [("/promote", {"version": 2}), ("/rollback", {})])
def test_a_registry_outage_is_503_and_retryable(world: tuple[World, SyncClient], path: str,
                                                body: dict) -> None:
    w, client = world
    w.registry.down = True
    response = client.post(path, json={"reason": "on-call", **body}, headers=AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "the registry could not be asked" in response.json()["detail"]
    w.registry.down = False
    unchanged(w)


def test_an_accepted_override_carries_its_own_cycle_id(world: tuple[World, SyncClient]) -> None:
    w, client = world
    retrain = client.post("/retrain", json={"reason": "drift"}, headers=AUTH).json()
    assert w.controller.step("churn").phase == "training"
    retrain_cycle = w.store.get_trigger(retrain["trigger_id"]).cycle_id
    promote = client.post("/promote", json={"reason": "hotfix", "version": 2}, headers=AUTH)
    assert promote.status_code == 202
    w.controller.step("churn")
    row = w.store.get_trigger(promote.json()["trigger_id"])
    (decision,) = w.registry.decisions
    assert decision.kind == "manual_promote" and w.registry.aliases("churn")["champion"] == 2
    assert row.cycle_id == decision.cycle_id != retrain_cycle
    assert "promote" in row.cycle_id
    rollback = client.post("/rollback", json={"reason": "back"}, headers=AUTH)
    w.controller.step("churn")
    row = w.store.get_trigger(rollback.json()["trigger_id"])
    assert row.cycle_id == w.registry.decisions[-1].cycle_id
    assert w.registry.aliases("churn") == {"champion": 1, "previous": 2}
