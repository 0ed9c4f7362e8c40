"""The controller app's dependencies, in one place (as in full-stack-fastapi-template's
``deps.py``): settings, the assembled parts and their pieces, the token check and the body.

The parts live on ``app.state`` (set by the lifespan); nothing here is global. ``RawBody``
depends on ``Authorized``, so a mutating route that takes the body can never read it before
the token was checked.
"""

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.metrics import ControllerMetrics
from controller.parts import Parts
from controller.reconcile import Controller
from controller.settings import ControllerSettings
from controller.store import Store
from controller.webhooks import SeenDeliveries
from kernel.errors import UsageError
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
bearer = HTTPBearer(auto_error=False, description="DRIFTLOOP_CONTROLLER_TOKEN, or a person's "
                    "token from DRIFTLOOP_CONTROLLER_TOKENS")


@dataclass(frozen=True)
class Caller:
    """Who holds the token: ``name`` for a per-person token (DRIFTLOOP_CONTROLLER_TOKENS),
    None for the shared DRIFTLOOP_CONTROLLER_TOKEN."""

    name: str | None
    known: frozenset[str]            # every configured name (none may be impersonated)


def parse_tokens(text: str, where: str) -> dict[str, str]:
    """``name:token`` pairs (commas or lines; ``#`` comments) as {token: name}; a malformed
    pair, an empty name or token, or a name or token given twice is a one-line UsageError
    that never shows a token."""
    out: dict[str, str] = {}
    items = [i.split("#", 1)[0].strip() for line in text.splitlines() for i in line.split(",")]
    for n, item in enumerate(i for i in items if i):
        name, sep, token = item.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise UsageError(f"{where}: entry {n + 1} is not name:token")
        if token in out or name in out.values():
            raise UsageError(f"{where}: {'name ' + repr(name) if name in out.values() else 'a token'}"
                             " is given twice")
        out[token] = name
    return out


def load_tokens(settings: ControllerSettings) -> dict[str, str]:
    """Every per-person token, {token: name}: DRIFTLOOP_CONTROLLER_TOKENS, then the file."""
    tokens = parse_tokens(settings.controller_tokens or "", "DRIFTLOOP_CONTROLLER_TOKENS")
    path = settings.controller_tokens_file
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"DRIFTLOOP_CONTROLLER_TOKENS_FILE {path}: {exc.strerror}") from None
        more = parse_tokens(text, f"DRIFTLOOP_CONTROLLER_TOKENS_FILE {path}")
        clash = set(more) & set(tokens) or set(more.values()) & set(tokens.values())
        if clash:
            raise UsageError(f"DRIFTLOOP_CONTROLLER_TOKENS_FILE {path}: a name or token is "
                             "also in DRIFTLOOP_CONTROLLER_TOKENS")
        tokens.update(more)
    if settings.controller_token and settings.controller_token in tokens:
        raise UsageError("DRIFTLOOP_CONTROLLER_TOKEN is also a per-person token")
    return tokens


def get_tokens(request: Request, settings: SettingsDep) -> dict[str, str]:
    """The per-person tokens, read once per app (kept on ``app.state``)."""
    tokens: dict[str, str] | None = getattr(request.app.state, "tokens", None)
    if tokens is None:
        tokens = request.app.state.tokens = load_tokens(settings)
    return tokens


def require_token(settings: SettingsDep, tokens: Annotated[dict[str, str], Depends(get_tokens)],
                  credentials: Annotated[
                      HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    """401 unless ``Authorization: Bearer`` holds the shared DRIFTLOOP_CONTROLLER_TOKEN or a
    per-person token (none set: always). Every token is compared in constant time."""
    token = (credentials.credentials if credentials is not None else "").encode()
    known = frozenset(tokens.values())
    found: Caller | None = None
    for candidate, name in tokens.items():   # no early exit: the time says nothing
        if secrets.compare_digest(token, candidate.encode()):
            found = Caller(name, known)
    shared = settings.controller_token
    if shared and secrets.compare_digest(token, shared.encode()):
        found = Caller(None, known)
    if found is None or not token:
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    return found


def actor_of(caller: Caller, asked: str | None) -> str:
    """The actor an override records. A per-person token acts as its own name: ``asked``
    (the body's ``actor``) may repeat it or name someone who has no token here (kept in the
    reason by the route), never another configured name (403). The shared token records
    ``asked`` or ``operator``, and may not name a configured person either (403)."""
    if asked is not None and asked != caller.name and asked in caller.known:
        raise HTTPException(403, f"actor {asked!r} has a token of its own: only that token "
                            "acts as it")
    if caller.name is not None:
        return caller.name
    return asked or "operator"


Authorized = Annotated[Caller, Depends(require_token)]


async def read_body(request: Request, settings: SettingsDep, _: Authorized) -> bytes:
    """The body once the token is checked, refused with 413 past
    ``controller_max_body_bytes`` (never read whole) and 408 when the server cut it off
    unfinished (``DRIFTLOOP_HTTP_BODY_TIMEOUT_SECONDS``)."""
    return await read_signed_body(request, settings)


RawBody = Annotated[bytes, Depends(read_body)]


async def read_signed_body(request: Request, settings: SettingsDep) -> bytes:
    """A webhook's body, for a route whose caller proves itself by a signature over it (no
    bearer token): read within ``controller_max_body_bytes`` (413) and the body timeout
    (408), then verified before anything in it is parsed."""
    try:
        return await read_limited(request, settings.controller_max_body_bytes)
    except BodyTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except BodyTooSlow as exc:
        raise HTTPException(408, str(exc)) from None


SignedBody = Annotated[bytes, Depends(read_signed_body)]


def get_deliveries(request: Request) -> SeenDeliveries:
    """The MLflow webhook deliveries seen by this app (replays are answered, not acted on)."""
    seen: SeenDeliveries | None = getattr(request.app.state, "mlflow_deliveries", None)
    if seen is None:
        seen = request.app.state.mlflow_deliveries = SeenDeliveries()
    return seen


DeliveriesDep = Annotated[SeenDeliveries, Depends(get_deliveries)]
