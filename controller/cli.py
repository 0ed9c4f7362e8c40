"""``driftloop controller`` (the service) and the commands that talk to it over HTTP:
``driftloop retrain``, ``driftloop promote``, ``driftloop rollback``, ``driftloop status``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from kernel.cliutil import echo

Model = Annotated[str | None, typer.Option(help="Registered model (default: the only one "
                                           "the controller manages).")]
Reason = Annotated[str, typer.Option(help="Why: kept in the audit trail.")]


def register(app: typer.Typer) -> None:
    app.command("controller")(controller)
    app.command("retrain")(retrain)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("status")(status)


def controller(
    host: Annotated[str | None, typer.Option(help="Address (DRIFTLOOP_CONTROLLER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (DRIFTLOOP_CONTROLLER_PORT).")] = None,
    spec: Annotated[list[str], typer.Option(help="Spec of a managed model (repeatable; adds to "
                                            "DRIFTLOOP_CONTROLLER_SPECS).")] = [],
) -> None:
    """The controller service: webhook receiver, state machine and reconcile loop."""
    import uvicorn

    from controller.app import create_app
    from controller.settings import ControllerSettings
    from kernel.errors import UsageError

    settings = ControllerSettings()
    if spec:
        joined = ",".join([*(str(p) for p in settings.spec_paths()), *spec])
        settings = settings.model_copy(update={"controller_specs": joined})
    if not settings.spec_paths():
        raise UsageError("no models to manage: set DRIFTLOOP_CONTROLLER_SPECS or pass --spec")
    if not settings.controller_token:
        echo("warning: DRIFTLOOP_CONTROLLER_TOKEN is not set: every mutating endpoint answers 401")
    uvicorn.run(create_app(settings), host=host or settings.controller_host,
                port=port or settings.controller_port, log_level="warning")


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import httpx

    from controller.settings import ControllerSettings
    from kernel.errors import DriftloopError

    settings = ControllerSettings()
    url = settings.controller_url.rstrip("/") + path
    headers = {}
    if settings.controller_token:
        headers["Authorization"] = f"Bearer {settings.controller_token}"
    try:
        response = httpx.request(method, url, json=body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise DriftloopError(f"controller not reachable at {settings.controller_url} "
                             f"({exc.__class__.__name__}); is `driftloop controller` running? "
                             "(DRIFTLOOP_CONTROLLER_URL)") from None
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


def retrain(reason: Reason, model: Model = None) -> None:
    """Emergency manual retrain: skips the cooldown, never runs two at once, still gated."""
    _report(_call("POST", "/retrain", {"reason": reason, "model": model}))


def promote(version: Annotated[int, typer.Argument(help="Version to make champion.")],
            reason: Reason, model: Model = None) -> None:
    """Audited human override: point @champion at VERSION (the old one kept as @previous)."""
    _report(_call("POST", "/promote", {"reason": reason, "model": model, "version": version}))


def rollback(reason: Reason, model: Model = None) -> None:
    """Audited human override: point @champion back at @previous."""
    _report(_call("POST", "/rollback", {"reason": reason, "model": model}))


def status(as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False) -> None:
    """Champion, challenger, controller state and the last decisions, per model."""
    data = _call("GET", "/status")
    if as_json:
        echo(json.dumps(data, indent=2))
        return
    for model, info in data.items():
        aliases = info.get("aliases")
        if isinstance(aliases, dict):
            names = ", ".join(f"@{k}=v{v}" for k, v in sorted(aliases.items())) or "no aliases"
        else:
            names = str(aliases)
        echo(f"{model}: {info['state']}  {names}")
        cycle = info.get("cycle")
        if cycle and info["state"] not in ("idle",):
            echo(f"  cycle {cycle['id']}: challenger v{cycle.get('challenger')}, "
                 f"reasons: {'; '.join(cycle.get('reasons') or [])}")
            gate = cycle.get("gate")
            if gate:
                echo(f"  gate: {gate['outcome']} on n={gate['n']} ({gate['evidence']}): "
                     f"{(gate.get('reasons') or [''])[-1]}")
        for d in info.get("last_decisions") or []:
            echo(f"  {d['decided_at'][:19]} {d['kind']} {d['outcome']}: champion "
                 f"v{d.get('champion_version')} -> v{d.get('new_champion_version')}; "
                 f"{(d.get('reasons') or [''])[-1]}")
