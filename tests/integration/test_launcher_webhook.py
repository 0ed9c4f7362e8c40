"""The webhook launcher against a stand-in Jenkins on loopback (no Jenkins can run here): the
stand-in serves ``/crumbIssuer/api/json`` (a crumb bound to a session cookie) and
``POST /job/<name>/buildWithParameters`` (201 with the queue item's Location), checks the
build token, basic auth and crumb the way Jenkins does, and records every request so the
tests check the exact request the documented settings produce. A JSON endpoint shows the
same templates escaped for JSON."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from controller.launch_webhook import WebhookLauncher
from controller.launcher import LaunchError, LaunchRequest, LaunchUnavailable
from controller.parts import make_launcher
from controller.settings import ControllerSettings
from kernel.errors import UsageError
from tests.integration.standin import Answer, Seen, StandIn, serve

pytestmark = pytest.mark.integration

BUILD_TOKEN = "jenkins-build-token"
USER, API_TOKEN = "driftloop", "11aa22bb33cc"
CRUMB, SESSION = "c0ffee", "JSESSIONID.abc=node01xyz"
FORM_BODY = ("model=${model}&cycle_id=${cycle_id}&attempt=${attempt}&reason=${reason}"
             "&data=${data_uri}&since=${since}&until=${until}")
REASON = 'drift & labels: "tenure" moved'


def jenkins(req: Seen) -> Answer:
    basic = "Basic " + base64.b64encode(f"{USER}:{API_TOKEN}".encode()).decode()
    if req.path == "/crumbIssuer/api/json" and req.method == "GET":
        if req.headers.get("authorization") != basic:
            return Answer(401, b"", {"Content-Type": "text/html"})
        return Answer(200, {"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": CRUMB,
                            "crumbRequestField": "Jenkins-Crumb"},
                      {"Set-Cookie": f"{SESSION}; Path=/; HttpOnly"})
    if req.path == "/job/retrain/buildWithParameters" and req.method == "POST":
        by_token = req.query.get("token") == [BUILD_TOKEN]
        by_crumb = (req.headers.get("authorization") == basic
                    and req.headers.get("jenkins-crumb") == CRUMB
                    and SESSION in req.headers.get("cookie", ""))
        if not (by_token or by_crumb):
            return Answer(403, b"No valid crumb was included in the request",
                          {"Content-Type": "text/html"})
        return Answer(201, b"", {"Location": "http://jenkins/queue/item/42/"})
    return Answer(404, b"Not Found", {"Content-Type": "text/html"})


@pytest.fixture
def ci() -> Iterator[StandIn]:
    with serve(jenkins) as api:
        yield api


def request() -> LaunchRequest:
    return LaunchRequest("churn", "churn-cycle-20261202T080000-3", 2,
                         Path("/etc/driftloop/specs/churn.yaml"), (), reason=REASON,
                         since=datetime(2026, 11, 1, tzinfo=UTC),
                         until=datetime(2026, 12, 1, tzinfo=UTC))


def launcher(tmp_path: Path, **settings: Any) -> WebhookLauncher:
    built = make_launcher(ControllerSettings(home=tmp_path, controller_launcher="webhook",
                                             **settings), httpx.Client())
    assert isinstance(built, WebhookLauncher)
    return built


def form_of(seen: Seen) -> dict[str, list[str]]:
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    return parse_qs(seen.body.decode(), keep_blank_values=True)


def test_jenkins_build_with_parameters_by_build_token(ci: StandIn, tmp_path: Path) -> None:
    hook = launcher(tmp_path, controller_webhook_url=f"{ci.url}/job/retrain/buildWithParameters"
                    "?token=${token}", controller_webhook_token=BUILD_TOKEN,
                    controller_webhook_body=FORM_BODY,
                    controller_webhook_content_type="application/x-www-form-urlencoded")

    assert "answered 201 (http://jenkins/queue/item/42/)" in hook.launch(request())

    (seen,) = ci.seen
    assert (seen.method, seen.path) == ("POST", "/job/retrain/buildWithParameters")
    assert seen.query == {"token": [BUILD_TOKEN]}
    assert form_of(seen) == {"model": ["churn"], "cycle_id": ["churn-cycle-20261202T080000-3"],
                             "attempt": ["2"], "reason": [REASON], "data": [""],
                             "since": ["2026-11-01T00:00:00+00:00"],
                             "until": ["2026-12-01T00:00:00+00:00"]}
    assert hook.status("churn-cycle-20261202T080000-3", 2).status == "unknown"


def test_jenkins_with_basic_auth_and_a_crumb(ci: StandIn, tmp_path: Path) -> None:
    hook = launcher(tmp_path, controller_webhook_url=f"{ci.url}/job/retrain/buildWithParameters",
                    controller_webhook_user=USER, controller_webhook_password=API_TOKEN,
                    controller_webhook_crumb_url=f"{ci.url}/crumbIssuer/api/json",
                    controller_webhook_body=FORM_BODY,
                    controller_webhook_content_type="application/x-www-form-urlencoded")

    hook.launch(request())

    crumb, build = ci.seen
    assert (crumb.method, crumb.path) == ("GET", "/crumbIssuer/api/json")
    assert build.headers["jenkins-crumb"] == CRUMB and SESSION in build.headers["cookie"]
    assert build.query == {}
    assert form_of(build)["reason"] == [REASON]


def test_any_endpoint_with_a_json_body_and_templated_headers(tmp_path: Path) -> None:
    with serve(lambda req: Answer(202, {"queued": True})) as api:
        hook = launcher(tmp_path, controller_webhook_url=f"{api.url}/hooks/${{model}}/retrain",
                        controller_webhook_method="put",
                        controller_webhook_headers={"Authorization": "Bearer ${token}",
                                                    "X-Cycle": "${cycle_id}"},
                        controller_webhook_token="hook-secret",
                        controller_webhook_body='{"model": "${model}", "reason": "${reason}", '
                        '"attempt": ${attempt}, "window": ["${since}", "${until}"]}')
        hook.launch(request())
    (seen,) = api.seen
    assert (seen.method, seen.path) == ("PUT", "/hooks/churn/retrain")
    assert seen.headers["authorization"] == "Bearer hook-secret"
    assert seen.headers["x-cycle"] == "churn-cycle-20261202T080000-3"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"model": "churn", "reason": REASON, "attempt": 2,
                                     "window": ["2026-11-01T00:00:00+00:00",
                                                "2026-12-01T00:00:00+00:00"]}


@pytest.mark.parametrize(("code", "error"), [(500, LaunchUnavailable), (503, LaunchUnavailable),
                                             (429, LaunchUnavailable), (403, LaunchError),
                                             (404, LaunchError)])
def test_answers_are_retryable_or_permanent(tmp_path: Path, code: int,
                                            error: type[Exception]) -> None:
    with serve(lambda req: Answer(code, b"no", {"Content-Type": "text/plain"})) as api, \
            pytest.raises(error) as raised:
        launcher(tmp_path, controller_webhook_url=f"{api.url}/x").launch(request())
    assert (error is LaunchUnavailable) == isinstance(raised.value, LaunchUnavailable)
    assert str(code) in str(raised.value)


def test_a_refused_crumb_and_an_unreachable_endpoint(ci: StandIn, tmp_path: Path) -> None:
    no_auth = launcher(tmp_path, controller_webhook_url=f"{ci.url}/job/retrain/"
                       "buildWithParameters", controller_webhook_crumb_url=f"{ci.url}/"
                       "crumbIssuer/api/json")
    with pytest.raises(LaunchError, match="401 to the crumb request"):
        no_auth.launch(request())
    with serve(lambda req: Answer(500)) as api:
        dead = api.url
    with pytest.raises(LaunchUnavailable, match="unreachable"):
        launcher(tmp_path, controller_webhook_url=f"{dead}/x").launch(request())


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "WEBHOOK_URL"),
    ({"controller_webhook_url": "http://ci/${job}"}, "unknown placeholder ${job}"),
    ({"controller_webhook_url": "http://ci/x", "controller_webhook_body": "cost $5"},
     "write $$ for a literal $"),
    ({"controller_webhook_url": "http://ci/x", "controller_webhook_user": "u"}, "both"),
])
def test_incomplete_settings_are_one_line_usage_errors(tmp_path: Path, settings: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(UsageError) as raised:
        launcher(tmp_path, **settings)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(("env", "message"), [
    ({"DRIFTLOOP_CONTROLLER_LAUNCHER": "webhook",
      "DRIFTLOOP_CONTROLLER_WEBHOOK_URL": "http://ci/${job}"}, "unknown placeholder ${job}"),
    ({"DRIFTLOOP_CONTROLLER_LAUNCHER": "argo"}, "DRIFTLOOP_CONTROLLER_ARGO_SERVER"),
    ({"DRIFTLOOP_CONTROLLER_LAUNCHER": "kubernetes",
      "DRIFTLOOP_CONTROLLER_KUBERNETES_IMAGE": "driftloop:0.1.0"}, "cannot configure"),
    ({"DRIFTLOOP_CONTROLLER_LAUNCHER": "jenkins"}, "kubernetes, argo, webhook"),
])
def test_start_up_refuses_incomplete_launcher_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        env: dict[str, str], message: str) -> None:
    """``driftloop controller`` exits 2 with one line before binding its port (no cluster
    configuration here: no kubeconfig, not in a pod)."""
    from driftloop.cli import main

    spec = Path(__file__).resolve().parents[2] / "examples" / "churn" / "spec.yaml"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_TOKEN", "t")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["controller", "--port", "1", "--spec", str(spec)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and message in err, err
