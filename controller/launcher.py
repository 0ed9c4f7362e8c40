"""Launching a retrain: a port and two adapters.

- :class:`LocalProcessLauncher` runs ``driftloop train ... --tag cycle_id=<id>`` as a
  subprocess (its own session, so it outlives a killed controller), logs to
  ``<home>/logs/``. Launching is idempotent: a process already running for the cycle is
  found by the pid file written beside its log (pid and start time, so a reused pid is
  never mistaken for it) or else by its command line (psutil), and not started again. The child gets the
  controller's environment without driftloop's service secrets (:func:`training_env`).
- :class:`GitHubActionsLauncher` dispatches the project's retrain workflow
  (``workflow_dispatch``) with the cycle id as an input. The cycle's recent labelled rows
  (a file on the controller's disk) are first copied to ``<data_uri>/<model>/cycles/<cycle
  id>.parquet`` (S3, GCS or a shared path: any pyarrow filesystem URI) and passed as the
  ``data`` input with the training window (``since``, ``until``), so the runner trains on
  what a local retrain would.

Either way the controller learns the outcome from the registry: the version tagged
``driftloop.cycle_id=<id>`` (with a timeout and a bounded number of attempts in the core).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import psutil

from kernel.errors import DriftloopError, RetryableError

log = logging.getLogger(__name__)

Status = Literal["running", "exited", "gone", "unknown"]


class LaunchError(DriftloopError):
    """The launch was refused for a reason retrying will not fix."""


class LaunchUnavailable(LaunchError, RetryableError):
    """The launcher could not be reached; try again later."""


@dataclass(frozen=True)
class LaunchRequest:
    model: str
    cycle_id: str
    attempt: int
    spec_path: Path
    data_paths: tuple[Path, ...]
    reason: str
    since: datetime | None = None
    until: datetime | None = None
    recent_path: Path | None = None   # the recent labelled rows among data_paths, if any


@dataclass(frozen=True)
class LaunchStatus:
    status: Status
    returncode: int | None = None
    detail: str = ""


class Launcher(Protocol):
    def launch(self, request: LaunchRequest) -> str:
        """Start the training; idempotent per (cycle, attempt). Returns a description."""
        ...

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus: ...


def train_args(request: LaunchRequest) -> list[str]:
    args = ["train", "--spec", str(request.spec_path)]
    for path in request.data_paths:
        args += ["--data", str(path)]
    if request.since is not None:
        args += ["--since", request.since.isoformat()]
    if request.until is not None:
        args += ["--until", request.until.isoformat()]
    args += ["--tag", f"cycle_id={request.cycle_id}", "--tag", f"trigger={request.reason[:200]}",
             "--tag", f"attempt={request.attempt}"]
    return args


# Variables the training child never gets: the bearer tokens and secrets of driftloop's own
# services (controller, serving admin and feedback, GitHub dispatch, ...) and the URLs that
# carry the controller's credentials. Training reads the tracking server and object store
# (MLFLOW_*, AWS_*, ...) and driftloop's non-secret settings; those pass through.
_SECRET_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "PRIVATE_KEY")
CONTROLLER_ONLY = frozenset({"GITHUB_TOKEN", "DRIFTLOOP_CONTROLLER_NOTIFY_URL",
                             "DRIFTLOOP_CONTROLLER_DATABASE_URL"})


def is_service_secret(name: str) -> bool:
    """True for a variable the training child must not inherit: ``DRIFTLOOP_*`` names
    holding TOKEN, SECRET, PASSWORD, PASSWD, API_KEY or PRIVATE_KEY, plus
    :data:`CONTROLLER_ONLY`."""
    upper = name.upper()
    if upper in CONTROLLER_ONLY:
        return True
    return upper.startswith("DRIFTLOOP_") and any(m in upper for m in _SECRET_MARKERS)


def training_env(environ: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The training child's environment: ``environ`` without driftloop's service secrets,
    then ``extra`` (what the launcher was configured with, passed as given)."""
    env = {k: v for k, v in environ.items() if not is_service_secret(k)}
    env.update(extra or {})
    return env


def _alive(proc: psutil.Process) -> bool:
    return bool(proc.status() != psutil.STATUS_ZOMBIE)


