"""Prometheus and Alertmanager configuration for given addresses.

``monitoring/prometheus/prometheus.yml`` and ``monitoring/alertmanager/alertmanager.yml``
are the docker-compose variants (service names as hosts, the token as a compose secret).
Processes on one machine (the demo, the e2e tests) need the same configuration with their
own ports: these functions write it, with the same rules, jobs and routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
PROMETHEUS_DIR = HERE / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
ALERTMANAGER_FILE = HERE / "alertmanager" / "alertmanager.yml"
GRAFANA_DIR = HERE / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "driftloop.json"

SERVING_JOB = "driftloop-serving"
CONTROLLER_JOB = "driftloop-controller"
PUSHGATEWAY_JOB = "driftloop-pushgateway"
WEBHOOK_PATH = "/webhooks/alertmanager"


def _host(address: str) -> str:
    """``http://127.0.0.1:8000/`` or ``127.0.0.1:8000`` -> ``127.0.0.1:8000``."""
    return address.split("://", 1)[-1].rstrip("/")


def _duration(value: str | float) -> str:
    if isinstance(value, int | float):
        return f"{int(value * 1000)}ms" if value < 1 else f"{int(value)}s"
    return value


def prometheus_config(serving: str | Sequence[str], controller: str | None,
                      alertmanager: str | None, interval: str | float = "15s", *,
                      model: str = "churn", pushgateway: str | None = None,
                      rule_files: Sequence[str | Path] | None = None) -> dict:
    """The configuration as a dict (see ``render_prometheus_config``)."""
    servings = [serving] if isinstance(serving, str) else list(serving)
    every = _duration(interval)
    scrape = [{"job_name": SERVING_JOB, "honor_labels": True,
               "static_configs": [{"targets": [_host(s) for s in servings],
                                   "labels": {"model": model}}]}]
    if controller:
        scrape.append({"job_name": CONTROLLER_JOB,
                       "static_configs": [{"targets": [_host(controller)]}]})
    if pushgateway:
        scrape.append({"job_name": PUSHGATEWAY_JOB, "honor_labels": True,
                       "static_configs": [{"targets": [_host(pushgateway)]}]})
    config: dict = {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "rule_files": [str(p) for p in (rule_files if rule_files is not None
                                        else [RULES_DIR / "*.yml"])],
        "scrape_configs": scrape,
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [_host(alertmanager)]}]}]}
    return config


def render_prometheus_config(serving: str | Sequence[str], controller: str | None,
                             alertmanager: str | None, interval: str | float = "15s", *,
                             out: Path | None = None, model: str = "churn",
                             pushgateway: str | None = None,
                             rule_files: Sequence[str | Path] | None = None) -> str:
    """prometheus.yml scraping these addresses (``host:port`` or URLs), with driftloop's
    rules (absolute paths) unless ``rule_files`` says otherwise; written to ``out`` if given.
    ``interval`` sets both scrape and evaluation intervals ("1s", 15, ...)."""
    text = yaml.safe_dump(prometheus_config(serving, controller, alertmanager, interval,
                                            model=model, pushgateway=pushgateway,
                                            rule_files=rule_files), sort_keys=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return text


def render_alertmanager_config(controller: str = "http://127.0.0.1:8001", *,
                               token_file: str | Path, group_wait: str = "30s",
                               group_interval: str = "5m", repeat_interval: str = "4h",
                               out: Path | None = None) -> str:
    """alertmanager.yml routing driftloop alerts to ``controller``'s webhook, with the
    bearer token read from ``token_file``; the timings default to the shipped file's."""
    base = controller if "://" in controller else f"http://{controller}"
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    route = config["route"]["routes"][0]
    route.update(group_wait=group_wait, group_interval=group_interval,
                 repeat_interval=repeat_interval)
    hook = next(r for r in config["receivers"] if r["name"] == "driftloop-controller")
    webhook = hook["webhook_configs"][0]
    webhook["url"] = base.rstrip("/") + WEBHOOK_PATH
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    text = yaml.safe_dump(config, sort_keys=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return text
