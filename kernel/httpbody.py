"""Reading a request body with a size limit, shared by the serving app and the controller."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import ClientDisconnect


class BodyTooLarge(Exception):
    """The body is over the limit; the message says so with the numbers (for a 413)."""


class BodyTooSlow(Exception):
    """The body did not arrive whole: the client went away or was cut off (for a 408)."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, refused past ``limit`` bytes: by its Content-Length when it declares
    one, and otherwise while streaming, so an oversized body is never held in memory.

    The body's deadline is the server's (kernel/httpserver.py cuts off a body that has not
    arrived in time, answering 408): here that shows as the client going away mid-body,
    ``BodyTooSlow``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BodyTooSlow(f"the connection closed after {size} bytes of the body") from None
    return b"".join(chunks)
