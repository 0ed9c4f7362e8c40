"""Request metrics as a pure ASGI middleware (BaseHTTPMiddleware costs about two thirds
of the throughput on the fast path; see shared FACTS.md)."""

from __future__ import annotations

import time
from typing import Any

from serving.metrics import ServingMetrics

Scope = dict[str, Any]
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RequestMetricsMiddleware:
    def __init__(self, app: Any, metrics: ServingMetrics) -> None:
        self.app = app
        self.tally = metrics.tally

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "other"
            method = scope["method"]
            self.tally.http(route, method if method in METHODS else "other", status,
                            time.perf_counter() - started)
