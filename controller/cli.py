"""``driftloop controller`` (the service) and the commands that talk to it over HTTP:
``driftloop retrain``, ``driftloop promote``, ``driftloop rollback``, ``driftloop status``;
and ``driftloop history``, which reads the registry only. ``status`` falls back to the
registry when the controller cannot be reached."""

from __future__ import annotations

import getpass
import json
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kernel.cliutil import check_port_free, echo, parse_time
from kernel.errors import DriftloopError

if TYPE_CHECKING:
    from controller.settings import ControllerSettings

Model = Annotated[str | None, typer.Option(help="Registered model (default: the only one "
                                           "the controller manages).")]
Reason = Annotated[str, typer.Option(help="Why: kept in the audit trail.")]
Actor = Annotated[str | None, typer.Option(
    help="Who you are, kept in the audit trail and shown as the decision run's user (default: "
    "$DRIFTLOOP_ACTOR, else your login name). With a per-person token "
    "(DRIFTLOOP_CONTROLLER_TOKENS) the controller records the token's name.")]


class ControllerUnreachable(DriftloopError):
    """No answer from the controller (not running, wrong URL)."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    with_env = os.environ.get("DRIFTLOOP_ACTOR") or os.environ.get("USER") or os.environ.get("LOGNAME")
    if with_env:
        return with_env
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "human"


def register(app: typer.Typer) -> None:
    app.command("controller")(controller)
    app.command("retrain")(retrain)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("status")(status)
    app.command("history")(history)


def controller(
    host: Annotated[str | None, typer.Option(help="Address (DRIFTLOOP_CONTROLLER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (DRIFTLOOP_CONTROLLER_PORT).")] = None,
    spec: Annotated[list[str], typer.Option(help="Spec of a managed model (repeatable; adds to "
                                            "DRIFTLOOP_CONTROLLER_SPECS).")] = [],
) -> None:
    """The controller service: webhook receiver, state machine and reconcile loop."""
    import uvicorn

    from controller.app import create_app
    from controller.parts import check_startup
    from controller.settings import ControllerSettings
    from kernel.errors import UsageError
    from kernel.httpserver import HTTP_PROTOCOL

    settings = ControllerSettings()
    if spec:
        joined = ",".join([*(str(p) for p in settings.spec_paths()), *spec])
        settings = settings.model_copy(update={"controller_specs": joined})
    if not settings.spec_paths():
        raise UsageError("no models to manage: set DRIFTLOOP_CONTROLLER_SPECS or pass --spec")
    check_startup(settings)  # a bad spec or launcher: one line and exit 2, not a traceback
    bind_host, bind_port = host or settings.controller_host, port or settings.controller_port
    check_port_free(bind_host, bind_port, option="--port")
    from controller.deps import load_tokens

    people = load_tokens(settings)  # a bad pair or file: one line, exit 2 (never the token)
    if not settings.controller_token and not people:
        echo("warning: neither DRIFTLOOP_CONTROLLER_TOKEN nor DRIFTLOOP_CONTROLLER_TOKENS is "
             "set: every mutating endpoint answers 401")
    from controller.parts import load_models

    _check_store(settings)
    echo(f"controller managing {', '.join(sorted(load_models(settings)))} on "
         f"http://{bind_host}:{bind_port} (launcher {settings.controller_launcher}; store "
         f"{_masked(settings.database_url)}; registry {settings.resolved_tracking_uri}; log "
         f"{settings.resolved_log_uri})")
    uvicorn.run(create_app(settings), host=bind_host, port=bind_port, log_level="warning",
                http=HTTP_PROTOCOL)


def _check_store(settings: ControllerSettings) -> None:
    """The state store reachable and migrated before the port opens: one line and exit 2
    naming it (password hidden), not the server's start-up traceback."""
    import sqlalchemy.exc

    from controller.store import Store

    try:
        Store(settings.database_url).close()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise DriftloopError(f"controller store unavailable at {_masked(settings.database_url)}"
                             f" (DRIFTLOOP_CONTROLLER_DATABASE_URL): {reason}") from exc


def _masked(url: str) -> str:
    """A database URL with its password (if any) replaced, for the start-up line."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: say nothing of it rather than leak it
        return "(unreadable URL)"


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import httpx

    from controller.settings import ControllerSettings

    settings = ControllerSettings()
    url = settings.controller_url.rstrip("/") + path
    headers = {}
    if settings.controller_token:
        headers["Authorization"] = f"Bearer {settings.controller_token}"
    try:
        response = httpx.request(method, url, json=body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise ControllerUnreachable(f"controller not reachable at {settings.controller_url} "
                             f"({exc.__class__.__name__}); is `driftloop controller` running? "
                             "(DRIFTLOOP_CONTROLLER_URL)", settings.controller_url) from None
    if response.status_code == 401:
        raise DriftloopError("the controller refused the token (set DRIFTLOOP_CONTROLLER_TOKEN)")
    if response.status_code >= 400:
        raise _refused(response)
    answer: dict[str, Any] = response.json()
    return answer


def _refused(response: Any) -> typer.Exit:
    """The controller's refusal as one line on stderr; exit 1 (usage and connection: 2)."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    if isinstance(detail, list):  # a 422: field and message of each problem
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'body'}: "
                           f"{d.get('msg')}" for d in detail if isinstance(d, dict))
    line = " ".join(str(detail).split())
    typer.echo(f"refused: controller answered {response.status_code}: {line}", err=True)
    return typer.Exit(1)


