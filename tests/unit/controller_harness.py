"""The controller app over fakes, shared by the app, override and fuzz tests: an in-memory
SQLite state store, an InMemoryRegistry, a launcher that only records, and a client that
drives the ASGI app (lifespan included) synchronously."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from fastapi import FastAPI

from controller.app import Parts, create_app
from controller.evidence import Evaluator, ModelCache
from controller.launcher import LaunchRequest, LaunchStatus
from controller.metrics import ControllerMetrics
from controller.reconcile import Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.spec import DatasetSpec
from monitoring.predlog import open_log
from registry import NewVersion
from registry.memory import InMemoryRegistry

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class SyncClient:
    """The app in process over httpx.ASGITransport, lifespan included, driven synchronously."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._enter())

    async def _enter(self) -> None:
        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://controller")

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self._call(self.client.post(path, **kw))

    def get(self, path: str) -> httpx.Response:
        return self._call(self.client.get(path))

    def close(self) -> None:
        self._call(self.client.aclose())
        self._call(self.lifespan.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class RecordingLauncher:
    def __init__(self) -> None:
        self.requests: list[LaunchRequest] = []

    def launch(self, request: LaunchRequest) -> str:
        self.requests.append(request)
        return "recorded"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("running")


@dataclass
class World:
    settings: ControllerSettings
    store: Store
    registry: InMemoryRegistry
    launcher: RecordingLauncher
    controller: Controller
    metrics: ControllerMetrics
    parts: Parts
    closing: list[Any] = field(default_factory=list)

    def app(self, *, run_loop: bool = False, manual_wait_seconds: float = 0.05) -> FastAPI:
        return create_app(self.settings, parts=self.parts, run_loop=run_loop,
                          manual_wait_seconds=manual_wait_seconds)


def make_world(tmp_path: Path, churn_spec: DatasetSpec, **settings: Any) -> World:
    history = tmp_path / "history.csv"
    history.write_text("placeholder")
    spec = churn_spec.model_copy(update={"model_name": "churn", "history": [str(history)],
                                         "source": None})
    config = ControllerSettings(**{"home": tmp_path / "home", "controller_token": TOKEN,
                                   "controller_recent_days": 0,
                                   "controller_max_body_bytes": 64_000, **settings})
    store = Store("sqlite://")
    registry = InMemoryRegistry()
    launcher = RecordingLauncher()
    _, reader = open_log(tmp_path / "log")
    metrics = ControllerMetrics.create()
    controller = Controller(config, store=store, registry=registry, launcher=launcher,
                            reader=reader, evaluator=Evaluator(registry, reader, ModelCache(
                                registry, tmp_path / "bundles")),
                            models={"churn": Managed(spec, tmp_path / "spec.yaml")},
                            metrics=metrics)
    parts = Parts(controller, store, metrics, client=None)  # type: ignore[arg-type]
    return World(config, store, registry, launcher, controller, metrics, parts)


def add_version(registry: InMemoryRegistry, name: str = "churn") -> int:
    """A registered version with nothing behind it (enough for aliases and overrides)."""
    empty = pd.DataFrame()
    return registry.register(NewVersion(name, model=None, spec_yaml="", input_example=empty,
                                        reference=empty, validation=empty, metrics={},
                                        params={}, tags={})).version
