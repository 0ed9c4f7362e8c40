"""The controller's HTTP face: ``create_app(settings, ...)``.

Intake endpoints validate, persist and answer fast; the reconcile loop (a thread started in
the lifespan) acts. Every mutating endpoint needs ``Authorization: Bearer <token>``
(``DRIFTLOOP_CONTROLLER_TOKEN``); without the right one the answer is 401 and nothing is
read or written. The routes are in ``controller.routes``, their dependencies in
``controller.deps``, the bodies in ``controller.bodies``, the assembly in ``controller.parts``.
"""

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry

from controller.bodies import PromoteBody, RetrainBody, add_body_schemas
from controller.metrics import ControllerMetrics
from controller.parts import Parts, build_controller, load_models, make_launcher
from controller.routes import ROUTERS
from controller.settings import ControllerSettings

log = logging.getLogger(__name__)

__all__ = ["Parts", "PromoteBody", "RetrainBody", "build_controller", "create_app",
           "load_models", "make_launcher"]


def _lifespan(parts: Parts | None, run_loop: bool, metrics_registry: CollectorRegistry | None,
              ) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings: ControllerSettings = app.state.settings
        built = parts or build_controller(
            settings, metrics=ControllerMetrics.create(metrics_registry or CollectorRegistry()))
        app.state.parts = built
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

    return lifespan


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The document, with the hand-read request bodies registered as components."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_body_schemas(get_openapi(
                title=app.title, version=app.version, routes=app.routes))
        return app.openapi_schema

    return openapi


def create_app(settings: ControllerSettings | None = None, *, parts: Parts | None = None,
               run_loop: bool = True, metrics_registry: CollectorRegistry | None = None,
               manual_wait_seconds: float = 10.0) -> FastAPI:
    app = FastAPI(title="driftloop controller",
                  lifespan=_lifespan(parts, run_loop, metrics_registry))
    app.state.settings = settings or ControllerSettings()
    app.state.manual_wait_seconds = manual_wait_seconds
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
