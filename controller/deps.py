"""The controller app's dependencies, in one place (as in full-stack-fastapi-template's
``deps.py``): settings, the assembled parts and their pieces, the token check and the body.

The parts live on ``app.state`` (set by the lifespan); nothing here is global. ``RawBody``
depends on ``Authorized``, so a mutating route that takes the body can never read it before
the token was checked.
"""

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.metrics import ControllerMetrics
from controller.parts import Parts
from controller.reconcile import Controller
from controller.settings import ControllerSettings
from controller.store import Store
from kernel.httpbody import BodyTooLarge, BodyTooSlow, read_limited
from registry import ModelRegistry


def get_settings(request: Request) -> ControllerSettings:
    settings: ControllerSettings = request.app.state.settings
    return settings


def get_parts(request: Request) -> Parts:
    parts: Parts = request.app.state.parts
    return parts


SettingsDep = Annotated[ControllerSettings, Depends(get_settings)]
PartsDep = Annotated[Parts, Depends(get_parts)]


def get_controller(parts: PartsDep) -> Controller:
    return parts.controller


def get_store(parts: PartsDep) -> Store:
    return parts.store


def get_metrics(parts: PartsDep) -> ControllerMetrics:
    return parts.metrics


ControllerDep = Annotated[Controller, Depends(get_controller)]
StoreDep = Annotated[Store, Depends(get_store)]
MetricsDep = Annotated[ControllerMetrics, Depends(get_metrics)]


def get_registry(controller: ControllerDep) -> ModelRegistry:
    return controller.registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


def get_manual_wait(request: Request) -> float:
    """How long a manual command waits for the loop to take it before answering 202."""
    wait: float = request.app.state.manual_wait_seconds
    return wait


ManualWaitDep = Annotated[float, Depends(get_manual_wait)]


#: Declares the scheme in /openapi.json; reads the header only (never the body), refuses nothing
#: itself: require_token does, with one answer for every way of getting it wrong.
bearer = HTTPBearer(auto_error=False, description="DRIFTLOOP_CONTROLLER_TOKEN")


def require_token(settings: SettingsDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """401 unless ``Authorization: Bearer <DRIFTLOOP_CONTROLLER_TOKEN>`` (none set: always)."""
    expected = settings.controller_token
    token = credentials.credentials if credentials is not None else ""
    if not expected or not secrets.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


Authorized = Annotated[None, Depends(require_token)]


async def read_body(request: Request, settings: SettingsDep, _: Authorized) -> bytes:
    """The body once the token is checked, refused with 413 past
    ``controller_max_body_bytes`` (never read whole) and 408 when the server cut it off
    unfinished (``DRIFTLOOP_HTTP_BODY_TIMEOUT_SECONDS``)."""
    try:
        return await read_limited(request, settings.controller_max_body_bytes)
    except BodyTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except BodyTooSlow as exc:
        raise HTTPException(408, str(exc)) from None


RawBody = Annotated[bytes, Depends(read_body)]
