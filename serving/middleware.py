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
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], Any] = {}
        self._durations: dict[str, Any] = {}

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
            if method not in METHODS:
                method = "other"
            key = (route, method, status)
            counter = self._children.get(key)
            if counter is None:
                counter = self.metrics.http_requests.labels(route, method, str(status))
                self._children[key] = counter
            counter.inc()
            hist = self._durations.get(route)
            if hist is None:
                hist = self._durations[route] = self.metrics.http_duration.labels(route)
            hist.observe(time.perf_counter() - started)
