"""The controller's HTTP face: ``create_app(settings, ...)``.

Intake endpoints validate, persist and answer fast; the reconcile loop (a thread started in
the lifespan) acts. Every mutating endpoint needs ``Authorization: Bearer <token>``
(``DRIFTLOOP_CONTROLLER_TOKEN``); without the right one the answer is 401 and nothing is
read or written.
"""


import asyncio
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from controller.evidence import Evaluator, ModelCache
from controller.intake import IntakeError, parse_verdict, take_alertmanager, take_verdict
from controller.launcher import GitHubActionsLauncher, Launcher, LocalProcessLauncher
from controller.metrics import ControllerMetrics
from controller.notify import Notifier, ServingReloader
from controller.reconcile import CRASH_ENV, Controller, Managed
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.errors import UsageError
from kernel.httpbody import BodyTooLarge, read_limited
from kernel.spec import load_spec
from monitoring.predlog import open_log
from registry import ModelRegistry, open_registry

log = logging.getLogger(__name__)


class RetrainBody(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)
    model: str | None = None
    actor: str = "human"


class PromoteBody(RetrainBody):
    version: int = Field(ge=1)


def make_launcher(settings: ControllerSettings, client: httpx.Client) -> Launcher:
    if settings.controller_launcher == "github":
        if not settings.controller_github_repo or not settings.controller_github_token:
            raise UsageError("the github launcher needs DRIFTLOOP_CONTROLLER_GITHUB_REPO and "
                             "DRIFTLOOP_CONTROLLER_GITHUB_TOKEN (or GITHUB_TOKEN)")
        return GitHubActionsLauncher(client, settings.controller_github_repo,
                                     settings.controller_github_workflow,
                                     settings.controller_github_token,
                                     ref=settings.controller_github_ref,
                                     api=settings.controller_github_api,
                                     data_uri=settings.controller_github_data_uri)
    if settings.controller_launcher != "local":
        raise UsageError(f"DRIFTLOOP_CONTROLLER_LAUNCHER: unknown {settings.controller_launcher!r}"
                         " (local or github)")
    return LocalProcessLauncher(settings.home_dir / "logs")


def load_models(settings: ControllerSettings) -> dict[str, Managed]:
    models: dict[str, Managed] = {}
    for path in settings.spec_paths():
        spec = load_spec(path)
        models[spec.model_name] = Managed(spec, path.resolve())
    return models


@dataclass
class Parts:
    controller: Controller
    store: Store
    metrics: ControllerMetrics
    client: httpx.Client