def _pid_file_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` (``<pid> <create time>``) if that very process lives."""
    try:
        pid_text, created = path.read_text().split()
        proc = psutil.Process(int(pid_text))
        if abs(proc.create_time() - float(created)) < 0.01 and _alive(proc):
            return proc.pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _running_pids(cycle_id: str, attempt: int) -> list[int]:
    """Live (not zombie) processes whose command line carries this cycle and attempt.

    Each process is looked up afresh (not through ``psutil.process_iter``'s cache), and one
    that vanishes or denies access mid-scan is skipped, never the whole scan."""
    wanted = (f"cycle_id={cycle_id}", f"attempt={attempt}")
    found: list[int] = []
    for pid in psutil.pids():
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                if _alive(proc) and all(w in proc.cmdline() for w in wanted):
                    found.append(pid)
        except psutil.Error:
            continue
    return found


@dataclass
class LocalProcessLauncher:
    log_dir: Path
    python: str = sys.executable
    env: dict[str, str] | None = None
    _children: dict[tuple[str, int], subprocess.Popen[bytes]] = field(default_factory=dict)

    def log_path(self, cycle_id: str, attempt: int) -> Path:
        return self.log_dir / f"train-{cycle_id}-{attempt}.log"

    def pid_path(self, cycle_id: str, attempt: int) -> Path:
        return self.log_dir / f"train-{cycle_id}-{attempt}.pid"

    def running(self, cycle_id: str, attempt: int) -> int | None:
        """The pid of a live training process for this cycle and attempt, if any."""
        pid = _pid_file_pid(self.pid_path(cycle_id, attempt))
        if pid is None:
            pid = next(iter(_running_pids(cycle_id, attempt)), None)
        return pid

    def launch(self, request: LaunchRequest) -> str:
        key = (request.cycle_id, request.attempt)
        running = self.running(*key)
        if running is not None:
            return f"already running (pid {running})"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_path(*key)
        cmd = [self.python, "-m", "driftloop.cli", *train_args(request)]
        with open(path, "ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env=training_env(os.environ, self.env))
        self._children[key] = child
        self._record(key, child.pid)
        log.info("launched training for %s attempt %d: pid %d, log %s", request.cycle_id,
                 request.attempt, child.pid, path)
        return f"pid {child.pid}, log {path}"

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        child = self._children.get((cycle_id, attempt))
        if child is not None:
            code = child.poll()
            if code is None:
                return LaunchStatus("running")
            return LaunchStatus("exited", code, self._tail(cycle_id, attempt))
        if self.running(cycle_id, attempt) is not None:
            return LaunchStatus("running")
        return LaunchStatus("gone", None, self._tail(cycle_id, attempt))

    def _record(self, key: tuple[str, int], pid: int) -> None:
        """Write the child's pid file (atomically); without it, the command-line scan."""
        path = self.pid_path(*key)
        try:
            created = psutil.Process(pid).create_time()
            tmp = path.with_suffix(".pid.tmp")
            tmp.write_text(f"{pid} {created!r}\n")
            tmp.replace(path)
        except (OSError, psutil.Error) as exc:
            log.warning("could not write %s (%s); the child is found by its command line", path, exc)

    def _tail(self, cycle_id: str, attempt: int) -> str:
        try:
            lines = self.log_path(cycle_id, attempt).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines[-3:] if line.strip())[-500:]


@dataclass
class GitHubActionsLauncher:
    """``POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches`` (204 on success)."""

    client: httpx.Client
    repo: str                         # owner/name
    workflow: str                     # file name (retrain.yml) or id
    token: str
    ref: str = "main"
    api: str = "https://api.github.com"
    data_uri: str | None = None       # where the runner fetches the cycle's recent rows

    def launch(self, request: LaunchRequest) -> str:
        url = f"{self.api.rstrip('/')}/repos/{self.repo}/actions/workflows/{self.workflow}/dispatches"
        inputs = {"model": request.model, "reason": request.reason[:1000],
                  "cycle_id": request.cycle_id}
        data = upload_recent(request, self.data_uri, "DRIFTLOOP_CONTROLLER_GITHUB_DATA_URI")
        if data is not None:
            # Only with the rows: the window and holdout cut are theirs (the history files
            # alone, cut to a recent window, may hold nothing). Keys are sent only with a
            # value, so a workflow that predates these inputs still accepts the dispatch.
            inputs["data"] = data
            if request.since is not None:
                inputs["since"] = request.since.isoformat()
            if request.until is not None:
                inputs["until"] = request.until.isoformat()
        body = {"ref": self.ref, "inputs": inputs}
        headers = {"Accept": "application/vnd.github+json",
                   "Authorization": f"Bearer {self.token}",
                   "X-GitHub-Api-Version": "2022-11-28"}
        try:
            response = self.client.post(url, json=body, headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            raise LaunchUnavailable(f"GitHub unreachable: {exc}") from exc
        if response.status_code == 204:
            return f"dispatched {self.workflow} on {self.repo}@{self.ref}"
        detail = response.text[:300]
        if response.status_code in (429,) or response.status_code >= 500:
            raise LaunchUnavailable(f"GitHub answered {response.status_code}: {detail}")
        raise LaunchError(f"GitHub refused the dispatch ({response.status_code}): {detail}")

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("unknown", detail="outcome read from the registry")


def object_path(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and path for ``uri``: an object-store URI (``s3://b/k``, with an
    optional ``?endpoint_override=...`` query) or a plain path on this machine."""
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def upload_recent(request: LaunchRequest, data_uri: str | None, setting: str) -> str | None:
    """Copy the cycle's recent labelled rows to ``<data_uri>/<model>/cycles/<cycle id>.parquet``
    where a remote runner (a workflow, a Job, a pipeline) can fetch them; their URI, or None
    when there are none or ``data_uri`` (the setting named ``setting``) is unset."""
    if request.recent_path is None:
        return None
    if not data_uri:
        log.warning("%s: the recent labelled rows stay on this machine (set %s so the "
                    "training run gets them)", request.cycle_id, setting)
        return None
    import pyarrow.fs as pafs

    base, _, query = data_uri.partition("?")  # s3://b/p?endpoint_override=...
    target = f"{base.rstrip('/')}/{request.model}/cycles/{request.cycle_id}.parquet"
    if not target.startswith("s3://"):
        log.warning("%s: the recent rows go to %s; the shipped runners fetch s3:// URIs only",
                    request.cycle_id, target)
    try:
        fs, path = object_path(target + (f"?{query}" if query and "://" in target else ""))
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(request.recent_path), path, destination_filesystem=fs)
    except (OSError, ValueError) as exc:  # pyarrow raises OSError subclasses for I/O
        raise LaunchUnavailable(f"cannot copy the recent rows to {target}: {exc}") from exc
    return target
