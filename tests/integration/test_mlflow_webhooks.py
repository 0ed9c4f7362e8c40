"""MLflow registry webhooks end to end, on a real ``mlflow server`` (sqlite, a SQL backend)
and the real controller app on loopback: a webhook registered through MLflow's own client
API (``MlflowClient.create_webhook`` with a secret); a manual promotion by a named operator
(her own token, through ``driftloop promote``); then an alias moved with ``MlflowClient``
(a foreign move). The controller verifies MLflow's signed deliveries, records the foreign
move once (not its own), tells serving (a stand-in that checks the exact request) to reload,
and ``driftloop history --json`` tells all of it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller.parts import build_controller
from controller.settings import ControllerSettings
from kernel.spec import DatasetSpec
from registry import DecisionRecord
from registry.mlflow_registry import MlflowRegistry
from tests.integration.test_controller_mlflow_outage import Server
from tests.unit.test_registry_contract import new_version_factory  # noqa: F401

pytestmark = pytest.mark.slow
SECRET = "mlflow-webhook-secret"
ADMIN = "serving-admin-token"


class ServingStandIn:
    """``POST /admin/reload`` as serving's (serving/api/admin.py): bearer admin token, no
    body; answers 200 ``unchanged``. Records every request it got."""

    def __init__(self) -> None:
        seen: list[tuple[str, str, str | None]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                seen.append(("POST", self.path, self.headers.get("Authorization")))
                ok = self.path == "/admin/reload" and \
                    self.headers.get("Authorization") == f"Bearer {ADMIN}"
                body = json.dumps({"outcome": "unchanged", "version": None, "detail": ""}
                                  if ok else {"detail": "wrong request"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def reloads(self) -> int:
        return sum(1 for s in self.seen if s == ("POST", "/admin/reload", f"Bearer {ADMIN}"))


@pytest.fixture
def webhook_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """``mlflow server`` that may deliver webhooks to loopback over http (MLflow refuses both
    by default), re-reading its webhook list every second."""
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_CACHE_TTL", "1")
    s = Server(tmp_path)
    s.start()
    try:
        yield s
    finally:
        if s.proc is not None:
            s.kill()


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def start_controller(settings: ControllerSettings, registry: MlflowRegistry) -> Iterator[str]:
    import uvicorn

    from controller.app import create_app
    from driftloop.processes import free_port, wait_http

    port = free_port()
    parts = build_controller(settings, registry=registry)
    app = create_app(settings, parts=parts, manual_wait_seconds=30)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", timeout=60)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from driftloop.cli import main

    capsys.readouterr()             # what the in-process controller's MLflow client printed
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def test_a_foreign_move_in_mlflow_is_verified_recorded_and_reloads_serving(
        webhook_server: Server, tmp_path: Path, unique_model_spec: DatasetSpec,
        new_version_factory: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    name = unique_model_spec.model_name
    history = tmp_path / "history.csv"
    history.write_text("placeholder")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(unique_model_spec.model_copy(
        update={"history": [str(history)], "source": None}).to_yaml())
    serving = ServingStandIn()
    serving.thread.start()
    registry = MlflowRegistry(webhook_server.url, artifact_root=webhook_server.artifacts)
    for _ in range(3):
        registry.register(new_version_factory(name))
    registry.set_alias(name, "champion", 1)
    settings = ControllerSettings(
        home=tmp_path / "home", tracking_uri=webhook_server.url,
        artifact_root=webhook_server.artifacts, controller_token="shared-token",
        controller_tokens="alice:alice-token,ci-bot:bot-token", controller_specs=str(spec_path),
        controller_mlflow_webhook_secret=SECRET, controller_recent_days=0,
        controller_tick_seconds=0.5, serving_url=serving.url, admin_token=ADMIN)
    controller = start_controller(settings, registry)
    url = next(controller)
    try:
        client = MlflowClient(webhook_server.url)
        hook = client.create_webhook(
            name="driftloop-controller", url=f"{url}/webhooks/mlflow",
            events=["model_version_alias.created", "model_version_alias.deleted"],
            secret=SECRET)
        assert hook.webhook_id
        monkeypatch.setenv("MLFLOW_TRACKING_URI", webhook_server.url)
        monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "cli-home"))
        monkeypatch.setenv("DRIFTLOOP_CONTROLLER_URL", url)
        monkeypatch.setenv("DRIFTLOOP_CONTROLLER_TOKEN", "alice-token")
        monkeypatch.setenv("DRIFTLOOP_ACTOR", "alice")
        monkeypatch.delenv("DRIFTLOOP_CONTROLLER_SPECS", raising=False)
        time.sleep(1.5)             # MLflow's webhook list is cached for a second (TTL above)

        out = cli(capsys, "promote", "2", "--reason", "hotfix verified", "--model", name)
        assert f"promote {name}: started (cycle {name}-promote-" in out, out
        wait_for(lambda: registry.list_decisions(name), "the promotion's decision")
        assert registry.aliases(name)["champion"] == 2
        reloads = wait_for(serving.reloads, "the reload after the promotion")

        client.set_registered_model_alias(name, "champion", "3")    # outside driftloop

        def foreign() -> list[DecisionRecord]:
            return [d for d in registry.list_decisions(name) if d.kind == "foreign"]

        (record,) = wait_for(foreign, "the foreign move's record")
        wait_for(lambda: serving.reloads() > reloads, "the reload after the foreign move")
    finally:
        next(controller, None)
    assert (record.alias, record.champion_version, record.new_champion_version) == (
        "champion", 2, 3)
    assert "MLflow registry webhook (delivery" in record.reasons[0]   # signed, verified
    assert [d.kind for d in registry.list_decisions(name)] == ["foreign", "manual_promote"]
    assert all(s[2] == f"Bearer {ADMIN}" for s in serving.seen)

    manual = next(d for d in registry.list_decisions(name) if d.kind == "manual_promote")
    assert manual.run_id is not None and record.run_id is not None
    run = client.get_run(manual.run_id)
    assert run.data.tags["mlflow.user"] == "alice" and run.info.user_id == "alice"
    assert run.data.tags["driftloop.actor"] == "alice"
    foreign_run = client.get_run(record.run_id)
    assert foreign_run.info.run_name == f"{name}@champion v2 -> v3 (moved outside driftloop)"

    moves = json.loads(cli(capsys, "history", "--model", name, "--json"))["moves"]
    champion = [(m["from_version"], m["to_version"], m["kind"], m["actor"]) for m in moves
                if m["alias"] == "champion"]
    assert champion == [(None, 1, "bootstrap", "driftloop train"),
                        (1, 2, "manual_promote", "alice"),
                        (2, 3, "foreign", "unknown (outside driftloop)")]
    assert all(m["at"] is not None for m in moves)
    text = cli(capsys, "history", "--model", name)
    assert "moved outside driftloop" in text and "by alice" in text
