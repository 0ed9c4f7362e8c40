"""What an auditor sees: the real MLflow UI (``mlflow server`` on 127.0.0.1) over a store with
a promotion, a rejection, a rollback and a manual promotion recorded, opened in headless
Chromium. The decisions experiment opens on its runs (the model-training view, not the GenAI
"Traces" overview), and a decision run's page shows its versions, outcome and the gate's
numbers. Screenshots are kept under the test's tmp dir."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_history import audit_story
from tests.unit.test_registry_contract import new_version_factory  # noqa: F401


def _browser() -> str:
    from tests.conftest import require_binary

    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None) \
        or require_binary("chromium-headless-shell", "chromium-headless-shell")


def _free_port() -> int:
    from driftloop.processes import free_port

    return free_port()


@pytest.fixture
def ui(home: Path, new_version_factory: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    from kernel.settings import CommonSettings
    from registry import open_registry

    settings = CommonSettings()
    story = audit_story(open_registry(settings), "churn", new_version_factory)
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    args = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
            settings.resolved_tracking_uri, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    if settings.resolved_artifact_root:
        args += ["--default-artifact-root", settings.resolved_artifact_root]
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {(tmp_path / 'mlflow-server.log')}")
            time.sleep(0.2)
        yield {"url": url, "story": story, "tracking_uri": settings.resolved_tracking_uri}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _open(browser: str, url: str, shot: Path) -> str:
    """The text a person sees on ``url`` once its scripts ran; a screenshot saved to ``shot``."""
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--window-size=1600,1000", "--virtual-time-budget=15000"]
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=90,
                   check=True, cwd=shot.parent)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=90, check=True).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def test_the_decisions_experiment_opens_on_readable_runs(ui: dict[str, Any],
                                                         tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from registry.port import DECISIONS_EXPERIMENT, UI_TRAINING_VIEW

    browser = _browser()
    client = MlflowClient(ui["tracking_uri"])
    exp = client.get_experiment_by_name(DECISIONS_EXPERIMENT).experiment_id
    # MLflow 3.17's UI picks its view from the workflow type (the header's "GenAI | Model
    # training" switch, kept in the URL and the browser), not from the experiment's kind tag:
    # driftloop's links carry it (registry.port.UI_TRAINING_VIEW)
    runs = _open(browser, f"{ui['url']}/#/experiments/{exp}{UI_TRAINING_VIEW}",
                 tmp_path / "experiment.png")
    for name in ("churn v2 -> champion (promoted, +0.271)", "churn v3 rejected (-0.013)",
                 "churn rolled back v2 -> v1", "churn v2 -> champion (manual, by alice)"):
        assert name in runs, runs[:3000]
    assert "4 matching runs" in runs and "Traces 0" not in runs, runs[:3000]
    assert "Evaluation runs" not in runs, runs[:3000]

    promoted = ui["story"]["promoted"].run_id
    page = _open(browser, f"{ui['url']}/#/experiments/{exp}/runs/{promoted}{UI_TRAINING_VIEW}",
                 tmp_path / "promoted-run.png")
    assert "churn v2 -> champion (promoted, +0.271)" in page, page[:3000]
    for seen in ("Created by controller", "champion before: churn v1", "challenger: churn v2",
                 "champion after: churn v2", "gate: promoted", "offline_replay",
                 "difference 0.2710", "95% CI [0.2200, 0.3100]", "n = 812"):
        assert seen in page, (seen, page[:4000])
    assert "Evaluation runs" not in page, page[:3000]
    assert (tmp_path / "experiment.png").stat().st_size > 10_000
