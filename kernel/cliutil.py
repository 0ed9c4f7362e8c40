"""Small helpers shared by the parts' command modules (parsing, output)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import typer

from kernel.errors import UsageError


def parse_time(value: str | None, *, option: str) -> datetime | None:
    """ISO 8601 date or datetime; naive values are UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option}: not an ISO 8601 date or time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def echo(message: str) -> None:
    typer.echo(message)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def check_port_free(host: str, port: int, *, option: str) -> None:
    """A usage error naming the option when nothing can listen on ``host:port`` (in use, or
    an address of another machine), before a server starts and fails in its own words."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"{option}: cannot listen on {host}:{port}: "
                             f"{exc.strerror or exc}") from None
