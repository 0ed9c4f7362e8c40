"""GET /healthz (alive), /readyz (a champion loaded), /model (what is live), /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from serving.bodies import NotReady, Ready, Status, problem
from serving.deps import StateDep
from serving.metrics import exposition
from serving.responses import json_response

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=None, responses={200: {"model": Status}})
async def healthz() -> Response:
    return json_response(200, {"status": "ok"})


_NOT_READY = ("No champion loaded yet, or the prediction log cannot be written "
              "(DRIFTLOOP_LOG_FAILURE_MODE=unready).")


@router.get("/readyz", response_model=None,
            responses={200: {"model": Ready}, 503: {"model": NotReady, "description": _NOT_READY}})
async def readyz(state: StateDep) -> Response:
    model = state.champion
    if model is None:
        return json_response(503, {"status": "not ready", "reason": state.not_ready_reason})
    log_problem = state.log_unready_reason()
    if log_problem is not None:
        return json_response(503, {"status": "not ready", "reason": log_problem})
    return json_response(200, {"status": "ready", "model": model.name, "version": model.version})


@router.get("/model", response_model=None,
            responses={200: {"model": dict[str, Any], "description": "Champion, challenger, "
                             "rejected versions, registry reachability, last error."},
                       503: problem("Starting.")})
async def model_info(state: StateDep) -> Response:
    if state.follower is None:
        return json_response(503, {"detail": "starting"})
    return json_response(200, state.follower.describe())


@router.get("/metrics", response_model=None, response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text exposition.",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(state: StateDep) -> Response:
    state.sync_log_metrics()
    body, content_type = exposition(state.metrics_registry)
    return Response(body, media_type=content_type)
