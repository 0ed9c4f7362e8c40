"""The controller's HTTP routes: intake (webhooks, verdicts), overrides (retrain, promote,
rollback) and reads (status, health, metrics).

A mutating route takes ``RawBody`` (controller.deps): the token is checked first, then at most
``controller_max_body_bytes`` are read, then the bytes are validated (400 or 422 with a reason).
Overrides are checked against the registry before they are accepted: an override that cannot
happen is refused (404, 409; 503 when the registry cannot say), never recorded.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller import compat, webhooks
from controller.bodies import (
    ErrorAnswer,
    HealthAnswer,
    IntakeAnswer,
    ManualAnswer,
    PromoteRequest,
    RetrainRequest,
    RollbackRequest,
    ValidationAnswer,
    request_body,
    validate,
)
from controller.deps import (
    Authorized,
    Caller,
    ControllerDep,
    DeliveriesDep,
    ManualWaitDep,
    MetricsDep,
    PartsDep,
    RawBody,
    RegistryDep,
    SettingsDep,
    SignedBody,
    actor_of,
)
from controller.evidence import ModelCache
from controller.intake import (
    AlertmanagerPayload,
    IntakeError,
    IntakeResult,
    parse_verdict,
    take_alertmanager,
    take_verdict,
)
from controller.metrics import ControllerMetrics
from controller.parts import Parts
from controller.store import Store
from monitoring.verdict import Verdict
from registry import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    ALIAS_PREVIOUS,
    ModelRegistry,
    RegistryError,
    VersionNotFound,
)
from registry.port import version_label

T = TypeVar("T")
log = logging.getLogger(__name__)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorAnswer, "description": description}


REFUSED: dict[int | str, dict[str, Any]] = {
    401: _error("Missing or wrong bearer token: nothing was read."),
    408: _error("The body did not arrive whole within DRIFTLOOP_HTTP_BODY_TIMEOUT_SECONDS."),
    413: _error("The body is over DRIFTLOOP_CONTROLLER_MAX_BODY_BYTES."),
}
INTAKE: dict[int | str, dict[str, Any]] = {
    200: {"model": IntakeAnswer, "description": "Recorded: what each alert or judgement did."},
    400: _error("Malformed payload, with the reason."), **REFUSED}
MANUAL: dict[int | str, dict[str, Any]] = {
    200: {"model": ManualAnswer, "description": "Taken by the controller."},
    202: {"model": ManualAnswer, "description": "Accepted, not taken yet."},
    400: _error("Several models are managed: say which."),
    403: _error("The body's actor names another configured identity (only its own token "
                "acts as it)."),
    404: _error("The model is not managed here, or the version does not exist."),
    422: {"model": ValidationAnswer, "description": "The body does not validate."},
    503: _error("The registry could not be asked: retry later."), **REFUSED}
OVERRIDE: dict[int | str, dict[str, Any]] = {
    **MANUAL, 409: _error("The override cannot happen (already champion, no @previous).")}

intake = APIRouter(tags=["intake"])
overrides = APIRouter(tags=["overrides"])
reads = APIRouter(tags=["reads"])


def _counted(result: IntakeResult, parts: Parts) -> JSONResponse:
    for source, outcome in result.counts:
        parts.metrics.triggers.labels(source=source, outcome=outcome).inc()
    if result.trigger_ids:
        parts.controller.wake.set()
    return JSONResponse(result.as_dict())


def _invalid(metrics: ControllerMetrics, source: str, exc: IntakeError) -> HTTPException:
    metrics.triggers.labels(source=source, outcome="invalid").inc()
    return HTTPException(400, str(exc))


@intake.post("/webhooks/alertmanager", response_model=None, responses=INTAKE,
             openapi_extra=request_body(AlertmanagerPayload))
async def alertmanager(body: RawBody, p: PartsDep) -> JSONResponse:
    """An Alertmanager webhook (payload version 4): acts on ``driftloop_action`` labels."""
    try:
        # About a millisecond of SQLite work: done on the event loop, because handing it
        # to the thread pool costs more (GIL and lock hand-offs) than it saves.
        result = take_alertmanager(p.store, body, models=set(p.controller.models),
                                   now=p.controller.clock())
    except IntakeError as exc:
        raise _invalid(p.metrics, "alertmanager", exc) from None
    return _counted(result, p)


@intake.post("/verdicts", response_model=None, responses=INTAKE,
             openapi_extra=request_body(Verdict))
async def verdicts(body: RawBody, p: PartsDep) -> JSONResponse:
    """A drift verdict (``driftloop drift-check``): drift retrains, performance is recorded."""
    try:
        verdict = parse_verdict(body)
    except IntakeError as exc:
        raise _invalid(p.metrics, "verdict", exc) from None
    if verdict.model in p.controller.models:
        p.metrics.set_verdict(verdict.model, verdict.status, verdict.drift_share,
                              verdict.drift_level)
    result = await run_in_threadpool(take_verdict, p.store, body, verdict,
                                     models=set(p.controller.models), now=p.controller.clock())
    return _counted(result, p)


def pick_model(managed: dict[str, Any], model: str | None) -> str:
    """The model a manual command is for: 400 when ambiguous, 404 when not managed here."""
    if model is None:
        if len(managed) == 1:
            return next(iter(managed))
        raise HTTPException(400, f"say which model: one of {sorted(managed)}")
    if model not in managed:
        raise HTTPException(404, f"model {model!r} is not managed here "
                            f"(managed: {sorted(managed)})")
    return model


async def ask_registry(fn: Callable[[], T]) -> T:
    """A registry read at request time; an outage is a 503 with the reason (retry later)."""
    try:
        return await run_in_threadpool(fn)
    except VersionNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except RegistryError as exc:
        raise HTTPException(503, f"the registry could not be asked: {exc}",
                            headers={"Retry-After": "30"}) from None


async def check_promote(registry: ModelRegistry, model: str, version: int) -> int | None:
    """The current champion, once ``version`` is known to exist and not to be it."""
    await ask_registry(lambda: registry.get_version(model, version))
    champion = (await ask_registry(lambda: registry.aliases(model))).get(ALIAS_CHAMPION)
    if champion == version:
        raise HTTPException(409, f"v{version} is already champion of {model}")
    return champion


async def check_schema(cache: ModelCache, model: str, champion: int | None, version: int,
                       allowed: tuple[str, ...]) -> str:
    """409 unless ``version`` accepts every request the champion accepts, or the operator's
    ``allow_schema_change`` names each change (controller/compat.py); what the decision's
    reason records about it ("" when there is nothing to say)."""
    if champion is None:
        return ""
    try:
        schema = await ask_registry(lambda: compat.check(cache.bundle(model, champion),
                                                         cache.bundle(model, version)))
    except HTTPException:
        raise
    except Exception as exc:  # a version without a readable spec: the human decides, noted
        log.warning("schema of %s v%s vs v%s not checked: %s", model, version, champion, exc)
        return f" [schema not checked: {str(exc)[:200]}]"
    missing = schema.unacknowledged(allowed)
    unknown = sorted(set(allowed) - set(schema.names))
    if missing or unknown:
        problems = [f"allow_schema_change does not name {', '.join(c.name for c in missing)}"
                    ] if allowed and missing else []
        if unknown:
            problems.append(f"allow_schema_change names {', '.join(unknown)}, which "
                            f"v{version} does not change")
        problems.append(schema.reason(version, champion) if schema.changes else
                        f"v{version} accepts every request champion v{champion} accepts")
        raise HTTPException(409, "; ".join(problems))
    return (f" [schema change allowed by the operator: {', '.join(schema.names)}]"
            if schema.changes else "")


async def check_rollback(registry: ModelRegistry, model: str) -> None:
    aliases = await ask_registry(lambda: registry.aliases(model))
    if aliases.get(ALIAS_PREVIOUS) is None:
        raise HTTPException(409, f"{model} has no @previous version to roll back to")


async def wait_for(store: Store, trigger_id: int, seconds: float) -> dict[str, Any]:
    """The trigger once the loop took it, or ``pending`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    row = None
    while time.monotonic() < deadline:
        row = await run_in_threadpool(store.get_trigger, trigger_id)
        if row is not None and row.status != "pending":
            break
        await asyncio.sleep(0.05)
    if row is None or row.status == "pending":
        return {"trigger_id": trigger_id, "status": "pending",
                "detail": "accepted; the controller has not taken it yet"}
    return {"trigger_id": trigger_id, "status": row.status, "outcome": row.outcome,
            "cycle_id": row.cycle_id}


def who(caller: Caller, body: RetrainRequest) -> tuple[str, str]:
    """The actor the override records and its reason (controller.deps.actor_of has the rule);
    a per-person token's body naming someone else (no token of their own) is noted."""
    asked = body.actor if "actor" in body.model_fields_set else None
    actor = actor_of(caller, asked)
    note = f" [sent as actor {asked!r}]" if asked is not None and asked != actor else ""
    return actor, body.reason + note


async def manual(p: Parts, wait: float, *, model: str, action: str, body: RetrainRequest,
                 caller: Caller, version: int | None = None) -> JSONResponse:
    """Record the command, wake the loop, answer with what it did (202 while pending)."""
    actor, reason = who(caller, body)
    trigger_id = await run_in_threadpool(
        lambda: p.store.add_trigger(model=model, source="manual", action=action,
                                    reason=reason, actor=actor, version=version,
                                    now=p.controller.clock()))
    assert trigger_id is not None
    p.controller.wake.set()
    answer = await wait_for(p.store, trigger_id, wait)
    return JSONResponse({"model": model, "action": action, **answer},
                        status_code=200 if answer["status"] != "pending" else 202)


@overrides.post("/retrain", response_model=None, responses=MANUAL,
                openapi_extra=request_body(RetrainRequest))
async def retrain(raw: RawBody, p: PartsDep, wait: ManualWaitDep,
                  caller: Authorized) -> JSONResponse:
    """Emergency manual retrain: skips the cooldown, never two at once, still gated."""
    body = validate(RetrainRequest, raw)
    model = pick_model(p.controller.models, body.model)
    return await manual(p, wait, model=model, action="retrain", body=body, caller=caller)


@overrides.post("/promote", response_model=None, responses=OVERRIDE,
                openapi_extra=request_body(PromoteRequest))
async def promote(raw: RawBody, p: PartsDep, registry: RegistryDep,
                  wait: ManualWaitDep, caller: Authorized) -> JSONResponse:
    """Audited override: point @champion at ``version`` (the old one kept as @previous).
    A version that would refuse requests the champion accepts is refused (409, the changes
    named) unless ``allow_schema_change`` names every change; the decision's reason then
    records them."""
    body = validate(PromoteRequest, raw)
    who(caller, body)                           # 403 before anything is asked
    model = pick_model(p.controller.models, body.model)
    champion = await check_promote(registry, model, body.version)
    note = await check_schema(p.controller.evaluator.cache, model, champion, body.version,
                              body.allowed_changes())
    if note:
        body = body.model_copy(update={"reason": body.reason + note})
    return await manual(p, wait, model=model, action="promote", body=body,
                        caller=caller, version=body.version)


@overrides.post("/rollback", response_model=None, responses=OVERRIDE,
                openapi_extra=request_body(RollbackRequest))
async def rollback(raw: RawBody, p: PartsDep, registry: RegistryDep,
                   wait: ManualWaitDep, caller: Authorized) -> JSONResponse:
    """Audited override: point @champion back at @previous."""
    body = validate(RollbackRequest, raw)
    model = pick_model(p.controller.models, body.model)
    await check_rollback(registry, model)
    return await manual(p, wait, model=model, action="rollback", body=body, caller=caller)


WEBHOOK: dict[int | str, dict[str, Any]] = {
    200: {"description": "Verified: recorded, a repeat (``duplicate``) or not read "
          "(``ignored``).", "content": {"application/json": {"schema": {"type": "object"}}}},
    400: _error("A missing or malformed header or body, with the reason."),
    401: _error("No DRIFTLOOP_CONTROLLER_MLFLOW_WEBHOOK_SECRET, a wrong signature or a stale "
                "X-MLflow-Timestamp."),
    408: REFUSED[408], 413: REFUSED[413]}


# Not in /openapi.json: its one client is MLflow's server, which signs instead of sending a
# bearer token (every documented mutating route answers 401 to a wrong token; this one
# cannot); docs/controller.md documents it, tests/unit/test_controller_webhooks.py tests it.
@intake.post("/webhooks/mlflow", response_model=None, responses=WEBHOOK,
             include_in_schema=False)
async def mlflow_webhook(request: Request, body: SignedBody, p: PartsDep,
                         settings: SettingsDep, seen: DeliveriesDep,
                         background: BackgroundTasks) -> JSONResponse:
    """An MLflow registry webhook (``model_version_alias.created`` / ``.deleted``), HMAC-signed
    with DRIFTLOOP_CONTROLLER_MLFLOW_WEBHOOK_SECRET: the move is checked against driftloop's
    records on the next reconcile pass (a foreign one is recorded once), and serving is told
    to reload at once when @champion or @challenger moved."""
    now = datetime.now(UTC)  # the wall clock, always: MLflow signs its deliveries with it
    tolerance = settings.controller_mlflow_webhook_tolerance_seconds
    try:
        delivery_id, at = webhooks.verify(dict(request.headers), body,
                                          secret=settings.controller_mlflow_webhook_secret,
                                          now=now, tolerance=tolerance)
        event = webhooks.parse(body, delivery_id, at)
    except webhooks.WebhookRefused as exc:
        p.metrics.triggers.labels(source="mlflow", outcome="invalid").inc()
        raise HTTPException(exc.status, str(exc)) from None
    if not seen.first_time(delivery_id, now.timestamp(), 2 * tolerance):
        p.metrics.triggers.labels(source="mlflow", outcome="duplicate").inc()
        return JSONResponse({"status": "duplicate", "delivery_id": delivery_id})
    if event is None or event.model not in p.controller.models:
        p.metrics.triggers.labels(source="mlflow", outcome="ignored").inc()
        return JSONResponse({"status": "ignored", "delivery_id": delivery_id})
    p.controller.foreign.reported(event)
    p.controller.wake.set()
    reloader = p.controller.reloader
    reload = event.alias in (ALIAS_CHAMPION, ALIAS_CHALLENGER) and reloader is not None \
        and bool(reloader.url)
    if reload and reloader is not None:
        background.add_task(run_in_threadpool, reloader.reload)
    p.metrics.triggers.labels(source="mlflow", outcome="accepted").inc()
    log.info("MLflow webhook %s: %s@%s -> %s", delivery_id, event.model, event.alias,
             version_label(event.version))
    return JSONResponse({"status": "accepted", "delivery_id": delivery_id,
                         "serving_reload": reload})


@reads.get("/status", response_model=None,
           responses={200: {"description": "Per model: state, aliases, cycle, decisions.",
                            "content": {"application/json": {"schema": {"type": "object"}}}}})
async def status(controller: ControllerDep) -> JSONResponse:
    """Champion, challenger, controller state and the last decisions, per model."""
    data = await run_in_threadpool(controller.status)
    return JSONResponse(_jsonable(data))


@reads.get("/healthz", response_model=HealthAnswer)
async def healthz(controller: ControllerDep) -> dict[str, Any]:
    return {"status": "ok", "models": sorted(controller.models)}


@reads.get("/metrics", response_class=Response,
           responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                            "description": "Prometheus text format."}})
async def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


ROUTERS = (intake, overrides, reads)
