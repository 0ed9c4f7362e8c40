"""The ``driftloop`` command: a thin entry point that assembles each part's commands."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from driftloop import __version__

app = typer.Typer(
    name="driftloop",
    help="Closed-loop continuous training: serve the MLflow champion, watch drift, retrain, "
    "shadow-evaluate and promote only when the challenger matches or beats the champion.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"driftloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    log_level: Annotated[str, typer.Option(envvar="DRIFTLOOP_LOG_LEVEL",
                                           help="DEBUG, INFO, WARNING or ERROR.")] = "WARNING",
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    level = log_level.upper()
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # MLflow logs its own INFO lines (database migrations...) unless told otherwise.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if level == "DEBUG" else "WARNING")
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])
    quiet_progress_bars()


def quiet_progress_bars() -> None:
    """No third-party progress bars in service logs or on a command's stderr: MLflow's
    artifact download/upload bars and tqdm's (Evidently, scikit-learn helpers), switched off
    the supported way, by environment, so the children this process starts (serving workers,
    the controller's training runs, the report's renderer) inherit it. Set either variable
    to override."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")


@app.command("ui")
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on driftloop's store (the embedded default unless configured)."""
    from kernel.cliutil import check_port_free
    from kernel.settings import CommonSettings

    settings = CommonSettings()
    check_port_free(host, port, option="--port")
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
            settings.resolved_tracking_uri, "--host", host, "--port", str(port)]
    if settings.resolved_artifact_root:
        args += ["--default-artifact-root", settings.resolved_artifact_root]
    typer.echo(f"MLflow UI on http://{host}:{port} (store {settings.resolved_tracking_uri})")
    os.execv(sys.executable, args)


def _assemble() -> None:
    import importlib

    for module in ("training.cli", "serving.cli", "monitoring.cli", "controller.cli",
                   "backtest.cli", "driftloop.demo"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


def main(argv: list[str] | None = None) -> int:
    from kernel.errors import DriftloopError

    _assemble()
    try:
        # Without standalone mode click returns a raised typer.Exit's code instead of raising.
        code = app(args=argv, prog_name="driftloop", standalone_mode=False)
    except DriftloopError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except Exception as exc:
        if _is_settings_error(exc):
            typer.echo(f"error: {_settings_message(exc)}", err=True)
            return 2
        return _unexpected(exc, argv)
    return code if isinstance(code, int) else 0


def _is_settings_error(exc: Exception) -> bool:
    """A DRIFTLOOP_* setting that does not parse: the operator's input, so exit 2."""
    from pydantic import ValidationError

    return isinstance(exc, ValidationError) and exc.title.endswith("Settings")


def _settings_message(exc: Exception) -> str:
    """One line naming each bad environment variable, what it needs and what it got."""
    parts = []
    for err in exc.errors():  # type: ignore[attr-defined]
        name = str(err["loc"][0]) if err.get("loc") else "?"
        env = name if name.isupper() else f"DRIFTLOOP_{name.upper()}"
        got = f" (got {err['input']!r})" if isinstance(err.get("input"), str | int | float) \
            else ""
        parts.append(f"{env}: {err['msg']}{got}")
    return "invalid setting " + "; ".join(parts) + " (the README's Configuration section lists them)"


def _unexpected(exc: Exception, argv: list[str] | None) -> int:
    """Every other failure is one line on stderr too, with a non-zero exit: a usage error
    of click's (exit 2), a file or connection that failed (1), or a bug (1; the traceback
    only with --log-level DEBUG)."""
    # typer vendors click, so match the shape of click's exceptions, not one import path.
    show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
    if callable(show) and isinstance(exit_code, int):
        if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
            show()
            return exit_code
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
        return exit_code
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("driftloop").exception("unexpected failure")
    if isinstance(exc, OSError):
        typer.echo(f"error: {exc}", err=True)
    else:
        typer.echo(f"error: {type(exc).__name__}: {' '.join(str(exc).split())} (a bug: "
                   "--log-level DEBUG shows where)", err=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
