"""POST /admin/reload: check the aliases now (the controller calls it after moving one)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from serving.bodies import ReloadResult, problem
from serving.deps import AdminCaller, StateDep
from serving.responses import json_response

router = APIRouter(tags=["admin"])
RESULT = {"model": ReloadResult}


@router.post("/admin/reload", response_model=None, dependencies=[AdminCaller],
             responses={200: {**RESULT, "description": "loaded or unchanged"},
                        401: problem("Reload disabled (no DRIFTLOOP_ADMIN_TOKEN), or a missing "
                                     "or wrong bearer token."),
                        409: {**RESULT, "description": "rejected: the version failed its "
                              "load check; the old one keeps serving"},
                        503: {"description": "error (e.g. the registry is down), or starting",
                              "content": {"application/json": {"schema": {"anyOf": [
                                  {"$ref": "#/components/schemas/ReloadResult"},
                                  {"$ref": "#/components/schemas/Problem"}]}}}}})
async def admin_reload(state: StateDep) -> Response:
    if state.follower is None:
        return json_response(503, {"detail": "starting"})
    result = await run_in_threadpool(state.follower.refresh)
    status = {"rejected": 409, "error": 503}.get(result.outcome, 200)
    return json_response(status, {"outcome": result.outcome, "version": result.version,
                                  "detail": result.detail})