def build_controller(settings: ControllerSettings, *, registry: ModelRegistry | None = None,
                     launcher: Launcher | None = None, store: Store | None = None,
                     metrics: ControllerMetrics | None = None,
                     client: httpx.Client | None = None,
                     clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Parts:
    client = client or httpx.Client()
    store = store or Store(settings.database_url)
    registry = registry or open_registry(settings)
    metrics = metrics or ControllerMetrics.create()
    _, reader = open_log(settings.resolved_log_uri)
    evaluator = Evaluator(registry, reader, ModelCache(registry, settings.home_dir / "controller"
                                                       / "bundles"), settings.gate_policy(),
                          offline_replay=settings.controller_offline_replay)
    controller = Controller(
        settings, store=store, registry=registry,
        launcher=launcher or make_launcher(settings, client), reader=reader, evaluator=evaluator,
        models=load_models(settings), metrics=metrics,
        notifier=Notifier(client, settings.controller_notify_url),
        reloader=ServingReloader(client, settings.serving_url, settings.admin_token),
        clock=clock, crash_at=os.environ.get(CRASH_ENV))
    return Parts(controller, store, metrics, client)


def create_app(settings: ControllerSettings | None = None, *, parts: Parts | None = None,
               run_loop: bool = True, metrics_registry: CollectorRegistry | None = None,
               manual_wait_seconds: float = 10.0) -> FastAPI:
    settings = settings or ControllerSettings()
    holder: dict[str, Parts] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = parts or build_controller(
            settings, metrics=ControllerMetrics.create(metrics_registry or CollectorRegistry()))
        holder["parts"] = built
        stop = threading.Event()
        thread = None
        if run_loop:
            thread = threading.Thread(target=built.controller.run, args=(stop,),
                                      name="reconcile", daemon=True)
            thread.start()
        log.info("controller up: models %s, store %s", sorted(built.controller.models),
                 built.store.url)
        try:
            yield
        finally:
            stop.set()
            built.controller.wake.set()
            if thread is not None:
                await run_in_threadpool(thread.join, 30)

    app = FastAPI(title="driftloop controller", lifespan=lifespan)

    def get_parts() -> Parts:
        return holder["parts"]

    def require_token(request: Request) -> None:
        expected = settings.controller_token
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if not expected or scheme.lower() != "bearer" or \
                not secrets.compare_digest(token.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    Auth = Annotated[None, Depends(require_token)]
    Deps = Annotated[Parts, Depends(get_parts)]

    def pick_model(p: Parts, model: str | None) -> str:
        managed = p.controller.models
        if model is None:
            if len(managed) == 1:
                return next(iter(managed))
            raise HTTPException(400, f"say which model: one of {sorted(managed)}")
        if model not in managed:
            raise HTTPException(404, f"model {model!r} is not managed here "
                                f"(managed: {sorted(managed)})")
        return model

    async def wait_for(p: Parts, trigger_id: int) -> dict[str, Any]:
        p.controller.wake.set()
        deadline = time.monotonic() + manual_wait_seconds
        row = None
        while time.monotonic() < deadline:
            row = await run_in_threadpool(p.store.get_trigger, trigger_id)
            if row is not None and row.status != "pending":
                break
            await asyncio.sleep(0.05)
        if row is None or row.status == "pending":
            return {"trigger_id": trigger_id, "status": "pending",
                    "detail": "accepted; the controller has not taken it yet"}
        return {"trigger_id": trigger_id, "status": row.status, "outcome": row.outcome,
                "cycle_id": row.cycle_id}

    async def read_body(request: Request) -> bytes:
        """The body, refused with 413 past ``controller_max_body_bytes`` (never read whole)."""
        try:
            return await read_limited(request, settings.controller_max_body_bytes)
        except BodyTooLarge as exc:
            raise HTTPException(413, str(exc)) from None

    @app.post("/webhooks/alertmanager")
    async def alertmanager(request: Request, _: Auth, p: Deps) -> JSONResponse:
        body = await read_body(request)
        now = datetime.now(UTC)
        try:
            # About a millisecond of SQLite work: done on the event loop, because handing it
            # to the thread pool costs more (GIL and lock hand-offs) than it saves.
            result = take_alertmanager(p.store, body, models=set(p.controller.models), now=now)
        except IntakeError as exc:
            p.metrics.triggers.labels(source="alertmanager", outcome="invalid").inc()
            raise HTTPException(400, str(exc)) from None
        for source, outcome in result.counts:
            p.metrics.triggers.labels(source=source, outcome=outcome).inc()
        if result.trigger_ids:
            p.controller.wake.set()
        return JSONResponse(result.as_dict())

    @app.post("/verdicts")
    async def verdicts(request: Request, _: Auth, p: Deps) -> JSONResponse:
        body = await read_body(request)
        try:
            verdict = parse_verdict(body)
        except IntakeError as exc:
            p.metrics.triggers.labels(source="verdict", outcome="invalid").inc()
            raise HTTPException(400, str(exc)) from None
        if verdict.model in p.controller.models:
            p.metrics.set_verdict(verdict.model, verdict.status, verdict.drift_share)
        result = await run_in_threadpool(take_verdict, p.store, body, verdict,
                                         models=set(p.controller.models), now=datetime.now(UTC))
        for source, outcome in result.counts:
            p.metrics.triggers.labels(source=source, outcome=outcome).inc()
        if result.trigger_ids:
            p.controller.wake.set()
        return JSONResponse(result.as_dict())

    async def manual(p: Parts, *, model: str, action: str, reason: str, actor: str,
                     version: int | None = None) -> JSONResponse:
        trigger_id = await run_in_threadpool(
            lambda: p.store.add_trigger(model=model, source="manual", action=action,
                                        reason=reason, actor=actor, version=version,
                                        now=datetime.now(UTC)))
        assert trigger_id is not None
        answer = await wait_for(p, trigger_id)
        return JSONResponse({"model": model, "action": action, **answer},
                            status_code=200 if answer["status"] != "pending" else 202)

    @app.post("/retrain")
    async def retrain(body: RetrainBody, _: Auth, p: Deps) -> JSONResponse:
        model = pick_model(p, body.model)
        return await manual(p, model=model, action="retrain", reason=body.reason,
                            actor=body.actor)

    @app.post("/promote")
    async def promote(body: PromoteBody, _: Auth, p: Deps) -> JSONResponse:
        model = pick_model(p, body.model)
        return await manual(p, model=model, action="promote", reason=body.reason,
                            actor=body.actor, version=body.version)

    @app.post("/rollback")
    async def rollback(body: RetrainBody, _: Auth, p: Deps) -> JSONResponse:
        model = pick_model(p, body.model)
        return await manual(p, model=model, action="rollback", reason=body.reason,
                            actor=body.actor)

    @app.get("/status")
    async def status(p: Deps) -> JSONResponse:
        data = await run_in_threadpool(p.controller.status)
        return JSONResponse(_jsonable(data))

    @app.get("/healthz")
    async def healthz(p: Deps) -> dict[str, Any]:
        return {"status": "ok", "models": sorted(p.controller.models)}

    @app.get("/metrics")
    async def metrics(p: Deps) -> Response:
        return Response(generate_latest(p.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
