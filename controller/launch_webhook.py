"""Retraining through any HTTP endpoint (``DRIFTLOOP_CONTROLLER_LAUNCHER=webhook``): a Jenkins
job's ``buildWithParameters``, a GitLab pipeline trigger, an in-house service.

The request is documented by its settings: a method, a URL template, headers, and a body
template in :class:`string.Template` syntax with ``${model}``, ``${reason}``, ``${cycle_id}``,
``${attempt}``, ``${data_uri}`` (the recent rows in the object store, or empty), ``${since}``,
``${until}`` (ISO 8601 or empty) and ``${token}``. Values are escaped for where they go:
URL-encoded in the URL and in a form body (``application/x-www-form-urlencoded``), JSON
string escaped in a JSON body (so ``"${reason}"`` stays valid JSON), as given in headers.
Jenkins: a build token (``${token}`` in the URL's ``token`` parameter), or HTTP basic auth
with an API token, and optionally a crumb from ``/crumbIssuer/api/json`` sent in the header
that answer names, with that answer's session cookie.

Any 2xx is a launch. 429, 5xx and an unreachable endpoint are retryable; any other answer is
permanent. The endpoint gives no status: the outcome is read from the registry, the version
tagged ``driftloop.cycle_id`` (``status`` is ``unknown``, as for GitHub). The launch is not
deduplicated by the endpoint: a controller that crashes between the request and recording it
sends it again, as the GitHub launcher would (a Jenkins job can skip a cycle id it has built).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Template
from urllib.parse import quote, quote_plus

import httpx

from controller.launcher import (
    LaunchError,
    LaunchRequest,
    LaunchStatus,
    LaunchUnavailable,
    upload_recent,
)
from kernel.errors import UsageError

log = logging.getLogger(__name__)

PLACEHOLDERS = ("model", "reason", "cycle_id", "attempt", "data_uri", "since", "until", "token")
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def check_template(text: str, setting: str) -> None:
    """A one-line UsageError for a placeholder the launcher does not fill, or a bad ``$``."""
    try:
        Template(text).substitute({k: "" for k in PLACEHOLDERS})
    except KeyError as exc:
        raise UsageError(f"{setting}: unknown placeholder ${{{exc.args[0]}}} (known: "
                         f"{', '.join(PLACEHOLDERS)})") from None
    except ValueError as exc:
        raise UsageError(f"{setting}: {exc} (write $$ for a literal $)") from None


def _escaped(values: Mapping[str, str], content_type: str) -> dict[str, str]:
    if content_type == FORM:
        return {k: quote_plus(v) for k, v in values.items()}
    if content_type == JSON:
        return {k: json.dumps(v)[1:-1] for k, v in values.items()}
    return dict(values)


@dataclass
class WebhookLauncher:
    client: httpx.Client
    url: str                                    # template
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    content_type: str = JSON
    token: str | None = None
    auth: tuple[str, str] | None = None         # basic auth (Jenkins user, API token)
    crumb_url: str | None = None                # Jenkins crumb issuer
    data_uri: str | None = None

    def launch(self, request: LaunchRequest) -> str:
        data = upload_recent(request, self.data_uri, "DRIFTLOOP_CONTROLLER_LAUNCH_DATA_URI")
        values = {"model": request.model, "reason": request.reason[:1000],
                  "cycle_id": request.cycle_id, "attempt": str(request.attempt),
                  "data_uri": data or "",
                  "since": request.since.isoformat() if request.since else "",
                  "until": request.until.isoformat() if request.until else "",
                  "token": self.token or ""}
        url = Template(self.url).substitute({k: quote(v, safe="") for k, v in values.items()})
        headers = {k: Template(v).substitute(values) for k, v in self.headers.items()}
        if self.crumb_url:
            field_name, crumb, session = self._crumb()
            headers[field_name] = crumb
            if session:
                headers["Cookie"] = session
        content = None
        if self.body:
            content = Template(self.body).substitute(_escaped(values, self.content_type))
            headers.setdefault("Content-Type", self.content_type)
        try:
            response = self.client.request(self.method, url, headers=headers, content=content,
                                           auth=self.auth, timeout=30)
        except httpx.HTTPError as exc:
            raise LaunchUnavailable(f"webhook unreachable: {exc}") from exc
        _check(response, "the launch")
        where = response.headers.get("Location")   # Jenkins: the queue item
        log.info("%s attempt %d: webhook answered %d", request.cycle_id, request.attempt,
                 response.status_code)
        return f"webhook {self.method} answered {response.status_code}" + \
            (f" ({where})" if where else "")

    def status(self, cycle_id: str, attempt: int) -> LaunchStatus:
        return LaunchStatus("unknown", detail="outcome read from the registry")

    def _crumb(self) -> tuple[str, str, str]:
        """Jenkins' CSRF crumb: ``{"crumb": ..., "crumbRequestField": "Jenkins-Crumb"}``, bound to
        the session cookie of the same answer."""
        assert self.crumb_url is not None
        try:
            response = self.client.get(self.crumb_url, auth=self.auth, timeout=30)
        except httpx.HTTPError as exc:
            raise LaunchUnavailable(f"crumb issuer unreachable: {exc}") from exc
        _check(response, "the crumb request")
        try:
            answer = response.json()
            session = "; ".join(f"{k}={v}" for k, v in response.cookies.items())
            return str(answer["crumbRequestField"]), str(answer["crumb"]), session
        except (ValueError, KeyError, TypeError) as exc:
            raise LaunchError(f"the crumb issuer's answer has no crumb: {exc}") from exc


def _check(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    text = f"webhook answered {response.status_code} to {what}: {response.text[:300]}"
    if response.status_code == 429 or response.status_code >= 500:
        raise LaunchUnavailable(text)
    raise LaunchError(text)
