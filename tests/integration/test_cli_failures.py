"""Every failure path of the commands is one line on stderr, no traceback, a non-zero exit.

The real ``driftloop`` console script runs as a subprocess (what a person or a cron job
sees), on a temporary embedded home. The controller's own commands are tested with the
controller (tests/integration/test_controller_overrides_cli.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop.processes import driftloop_command, free_port
from training.generate import generate

SPEC = str(Path(__file__).resolve().parents[2] / "examples" / "churn" / "spec.yaml")
README = str(Path(__file__).resolve().parents[2] / "README.md")

# (id, argv with {data} {file} {busy} {tmp} placeholders, exit code, a fragment of the line)
CASES = [
    ("generate-readme", ["generate", "--out", README], 2, "unsupported extension"),
    ("generate-under-a-file", ["generate", "--days", "1", "--rows-per-day", "10",
                               "--out", "{file}/x.parquet"], 2, "--out: cannot write"),
    ("generate-no-directory", ["generate", "--days", "1", "--rows-per-day", "10",
                               "--out", "/proc/nosuch/x.parquet"], 2, "--out: cannot write"),
    ("generate-bad-scenario", ["generate", "--scenario", "bogus", "--out", "{tmp}/x.csv"], 2,
     "--scenario"),
    ("generate-bad-days", ["generate", "--days", "0", "--out", "{tmp}/x.csv"], 2, "--days"),
    ("unknown-option", ["generate", "--bogus"], 2, "--bogus"),
    ("unknown-command", ["nosuch"], 2, "nosuch"),
    ("train-missing-option", ["train", "--spec", SPEC], 2, "--data"),
    ("train-missing-spec", ["train", "--spec", "{tmp}/nosuch.yaml", "--data", "{data}"], 2,
     "nosuch.yaml"),
    ("train-invalid-spec", ["train", "--spec", README, "--data", "{data}"], 2, "README.md"),
    ("train-missing-data", ["train", "--spec", SPEC, "--data", "{tmp}/nosuch.csv"], 2,
     "nosuch.csv"),
    ("train-bad-since", ["train", "--spec", SPEC, "--data", "{data}", "--since", "yesterday"], 2,
     "--since"),
    ("train-bad-tag", ["train", "--spec", SPEC, "--data", "{data}", "--tag", "novalue"], 2,
     "--tag"),
    ("serve-busy-port", ["serve", "--model", "churn", "--port", "{busy}"], 2, "--port"),
    ("serve-no-model", ["serve"], 2, "--model"),
    ("ui-busy-port", ["ui", "--port", "{busy}"], 2, "--port"),
    ("drift-check-no-model", ["drift-check"], 2, "--model"),
    ("drift-check-bad-until", ["drift-check", "--model", "churn", "--until", "soon"], 2,
     "--until"),
    ("drift-check-empty-window", ["drift-check", "--model", "churn", "--since", "2024-02-01",
                                  "--until", "2024-01-01"], 2, "--since"),
    ("drift-check-missing-current", ["drift-check", "--model", "churn", "--current",
                                     "{tmp}/nosuch.csv"], 2, "nosuch.csv"),
    ("drift-check-no-champion", ["drift-check", "--model", "nosuch"], 2, "@champion"),
    ("log-no-retention", ["log", "expire"], 2, "retention"),
    ("log-bad-duration", ["log", "compact", "--older-than", "soon"], 2, "--older-than"),
    ("backtest-missing-data", ["backtest", "--spec", SPEC, "--data", "{tmp}/nosuch.csv"], 2,
     "nosuch.csv"),
    ("backtest-bad-period", ["backtest", "--spec", SPEC, "--data", "{data}", "--period", "3x"],
     2, "--period"),
    ("backtest-missing-policy", ["backtest", "--spec", SPEC, "--data", "{data}", "--policy",
                                 "{tmp}/nosuch.yaml"], 2, "--policy"),
    ("demo-bad-days", ["demo", "--days", "0"], 2, "--days"),
    ("controller-busy-port", ["controller", "--spec", SPEC, "--port", "{busy}"], 2, "--port"),
    ("controller-missing-spec", ["controller", "--spec", "{tmp}/nosuch.yaml"], 2, "nosuch.yaml"),
]

UNREACHABLE = [
    ("drift-check", ["drift-check", "--model", "churn"]),
    ("train", ["train", "--spec", SPEC, "--data", "{data}"]),
]


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("cli-failures")
    data = tmp / "data.csv"
    generate(2, rows_per_day=50, seed=1).to_csv(data, index=False)
    (tmp / "afile").write_text("not a directory\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield {"tmp": str(tmp), "data": str(data), "file": str(tmp / "afile"),
               "busy": str(busy.getsockname()[1])}


def _run(args: list[str], place: dict[str, str], env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    argv = [a.format(**place) for a in args]
    home = Path(place["tmp"]) / "home"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DRIFTLOOP_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))}
    return subprocess.run(driftloop_command(*argv), capture_output=True, text=True, timeout=180,
                          cwd=place["tmp"],
                          env={**clean, "DRIFTLOOP_HOME": str(home), **(env or {})})


def _assert_one_line(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert result.returncode == code, (result.returncode, result.stderr)


@pytest.mark.parametrize(("args", "code", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_failure_is_one_line_on_stderr(args: list[str], code: int, fragment: str,
                                         place: dict[str, str]) -> None:
    _assert_one_line(_run(args, place), code, fragment)


@pytest.mark.parametrize("args", [c[1] for c in UNREACHABLE], ids=[c[0] for c in UNREACHABLE])
def test_an_unreachable_tracking_server_is_one_line(args: list[str],
                                                    place: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _run(args, place, {"MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    _assert_one_line(result, 2, "registry unavailable")
    assert url in result.stderr


BAD_SETTINGS = [
    ("controller-tick", ["controller"], {"DRIFTLOOP_CONTROLLER_TICK_SECONDS": "abc"},
     "DRIFTLOOP_CONTROLLER_TICK_SECONDS: Input should be a valid number"),
    ("drift-engine", ["drift-check", "--model", "churn"], {"DRIFTLOOP_DRIFT_ENGINE": "bogus"},
     "DRIFTLOOP_DRIFT_ENGINE"),
]


@pytest.mark.parametrize(("args", "env", "fragment"), [c[1:] for c in BAD_SETTINGS],
                         ids=[c[0] for c in BAD_SETTINGS])
def test_an_invalid_setting_is_a_usage_error(args: list[str], env: dict[str, str],
                                             fragment: str, place: dict[str, str]) -> None:
    result = _run(args, place, env)
    _assert_one_line(result, 2, fragment)
    assert "a bug" not in result.stderr
    assert repr(next(iter(env.values()))) in result.stderr  # the value it got


def test_an_unreachable_controller_store_is_one_line_without_its_password(
        place: dict[str, str]) -> None:
    url = f"postgresql://driftloop:s3cret@127.0.0.1:{free_port()}/driftloop"
    result = _run(["controller", "--spec", SPEC, "--port", str(free_port())], place,
                  {"DRIFTLOOP_CONTROLLER_DATABASE_URL": url})
    _assert_one_line(result, 2, "controller store unavailable at postgresql://driftloop:***@")
    assert "s3cret" not in result.stderr + result.stdout


def test_the_controller_says_what_it_manages_and_where(place: dict[str, str]) -> None:
    port = free_port()
    home = Path(place["tmp"]) / "home"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "MLFLOW_"))}
    proc = subprocess.Popen(driftloop_command("controller", "--spec", SPEC, "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=place["tmp"], env={**clean, "DRIFTLOOP_HOME": str(home),
                                                   "DRIFTLOOP_CONTROLLER_TOKEN": "t"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert line.startswith(f"controller managing churn on http://127.0.0.1:{port} "), line
    assert "launcher local" in line and f"sqlite:///{home}" in line and "registry " in line


def _commands() -> list[list[str]]:
    from driftloop.cli import _assemble, app

    _assemble()
    names = [[c.name or ""] for c in app.registered_commands]
    for group in app.registered_groups:
        assert group.typer_instance is not None and group.name
        names.append([group.name])
        names += [[group.name, c.name or ""] for c in group.typer_instance.registered_commands]
    return names


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_has_help(command: list[str], place: dict[str, str]) -> None:
    result = _run([*command, "--help"], place)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--help" in result.stdout
    assert result.stderr == ""
