"""A local stand-in HTTP server for an API that cannot run here (Kubernetes, the Argo Server,
Jenkins): it records every request exactly as it arrived (method, path, query, headers, body)
and answers through a handler the test writes against the API's documentation."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    body: Any = None                      # JSON-serialised unless bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Seen], Answer]


@dataclass
class StandIn:
    url: str
    seen: list[Seen]

    def calls(self, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if method is None or s.method == method]


@contextmanager
def serve(handler: Handler) -> Iterator[StandIn]:
    seen: list[Seen] = []

    class Recording(BaseHTTPRequestHandler):
        def _any(self) -> None:
            parts = urlsplit(self.path)
            size = int(self.headers.get("Content-Length") or 0)
            request = Seen(self.command, parts.path, parse_qs(parts.query),
                           {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(size))
            seen.append(request)
            answer = handler(request)
            body = answer.body if isinstance(answer.body, bytes) else \
                json.dumps(answer.body).encode() if answer.body is not None else b""
            self.send_response(answer.status)
            headers = {"Content-Type": "application/json", **answer.headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        def log_message(self, format: str, *args: Any) -> None:   # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield StandIn(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
