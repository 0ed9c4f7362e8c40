"""Launchers: the GitHub workflow_dispatch call against a stand-in that checks it the way
GitHub documents it, and the local command line."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from controller.launcher import (
    GitHubActionsLauncher,
    LaunchError,
    LaunchRequest,
    LaunchUnavailable,
    LocalProcessLauncher,
    train_args,
    training_env,
)
from kernel.errors import RetryableError

REQUEST = LaunchRequest("churn", "churn-20260301T120000-4", 1, Path("/specs/churn.yaml"),
                        (Path("/data/history.parquet"), Path("/data/recent.parquet")),
                        reason="alertmanager, verdict",
                        since=datetime(2026, 2, 1, tzinfo=UTC),
                        until=datetime(2026, 3, 1, 6, tzinfo=UTC))


def _declared_inputs() -> set[str]:
    import yaml

    workflow = yaml.safe_load((Path(__file__).parents[2] / ".github/workflows/retrain.yml")
                              .read_text())
    return set(workflow[True]["workflow_dispatch"]["inputs"])  # YAML 1.1 reads "on" as True


RETRAIN_INPUTS = _declared_inputs()


class GitHubStandIn:
    """What GitHub checks for POST /repos/{owner}/{repo}/actions/workflows/{id}/dispatches."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if request.method != "POST":
            return httpx.Response(405)
        if request.url.path != "/repos/acme/driftloop/actions/workflows/retrain.yml/dispatches":
            return httpx.Response(404, json={"message": "Not Found"})
        if request.headers.get("authorization") != "Bearer s3cret":
            return httpx.Response(401, json={"message": "Bad credentials"})
        if request.headers.get("accept") != "application/vnd.github+json" or \
                request.headers.get("x-github-api-version") != "2022-11-28":
            return httpx.Response(415)
        body = json.loads(request.content)
        if set(body) != {"ref", "inputs"} or not isinstance(body["inputs"], dict) or \
                any(not isinstance(v, str) for v in body["inputs"].values()) or \
                len(body["inputs"]) > 10:
            return httpx.Response(422, json={"message": "Invalid request"})
        # The workflow's own declaration: inputs it does not declare are refused.
        if set(body["inputs"]) - RETRAIN_INPUTS:
            return httpx.Response(422, json={"message": "Unexpected inputs provided"})
        return httpx.Response(self.status)


