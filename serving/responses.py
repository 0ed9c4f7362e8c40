"""JSON answers and refusals of the serving app, and the JSON body reader.

Every refusal is ``{"detail": ..., "errors": {field: reason}}`` (``errors`` when fields are
named); ``HTTPProblem`` carries one out of a dependency or a parser to the app's handler.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response

from kernel.httpbody import BodyTooLarge, BodyTooSlow, read_limited

JSON = "application/json"


class HTTPProblem(Exception):
    def __init__(self, status: int, detail: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors


def json_response(status: int, body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False), status,
                    media_type=JSON)


def problem_response(exc: HTTPProblem) -> Response:
    body: dict[str, Any] = {"detail": exc.detail}
    if exc.errors:
        body["errors"] = exc.errors
    return json_response(exc.status, body)


async def problem_handler(request: Request, exc: Exception) -> Response:
    """The app's handler for an ``HTTPProblem`` raised in a dependency."""
    assert isinstance(exc, HTTPProblem)
    return problem_response(exc)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 over ``limit`` bytes, 408 when it was cut off unfinished."""
    try:
        return await read_limited(request, limit)
    except BodyTooLarge as exc:
        raise HTTPProblem(413, str(exc)) from None
    except BodyTooSlow as exc:
        raise HTTPProblem(408, str(exc)) from None


def parse_json(body: bytes) -> Any:
    """The body as JSON; 400 when it is empty, not UTF-8, not JSON or nested too deep."""
    if not body:
        raise HTTPProblem(400, "empty request body: expected a JSON object")
    try:
        return json.loads(body)
    except RecursionError:
        raise HTTPProblem(400, "malformed JSON: nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise HTTPProblem(400, f"malformed JSON: {exc}") from None


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON; 413 over ``limit`` bytes, 408 when too slow, 400 when not JSON."""
    return parse_json(await read_body(request, limit))
