"""The serving app factory: ``create_app(settings, registry=None, log_writer=None,
metrics_registry=None)``. Nothing happens at import; the model is loaded in the lifespan.

Endpoints (serving/api/): POST /predict, /predict/batch, /feedback, /admin/reload; GET
/healthz, /readyz, /model, /metrics (docs/serving.md). Request bodies are parsed and
validated by hand against the version's schema (serving/schema.py): faster than a generic
model, and every refusal names its fields; the pydantic models of serving/bodies.py
document them in /openapi.json. ``app_from_env`` is the uvicorn factory for ``driftloop
serve``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from kernel.errors import UsageError
from monitoring.predlog import PredictionLogWriter
from registry.port import ModelRegistry
from serving.api import routers
from serving.metrics import ServingMetrics
from serving.middleware import RequestMetricsMiddleware
from serving.responses import HTTPProblem, problem_handler
from serving.settings import ServingSettings
from serving.state import ServingState


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the champion and start the threads before the first request; on shutdown
    (SIGTERM included) drain the shadow queue and close the log."""
    state: ServingState = app.state.serving
    await state.start()
    try:
        yield
    finally:
        await state.stop()


def create_app(settings: ServingSettings, registry: ModelRegistry | None = None,
               log_writer: PredictionLogWriter | None = None,
               metrics_registry: CollectorRegistry | None = None) -> FastAPI:
    if not settings.model:
        raise UsageError("no model to serve: set DRIFTLOOP_MODEL or pass --model NAME")
    metrics_registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
    metrics = ServingMetrics(metrics_registry, settings.model) if settings.serving_metrics \
        else None
    app = FastAPI(title="driftloop serving", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serving = ServingState(settings, metrics, metrics_registry, registry=registry,
                                     writer=log_writer)
    app.add_exception_handler(HTTPProblem, problem_handler)
    for router in routers:  # the routes themselves: see serving/api/__init__.py
        app.router.routes.extend(router.routes)
    if metrics is not None:
        app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``driftloop serve``): settings from the environment."""
    return create_app(ServingSettings())
