"""Reading a request body with a size limit, shared by the serving app and the controller."""

from __future__ import annotations

from fastapi import Request


class BodyTooLarge(Exception):
    """The body is over the limit; the message says so with the numbers (for a 413)."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, refused past ``limit`` bytes: by its Content-Length when it declares
    one, and otherwise while streaming, so an oversized body is never held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