def _launcher(handler: GitHubStandIn | object, token: str = "s3cret") -> GitHubActionsLauncher:
    client = httpx.Client(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    return GitHubActionsLauncher(client, "acme/driftloop", "retrain.yml", token, ref="main",
                                 api="https://github.example")


def test_github_dispatch_is_what_github_documents() -> None:
    standin = GitHubStandIn()
    detail = _launcher(standin).launch(REQUEST)
    assert "dispatched retrain.yml" in detail
    (call,) = standin.calls
    assert call.url.host == "github.example"
    assert json.loads(call.content) == {
        "ref": "main",
        "inputs": {"model": "churn", "reason": "alertmanager, verdict",
                   "cycle_id": "churn-20260301T120000-4"}}
    assert _launcher(standin).status(REQUEST.cycle_id, 1).status == "unknown"


def test_github_dispatch_carries_the_recent_rows(tmp_path: Path) -> None:
    recent = tmp_path / "controller" / "recent.parquet"
    recent.parent.mkdir()
    recent.write_bytes(b"PAR1 rows PAR1")
    bucket = tmp_path / "bucket"
    standin = GitHubStandIn()
    launcher = _launcher(standin)
    launcher.data_uri = f"file://{bucket}"
    request = replace(REQUEST, recent_path=recent)
    launcher.launch(request)
    copied = bucket / "churn" / "cycles" / "churn-20260301T120000-4.parquet"
    assert copied.read_bytes() == recent.read_bytes()
    (call,) = standin.calls
    inputs = json.loads(call.content)["inputs"]
    assert inputs["data"] == f"file://{copied}"
    assert (inputs["since"], inputs["until"]) == ("2026-02-01T00:00:00+00:00",
                                                  "2026-03-01T06:00:00+00:00")
    # Nowhere to copy to: the dispatch still goes, without the rows or their window (and
    # says so in the log).
    launcher.data_uri = None
    launcher.launch(request)
    assert set(json.loads(standin.calls[-1].content)["inputs"]) == {"model", "reason",
                                                                   "cycle_id"}


def test_github_copy_failure_is_retryable(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    launcher = _launcher(GitHubStandIn())
    launcher.data_uri = str(blocked)
    with pytest.raises(LaunchUnavailable, match="cannot copy the recent rows"):
        launcher.launch(replace(REQUEST, recent_path=tmp_path / "missing.parquet"))


@pytest.mark.parametrize(("token", "status", "error", "retryable"), [
    ("wrong", 204, LaunchError, False),        # 401 from GitHub: permanent
    ("s3cret", 422, LaunchError, False),
    ("s3cret", 503, LaunchUnavailable, True),
    ("s3cret", 429, LaunchUnavailable, True),
])
def test_github_errors_are_permanent_or_retryable(token: str, status: int, error: type,
                                                  retryable: bool) -> None:
    with pytest.raises(error) as info:
        _launcher(GitHubStandIn(status), token).launch(REQUEST)
    assert isinstance(info.value, RetryableError) is retryable


def test_github_unreachable_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(LaunchUnavailable, match="unreachable"):
        _launcher(refuse).launch(REQUEST)


def test_local_command_line_tags_the_cycle() -> None:
    args = train_args(REQUEST)
    assert args[:3] == ["train", "--spec", "/specs/churn.yaml"]
    assert args.count("--data") == 2
    assert args[args.index("--since") + 1] == "2026-02-01T00:00:00+00:00"
    assert args[args.index("--until") + 1] == "2026-03-01T06:00:00+00:00"
    assert "cycle_id=churn-20260301T120000-4" in args and "attempt=1" in args


def test_local_launcher_reports_a_missing_process_as_gone(tmp_path: Path) -> None:
    launcher = LocalProcessLauncher(tmp_path / "logs")
    assert launcher.status("never-launched", 1).status == "gone"


SECRETS = {"DRIFTLOOP_CONTROLLER_TOKEN": "c", "DRIFTLOOP_ADMIN_TOKEN": "a",
           "DRIFTLOOP_FEEDBACK_TOKEN": "f", "DRIFTLOOP_CONTROLLER_GITHUB_TOKEN": "g",
           "GITHUB_TOKEN": "g2", "DRIFTLOOP_WEBHOOK_SECRET": "w",
           "DRIFTLOOP_CONTROLLER_NOTIFY_URL": "https://hooks.example/T0/B0/x",
           "DRIFTLOOP_CONTROLLER_DATABASE_URL": "postgresql+psycopg://u:pw@db/state"}
NEEDED = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_TOKEN": "m",
          "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
          "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000", "DRIFTLOOP_HOME": "/srv/driftloop",
          "DRIFTLOOP_LOG_URI": "s3://logs/p"}


def test_training_env_drops_the_services_secrets_only() -> None:
    env = training_env({**SECRETS, **NEEDED, "PATH": "/usr/bin", "HOME": "/root"},
                       {"EXTRA": "1"})
    assert env == {**NEEDED, "PATH": "/usr/bin", "HOME": "/root", "EXTRA": "1"}


def test_the_training_child_gets_no_tokens_and_is_found_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SECRETS, **NEEDED}.items():
        monkeypatch.setenv(name, value)
    dump, go = tmp_path / "env.txt", tmp_path / "go"
    fake_python = tmp_path / "python"  # stands in for `python -m driftloop.cli train ...`
    fake_python.write_text('#!/bin/sh\nenv > "$DUMP.tmp" && mv "$DUMP.tmp" "$DUMP"\n'
                           'while [ ! -e "$GO" ]; do sleep 0.01; done\n')
    fake_python.chmod(0o755)
    extra = {"DUMP": str(dump), "GO": str(go)}
    launcher = LocalProcessLauncher(tmp_path / "logs", python=str(fake_python), env=extra)
    try:
        detail = launcher.launch(REQUEST)
        pid = int(detail.split()[1].rstrip(","))
        assert launcher.status(REQUEST.cycle_id, REQUEST.attempt).status == "running", \
            launcher.status(REQUEST.cycle_id, REQUEST.attempt)
        # Another controller (no memory of the child) finds it by its pid file...
        other = LocalProcessLauncher(tmp_path / "logs", python=str(fake_python), env=extra)
        assert other.launch(REQUEST) == f"already running (pid {pid})"
        assert other.status(REQUEST.cycle_id, REQUEST.attempt).status == "running"
        assert other.status(REQUEST.cycle_id, REQUEST.attempt + 1).status == "gone"
        # ...and, with the pid file lost, by its command line.
        other.pid_path(REQUEST.cycle_id, REQUEST.attempt).unlink()
        assert other.launch(REQUEST) == f"already running (pid {pid})"
        assert other.status(REQUEST.cycle_id, REQUEST.attempt).status == "running"
    finally:
        go.touch()
    while launcher.status(REQUEST.cycle_id, REQUEST.attempt).status == "running":
        time.sleep(0.01)
    assert launcher.status(REQUEST.cycle_id, REQUEST.attempt).returncode == 0
    child_env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert not set(SECRETS) & set(child_env)
    assert {k: child_env[k] for k in NEEDED} == NEEDED
    assert "PATH" in child_env


def test_a_pid_file_naming_a_reused_pid_is_not_the_child(tmp_path: Path) -> None:
    # This very (live) process holds the pid, but it started at another time: the pid was
    # reused, so the cycle has no live child and the command-line scan finds none either.
    launcher = LocalProcessLauncher(tmp_path / "logs")
    launcher.log_dir.mkdir()
    path = launcher.pid_path(REQUEST.cycle_id, REQUEST.attempt)
    path.write_text(f"{os.getpid()} 12345.0\n")
    assert launcher.running(REQUEST.cycle_id, REQUEST.attempt) is None
    assert launcher.status(REQUEST.cycle_id, REQUEST.attempt).status == "gone"
    created = psutil.Process(os.getpid()).create_time()
    path.write_text(f"{os.getpid()} {created!r}\n")
    assert launcher.running(REQUEST.cycle_id, REQUEST.attempt) == os.getpid()
    path.write_text("garbage")
    assert launcher.running(REQUEST.cycle_id, REQUEST.attempt) is None
