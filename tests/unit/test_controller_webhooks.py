"""``POST /webhooks/mlflow`` over the fake world: MLflow's signature scheme (checked against
mlflow's own signer), stale and replayed deliveries, malformed and oversize bodies (never a
5xx); a foreign alias move recorded once, whether a webhook reports it or the reconcile pass
finds it; and per-person tokens naming the actor of an override."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller import webhooks
from controller.history import rebuild
from kernel.errors import UsageError
from kernel.spec import DatasetSpec
from tests.unit.controller_harness import SyncClient, World, add_version, make_world

SECRET = "whsec-test"


def signed(body: dict[str, Any] | bytes, *, secret: str = SECRET, stamp: int | None = None,
           delivery: str | None = None) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    delivery = delivery or str(uuid.uuid4())
    ts = str(int(time.time()) if stamp is None else stamp)
    return {"content": raw, "headers": {
        "Content-Type": "application/json", webhooks.DELIVERY_HEADER: delivery,
        webhooks.TIMESTAMP_HEADER: ts,
        webhooks.SIGNATURE_HEADER: webhooks.signature(secret, delivery, ts, raw)}}


def alias_set(name: str, alias: str, version: int) -> dict[str, Any]:
    return {"entity": "model_version_alias", "action": "created",
            "timestamp": "2026-12-02T08:00:00+00:00",
            "data": {"name": name, "alias": alias, "version": str(version)}}


@pytest.fixture
def world(tmp_path: Path, churn_spec: DatasetSpec) -> Iterator[tuple[World, SyncClient]]:
    w = make_world(tmp_path, churn_spec, controller_mlflow_webhook_secret=SECRET,
                   controller_tokens="alice:alice-token,ci-bot:bot-token",
                   controller_foreign_check_seconds=0)          # look on every pass
    for _ in range(3):
        add_version(w.registry)
    w.registry.set_alias("churn", "champion", 1)
    client = SyncClient(w.app())
    try:
        yield w, client
    finally:
        client.close()
        w.store.close()


def test_the_signature_is_hmac_sha256_over_id_timestamp_body_in_base64() -> None:
    """The format mlflow/webhooks/delivery.py signs with (the integration test checks a real
    server's deliveries verify)."""
    import base64
    import hashlib
    import hmac

    body = json.dumps(alias_set("churn", "champion", 2)).encode()
    digest = hmac.new(SECRET.encode(), b"d-1.1764662400." + body, hashlib.sha256).digest()
    assert webhooks.signature(SECRET, "d-1", "1764662400", body) == \
        "v1," + base64.b64encode(digest).decode()


@pytest.mark.parametrize(("change", "code", "detail"), [
    ({"secret": "someone-else"}, 401, "wrong X-MLflow-Signature"),
    ({"stamp": int(time.time()) - 3600}, 401, "stale delivery"),
    ({"stamp": int(time.time()) + 3600}, 401, "stale delivery"),
])
def test_bad_signature_or_stale_is_401_and_changes_nothing(
        world: tuple[World, SyncClient], change: dict, code: int, detail: str) -> None:
    w, client = world
    response = client.post("/webhooks/mlflow", **signed(alias_set("churn", "champion", 2),
                                                        **change))
    assert response.status_code == code and detail in response.json()["detail"]
    w.controller.reconcile_once()
    assert not w.registry.decisions          # the champion is where the records put it


def test_missing_headers_and_malformed_bodies_are_400(world: tuple[World, SyncClient]) -> None:
    _, client = world
    assert client.post("/webhooks/mlflow", content=b"{}").status_code == 400
    unsigned = signed(alias_set("churn", "champion", 2))
    del unsigned["headers"][webhooks.SIGNATURE_HEADER]
    assert client.post("/webhooks/mlflow", **unsigned).status_code == 401
    for body in (b"not json", b"[]", b'{"entity": "model_version_alias"}',
                 json.dumps({**alias_set("churn", "champion", 2),
                             "data": {"name": "churn", "alias": "champion",
                                      "version": "two"}}).encode(),
                 json.dumps({**alias_set("churn", "champion", 2),
                             "data": {"name": "", "alias": "champion"}}).encode()):
        response = client.post("/webhooks/mlflow", **signed(body))
        assert response.status_code == 400, body
        assert response.json()["detail"]
    bad_stamp = signed(alias_set("churn", "champion", 2))
    bad_stamp["headers"][webhooks.TIMESTAMP_HEADER] = "yesterday"
    assert client.post("/webhooks/mlflow", **bad_stamp).status_code == 400


def test_oversize_body_is_413(world: tuple[World, SyncClient]) -> None:
    w, client = world
    big = {**alias_set("churn", "champion", 2), "pad": "x" * (w.settings.controller_max_body_bytes)}
    assert client.post("/webhooks/mlflow", **signed(big)).status_code == 413


def test_no_secret_configured_refuses_every_delivery(tmp_path: Path,
                                                     churn_spec: DatasetSpec) -> None:
    w = make_world(tmp_path, churn_spec)
    client = SyncClient(w.app())
    try:
        response = client.post("/webhooks/mlflow", **signed(alias_set("churn", "champion", 2)))
        assert response.status_code == 401
        assert "MLFLOW_WEBHOOK_SECRET is not set" in response.json()["detail"]
    finally:
        client.close()
        w.store.close()


def test_a_foreign_move_reported_twice_is_recorded_once(world: tuple[World, SyncClient]) -> None:
    w, client = world
    w.controller.reconcile_once()                         # running: it saw @champion v1
    w.registry.set_alias("churn", "champion", 2)          # by hand, outside driftloop
    delivery = signed(alias_set("churn", "champion", 2))
    first = client.post("/webhooks/mlflow", **delivery)
    assert first.json()["status"] == "accepted"
    again = client.post("/webhooks/mlflow", **delivery)   # a replay: answered, not acted on
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    other = client.post("/webhooks/mlflow", **signed(alias_set("elsewhere", "champion", 1)))
    assert other.json()["status"] == "ignored"
    w.controller.reconcile_once()
    w.controller.reconcile_once()
    (record,) = [d for d in w.registry.decisions if d.kind == "foreign"]
    assert (record.alias, record.champion_version, record.new_champion_version) == (
        "champion", 1, 2)
    assert first.json()["delivery_id"] in record.reasons[0]
    moves = [m for m in rebuild(w.registry, "churn") if m.alias == "champion"]
    assert [(m.from_version, m.to_version, m.kind) for m in moves] == [
        (None, 1, "bootstrap"), (1, 2, "foreign")]
    assert moves[-1].at is not None


def test_without_webhooks_the_reconcile_pass_notices_a_foreign_move_once(
        world: tuple[World, SyncClient]) -> None:
    w, _ = world
    w.controller.reconcile_once()
    assert not w.registry.decisions                       # the bootstrap champion is not one
    w.registry.set_alias("churn", "champion", 3)
    w.registry.set_alias("churn", "previous", 1)
    for _ in range(3):
        w.controller.reconcile_once()
    found = sorted((d.alias, d.champion_version, d.new_champion_version)
                   for d in w.registry.decisions)
    assert found == [("champion", 1, 3), ("previous", None, 1)]
    assert "reconcile pass" in w.registry.decisions[0].reasons[0]


def test_the_controllers_own_moves_are_not_foreign(world: tuple[World, SyncClient]) -> None:
    w, client = world
    w.controller.reconcile_once()
    assert client.post("/promote", json={"reason": "hotfix", "version": 2},
                       headers={"Authorization": "Bearer alice-token"}).status_code in (200, 202)
    client.post("/webhooks/mlflow", **signed(alias_set("churn", "champion", 2)))
    w.controller.reconcile_once()
    w.controller.reconcile_once()
    assert [d.kind for d in w.registry.decisions] == ["manual_promote"]
    assert w.registry.decisions[0].actor == "alice"


@pytest.mark.parametrize(("token", "actor", "code", "recorded"), [
    ("alice-token", None, 200, "alice"),
    ("alice-token", "alice", 200, "alice"),
    ("alice-token", "root", 200, "alice"),          # kept in the reason, not as the actor
    ("alice-token", "ci-bot", 403, None),            # another configured identity
    ("t0ken", "ci-bot", 403, None),                  # the shared token cannot be one either
    ("t0ken", "bob", 200, "bob"),
    ("t0ken", None, 200, "operator"),
    ("nope", "alice", 401, None),
])
def test_the_token_names_the_actor(world: tuple[World, SyncClient], token: str,
                                   actor: str | None, code: int, recorded: str | None) -> None:
    w, client = world
    body: dict[str, Any] = {"reason": "hotfix", "version": 2}
    if actor is not None:
        body["actor"] = actor
    response = client.post("/promote", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in ((200, 202) if code == 200 else (code,)), response.text
    w.controller.step("churn")
    if recorded is None:
        assert not w.registry.decisions and w.store.triggers_of() == []
        assert "t0ken" not in response.text and "alice-token" not in response.text
        return
    (decision,) = w.registry.decisions
    assert decision.actor == recorded
    if actor == "root":
        assert "[sent as actor 'root']" in decision.reasons[-1]


@pytest.mark.parametrize(("tokens", "message"), [
    ("alice", "entry 1 is not name:token"),
    ("alice:x,bob:x", "a token is given twice"),
    ("alice:x,alice:y", "name 'alice' is given twice"),
    ("t0ken-person:t0ken", "also a per-person token"),
])
def test_bad_token_settings_are_one_line_without_the_token(tokens: str, message: str,
                                                           tmp_path: Path) -> None:
    from controller.deps import load_tokens
    from controller.settings import ControllerSettings

    settings = ControllerSettings(home=tmp_path, controller_token="t0ken",
                                  controller_tokens=tokens)
    with pytest.raises(UsageError, match=message) as info:
        load_tokens(settings)
    assert "\n" not in str(info.value) and ":x" not in str(info.value)


def test_tokens_file_adds_people(tmp_path: Path) -> None:
    from controller.deps import load_tokens
    from controller.settings import ControllerSettings

    path = tmp_path / "tokens"
    path.write_text("# on-call\nana:ana-token\n\nci-bot:bot-token  # the pipeline\n")
    settings = ControllerSettings(home=tmp_path, controller_tokens="alice:alice-token",
                                  controller_tokens_file=path)
    assert load_tokens(settings) == {"alice-token": "alice", "ana-token": "ana",
                                     "bot-token": "ci-bot"}
    missing = settings.model_copy(update={"controller_tokens_file": tmp_path / "nope"})
    with pytest.raises(UsageError, match="No such file"):
        load_tokens(missing)


def test_a_deleted_alias_is_a_foreign_move_to_none(world: tuple[World, SyncClient]) -> None:
    w, client = world
    w.registry.set_alias("churn", "previous", 2)
    w.controller.reconcile_once()                         # found at the first look: adopted
    assert not w.registry.decisions
    w.registry.delete_alias("churn", "previous")
    deleted = {"entity": "model_version_alias", "action": "deleted",
               "timestamp": "2026-12-02T08:00:00+00:00",
               "data": {"name": "churn", "alias": "previous"}}
    answer = client.post("/webhooks/mlflow", **signed(deleted)).json()
    assert answer["status"] == "accepted" and answer["serving_reload"] is False  # no reloader
    w.controller.reconcile_once()
    (record,) = w.registry.decisions
    assert (record.kind, record.alias, record.champion_version, record.new_champion_version) \
        == ("foreign", "previous", 2, None)
    assert record.title == "churn@previous v2 -> none (moved outside driftloop)"
    assert "MLflow registry webhook" in record.reasons[0]