def _report(answer: dict[str, Any]) -> None:
    what = f"{answer.get('action')} {answer.get('model')}"
    if answer.get("status") == "pending":
        echo(f"{what}: accepted (trigger {answer.get('trigger_id')}); not taken yet - "
             "see `driftloop status`")
        return
    cycle = f" (cycle {answer['cycle_id']})" if answer.get("cycle_id") else ""
    echo(f"{what}: {answer.get('outcome')}{cycle}")


def retrain(reason: Reason, model: Model = None, actor: Actor = None) -> None:
    """Emergency manual retrain: skips the cooldown, never runs two at once, still gated."""
    _report(_call("POST", "/retrain", {"reason": reason, "model": model,
                                       "actor": _actor(actor)}))


def promote(version: Annotated[int, typer.Argument(help="Version to make champion.")],
            reason: Reason, model: Model = None, actor: Actor = None,
            allow_schema_change: Annotated[str | None, typer.Option(
                help="Promote a version whose input schema differs from the champion's: name "
                "every change the controller reported (e.g. dropped:support_tickets), "
                "comma-separated.")] = None) -> None:
    """Audited human override: point @champion at VERSION (the old one kept as @previous)."""
    body = {"reason": reason, "model": model, "version": version, "actor": _actor(actor)}
    if allow_schema_change:
        body["allow_schema_change"] = allow_schema_change
    _report(_call("POST", "/promote", body))


def rollback(reason: Reason, model: Model = None, actor: Actor = None) -> None:
    """Audited human override: point @champion back at @previous."""
    _report(_call("POST", "/rollback", {"reason": reason, "model": model,
                                        "actor": _actor(actor)}))


def _models(settings: ControllerSettings, model: str | None) -> list[str]:
    """``model``, or the models of the configured specs."""
    if model:
        return [model]
    from kernel.spec import load_spec

    names = [load_spec(p).model_name for p in settings.spec_paths()]
    if not names:
        from kernel.errors import UsageError

        raise UsageError("which model? pass --model (or set DRIFTLOOP_CONTROLLER_SPECS)")
    return names


def _registry_status(settings: ControllerSettings, models: list[str]) -> dict[str, Any]:
    """What the registry alone says: aliases and the last decisions (no controller state)."""
    from registry import open_registry

    registry = open_registry(settings)
    return {m: {"state": "unknown", "aliases": registry.aliases(m), "cycle": None,
                "last_decisions": [json.loads(d.to_json())
                                   for d in registry.list_decisions(m, limit=5)]}
            for m in models}


def status(as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
           model: Annotated[str | None, typer.Option(
               help="Model to read from the registry when the controller is unreachable "
               "(default: the models of DRIFTLOOP_CONTROLLER_SPECS).")] = None) -> None:
    """Champion, challenger, controller state and the last decisions, per model.

    When the controller cannot be reached, the registry is read directly (aliases and the
    last decisions) and the output says so."""
    try:
        data = _call("GET", "/status")
    except ControllerUnreachable as exc:
        from controller.settings import ControllerSettings

        settings = ControllerSettings()
        data = _registry_status(settings, _models(settings, model))
        if as_json:
            echo(json.dumps({"controller": "unreachable", "models": data}, indent=2))
            return
        echo(f"controller unreachable at {exc.url}: showing the registry's record "
             f"({settings.resolved_tracking_uri})")
    else:
        if as_json:
            echo(json.dumps(data, indent=2))
            return
    for line in status_lines(data):
        echo(line)


def status_lines(data: dict[str, Any]) -> list[str]:
    from controller.history import describe
    from registry.port import version_label

    lines: list[str] = []
    for model, info in data.items():
        aliases = info.get("aliases")
        if isinstance(aliases, dict):
            names = ", ".join(f"@{k}=v{v}" for k, v in sorted(aliases.items())) or "no aliases"
        else:
            names = str(aliases)
        state = info.get("state") or "unknown"
        lines.append(f"{model}: {names}" if state == "unknown" else f"{model}: {state}  {names}")
        cycle = info.get("cycle")
        if cycle and state not in ("idle",):
            what = (f"challenger {version_label(cycle.get('challenger'))}"
                    if cycle.get("challenger") is not None else "no challenger yet")
            lines.append(f"  cycle {cycle['id']}: {what}, "
                         f"reasons: {'; '.join(cycle.get('reasons') or [])}")
            gate = cycle.get("gate")
            if gate:
                lines.append(f"  gate: {gate['outcome']} on n={gate['n']} ({gate['evidence']}): "
                             f"{(gate.get('reasons') or [''])[-1]}")
        decisions = info.get("last_decisions") or []
        if decisions:
            lines.append("  last decisions:")
        lines += [f"    {describe(d)}" for d in decisions]
    return lines


def history(
    model: Model = None,
    since: Annotated[str | None, typer.Option(help="Only moves at or after this ISO time.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: one object per move.")] = False,
) -> None:
    """Every alias move of a model (time, alias, from, to, who, why, the decision and its
    numbers), rebuilt from the registry's own records: no controller needed."""
    from controller.history import format_move, rebuild
    from controller.settings import ControllerSettings
    from registry import open_registry

    settings = ControllerSettings()
    start = parse_time(since, option="--since")
    registry = open_registry(settings)
    for name in _models(settings, model):
        moves = [m for m in rebuild(registry, name)
                 if start is None or m.at is None or m.at >= start]
        if as_json:
            echo(json.dumps({"model": name, "moves": [m.to_dict() for m in moves]}, indent=2))
            continue
        echo(f"{name}: {len(moves)} alias moves" + (f" since {start.isoformat()}" if start else ""))
        for m in moves:
            echo("  " + format_move(m))
