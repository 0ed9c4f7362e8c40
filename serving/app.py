"""The serving app factory: ``create_app(settings, registry=None, log_writer=None,
metrics_registry=None)``. Nothing happens at import; the model is loaded in the lifespan.

Endpoints: POST /predict, /predict/batch, /feedback, /admin/reload; GET /healthz, /readyz,
/model, /metrics (docs/serving.md). Request bodies are parsed and validated by hand
against the version's schema (serving/schema.py): faster than a generic model, and every
refusal names its fields. ``app_from_env`` is the uvicorn factory for ``driftloop serve``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from kernel.errors import UsageError
from kernel.httpbody import BodyTooLarge, read_limited
from monitoring.predlog import LogStore, PredictionLogWriter
from registry.port import ModelRegistry
from serving.follower import ModelFollower
from serving.metrics import ServingMetrics, exposition, multiprocess_dir
from serving.middleware import RequestMetricsMiddleware
from serving.model import BundleCache, LoadedModel
from serving.schema import Observation, RecordError
from serving.settings import ServingSettings
from serving.shadow import ShadowLogger

log = logging.getLogger(__name__)

JSON = "application/json"


class HTTPProblem(Exception):
    def __init__(self, status: int, detail: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False), status,
                    media_type=JSON)


def _problem(exc: HTTPProblem) -> Response:
    body: dict[str, Any] = {"detail": exc.detail}
    if exc.errors:
        body["errors"] = exc.errors
    return _json(exc.status, body)


@dataclass
class ServingState:
    settings: ServingSettings
    metrics: ServingMetrics | None
    metrics_registry: CollectorRegistry
    registry: ModelRegistry | None = None
    writer: PredictionLogWriter | None = None
    follower: ModelFollower | None = None
    shadow: ShadowLogger | None = None
    _stop_sync: threading.Event = field(default_factory=threading.Event)

    @property
    def champion(self) -> LoadedModel | None:
        return self.follower.champion if self.follower else None

    def sync_log_metrics(self) -> None:
        """Bring the metrics up to date: the request tally, the log writer's totals."""
        if self.metrics:
            self.metrics.tally.fold()
        if self.metrics and self.writer:
            s = self.writer.stats
            self.metrics.sync_log_stats(s.rows_written, s.rows_dropped, s.last_flush_lag_seconds)

    def _sync_loop(self) -> None:
        while not self._stop_sync.wait(1.0):
            try:
                self.sync_log_metrics()
            except Exception:  # never let the metrics thread die: the next second retries
                log.exception("updating the metrics failed")

    def count_prediction(self, model: LoadedModel, score: float, prediction: int,
                         seen: Observation) -> None:
        m = self.metrics
        if m is None:
            return
        m.tally.prediction(model.version, prediction, score)
        if seen.unseen or seen.out_of_range or seen.missing:
            for feature in seen.unseen:
                m.unseen_category.labels(model.name, feature).inc()
            for feature in seen.out_of_range:
                m.out_of_range.labels(model.name, feature).inc()
            for feature in seen.missing:
                m.missing_values.labels(model.name, feature).inc()


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON; 413 over ``limit`` bytes, 400 when it is not JSON."""
    try:
        body = await read_limited(request, limit)
    except BodyTooLarge as exc:
        raise HTTPProblem(413, str(exc)) from None
    if not body:
        raise HTTPProblem(400, "empty request body: expected a JSON object")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HTTPProblem(400, f"malformed JSON: {exc}") from None


def create_app(settings: ServingSettings, registry: ModelRegistry | None = None,
               log_writer: PredictionLogWriter | None = None,
               metrics_registry: CollectorRegistry | None = None) -> FastAPI:
    if not settings.model:
        raise UsageError("no model to serve: set DRIFTLOOP_MODEL or pass --model NAME")
    name = settings.model
    metrics_registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
    metrics = ServingMetrics(metrics_registry, name) if settings.serving_metrics else None
    state = ServingState(settings, metrics, metrics_registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if registry is not None:
            state.registry = registry
        else:
            from registry import open_registry

            state.registry = await run_in_threadpool(open_registry, settings)
        if log_writer is not None:
            state.writer = log_writer.start()
        elif settings.serving_log:
            state.writer = PredictionLogWriter(
                LogStore(settings.resolved_log_uri), flush_interval=settings.log_flush_interval,
                sample_rate=settings.log_sample_rate).start()
        state.shadow = ShadowLogger(state.writer.append if state.writer else None, metrics,
                                    queue_size=settings.serving_shadow_queue).start()
        state.follower = ModelFollower(
            name, state.registry, BundleCache(settings.cache_dir, name,
                                              settings.serving_cache_versions),
            metrics=metrics, shadow=settings.serving_shadow,
            check_rows=settings.serving_check_rows, fast_path=settings.serving_fast_path,
            poll_interval=settings.serving_poll_interval,
            retry_interval=settings.serving_retry_interval)
        first = await run_in_threadpool(state.follower.refresh)
        log.info("startup: %s (%s)", first.outcome, first.detail)
        state.follower.start()
        sync = threading.Thread(target=state._sync_loop, name="log-metrics", daemon=True)
        sync.start()
        try:
            yield
        finally:
            state.follower.stop()
            state.shadow.close()
            if state.writer is not None:
                await run_in_threadpool(state.writer.close)
            state._stop_sync.set()
            state.sync_log_metrics()
            if multiprocess_dir() is not None:
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())
            log.info("stopped: %d log rows written",
                     state.writer.stats.rows_written if state.writer else 0)

    app = FastAPI(title="driftloop serving", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serving = state
    if metrics is not None:
        app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    limit = settings.serving_max_body_bytes
    threshold = 0.5

    def refused(route: str, exc: HTTPProblem | RecordError) -> Response:
        if metrics is not None:
            metrics.validation_errors.labels(route).inc()
        if isinstance(exc, RecordError):
            return _json(422, {"detail": f"invalid record: {exc}", "errors": exc.problems})
        return _problem(exc)

    def not_ready() -> Response:
        reason = (state.follower.last_error if state.follower else None) or "starting"
        return _json(503, {"detail": f"no model loaded yet: {reason}"})

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        model = state.champion
        if model is None:
            return not_ready()
        try:
            data = await read_json(request, limit)
            record, request_id = model.schema.parse(data)
        except (HTTPProblem, RecordError) as exc:
            return refused("/predict", exc)
        if model.fast is not None:
            score = model.fast.score(record)
        else:
            score = await run_in_threadpool(model.score_one, record)
        prediction = 1 if score > threshold else 0
        request_id = request_id or uuid.uuid4().hex
        state.count_prediction(model, score, prediction, model.schema.observe(record))
        row = {"ts": time.time(), "request_id": request_id, "model_name": model.name,
               "model_version": model.version, "score": score, "prediction": prediction,
               "shadow_version": None, "shadow_score": None,
               "latency_ms": (time.perf_counter() - started) * 1000.0, **record}
        state.shadow.submit([row], [record], state.follower.challenger)  # type: ignore[union-attr]
        return Response(json.dumps({"request_id": request_id, "prediction": prediction,
                                    "score": score, "model_version": model.version}),
                        media_type=JSON)

    @app.post("/predict/batch")
    async def predict_batch(request: Request) -> Response:
        started = time.perf_counter()
        model = state.champion
        if model is None:
            return not_ready()
        try:
            data = await read_json(request, limit)
            if not isinstance(data, dict) or not isinstance(data.get("records"), list):
                raise HTTPProblem(422, 'expected {"records": [ {...}, ... ]}')
            unknown = sorted(k for k in data if k != "records")
            if unknown:
                raise HTTPProblem(422, f"unknown fields: {unknown}",
                                  {k: "unknown field" for k in unknown[:10]})
            items = data["records"]
            if not items:
                raise HTTPProblem(422, "empty batch: send at least one record")
            if len(items) > settings.serving_batch_limit:
                raise HTTPProblem(413, f"batch of {len(items)} records is over the limit of "
                                  f"{settings.serving_batch_limit}")
            parsed, problems = [], {}
            for i, item in enumerate(items):
                try:
                    parsed.append(model.schema.parse(item, where=f"records[{i}]."))
                except RecordError as exc:
                    problems.update({f"records[{i}].{k}": v for k, v in exc.problems.items()})
                    if len(problems) >= 50:
                        break
            if problems:
                raise HTTPProblem(422, f"invalid records: {len(problems)} problem(s), "
                                  f"first: {next(iter(problems.items()))}", problems)
        except HTTPProblem as exc:
            return refused("/predict/batch", exc)
        records = [r for r, _ in parsed]
        scores = await run_in_threadpool(model.score_many, records)
        now = time.time()  # epoch seconds: the log converts them in bulk
        latency = (time.perf_counter() - started) * 1000.0
        out, rows = [], []
        for (record, rid), s in zip(parsed, scores, strict=True):
            score = float(s)
            prediction = 1 if score > threshold else 0
            rid = rid or uuid.uuid4().hex
            state.count_prediction(model, score, prediction, model.schema.observe(record))
            out.append({"request_id": rid, "prediction": prediction, "score": score})
            rows.append({"ts": now, "request_id": rid, "model_name": model.name,
                         "model_version": model.version, "score": score,
                         "prediction": prediction, "shadow_version": None,
                         "shadow_score": None, "latency_ms": latency, **record})
        state.shadow.submit(rows, records, state.follower.challenger)  # type: ignore[union-attr]
        return _json(200, {"model_version": model.version, "predictions": out})

    @app.post("/feedback")
    async def feedback(request: Request) -> Response:
        try:
            data = await read_json(request, limit)
            labels = parse_feedback(data)
        except HTTPProblem as exc:
            return refused("/feedback", exc)
        if state.writer is None:
            return _json(503, {"detail": "the prediction log is disabled "
                                         "(DRIFTLOOP_SERVING_LOG=false)"})
        for request_id, label in labels:
            state.writer.append_label(request_id, label)
        return _json(202, {"accepted": len(labels)})

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> Response:
        token = settings.admin_token
        given = request.headers.get("authorization", "")
        if not token:
            return _json(401, {"detail": "reload is disabled: DRIFTLOOP_ADMIN_TOKEN is not set"})
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _json(401, {"detail": "missing or wrong bearer token"})
        if state.follower is None:
            return _json(503, {"detail": "starting"})
        result = await run_in_threadpool(state.follower.refresh)
        status = {"rejected": 409, "error": 503}.get(result.outcome, 200)
        return _json(status, {"outcome": result.outcome, "version": result.version,
                              "detail": result.detail})

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json(200, {"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        model = state.champion
        if model is None:
            reason = (state.follower.last_error if state.follower else None) or "starting"
            return _json(503, {"status": "not ready", "reason": reason})
        return _json(200, {"status": "ready", "model": model.name, "version": model.version})

    @app.get("/model")
    async def model_info() -> Response:
        if state.follower is None:
            return _json(503, {"detail": "starting"})
        return _json(200, state.follower.describe())

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        state.sync_log_metrics()
        body, content_type = exposition(state.metrics_registry)
        return Response(body, media_type=content_type)

    return app


def parse_feedback(data: Any) -> list[tuple[str, Any]]:
    """``{"request_id", "label"}`` or ``{"labels": [...]}`` -> [(request_id, label)]."""
    if isinstance(data, dict) and "labels" in data:
        items = data["labels"]
        extra = sorted(k for k in data if k != "labels")
        if extra:
            raise HTTPProblem(422, f"unknown fields: {extra}")
        if not isinstance(items, list) or not items:
            raise HTTPProblem(422, '"labels" must be a non-empty array')
    else:
        items = [data]
    out, problems = [], {}
    for i, item in enumerate(items):
        where = f"labels[{i}]." if len(items) > 1 or "labels" in (data or {}) else ""
        if not isinstance(item, dict):
            problems[f"{where}item"] = "expected an object with request_id and label"
            continue
        rid, label = item.get("request_id"), item.get("label", ...)
        if not isinstance(rid, str) or not rid or len(rid) > 128:
            problems[f"{where}request_id"] = "required: a non-empty string (max 128 chars)"
        if label is ... or label is None:
            problems[f"{where}label"] = "required"
        elif not isinstance(label, str | int | float | bool) or (
                isinstance(label, float) and not math.isfinite(label)):
            problems[f"{where}label"] = "expected a string, number or boolean"
        extra = sorted(k for k in item if k not in ("request_id", "label"))
        for k in extra[:5]:
            problems[f"{where}{k}"] = "unknown field"
        if not problems and isinstance(rid, str):
            out.append((rid, label))
    if problems:
        raise HTTPProblem(422, f"invalid feedback: {len(problems)} problem(s)", problems)
    return out


def app_from_env() -> FastAPI:
    """uvicorn factory (``driftloop serve``): settings from the environment."""
    return create_app(ServingSettings())
