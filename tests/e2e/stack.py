"""The whole topology as real processes on loopback, for the end-to-end tests.

MLflow (sqlite store), ``driftloop serve``, ``driftloop controller``, and Debian's
``prometheus`` and ``prometheus-alertmanager`` configured from ``monitoring/`` with short
intervals. The shipped alert rules are used as they are, except that their ``for:`` durations
and range windows are shortened so that a test sees an alert in seconds, not minutes.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from driftloop.processes import ProcessGroup, driftloop_command, free_port, wait_http, wait_until
from monitoring.alerting import RULES_DIR, render_alertmanager_config, render_prometheus_config
from tests.conftest import require_binary


def shortened_rules(names: set[str], dest: Path, *, window: str = "30s", hold: str = "2s") -> Path:
    """The shipped rules named ``names``, with every range window set to ``window`` and
    every ``for:`` to ``hold``; written as one rule file."""
    groups = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            chosen = [r for r in group["rules"] if r.get("alert") in names]
            # the group's recording rules come along (slo.yml's alerts read its burn rates)
            rules = [r for r in group["rules"] if "record" in r] + chosen if chosen else []
            for rule in rules:
                rule["expr"] = re.sub(r"\[[0-9]+[smhdw]\]", f"[{window}]", rule["expr"])
                if "alert" in rule:
                    rule["for"] = hold
            if rules:
                groups.append({"name": group["name"], "interval": "1s", "rules": rules})
    assert {r["alert"] for g in groups for r in g["rules"] if "alert" in r} == names, \
        "rule names changed?"
    dest.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return dest


@dataclass
class Stack:
    root: Path
    spec: Path
    controller_env: dict[str, str] = field(default_factory=dict)
    alert_rules: set[str] = field(default_factory=lambda: {"DriftloopUnseenCategoryRate"})
    group: ProcessGroup = field(init=False)
    env: dict[str, str] = field(default_factory=dict)
    feedback_token: str = field(default_factory=lambda: secrets.token_hex(12))
    serving_url: str = ""
    controller_url: str = ""
    prometheus_url: str = ""
    alertmanager_url: str = ""

    def start(self) -> Stack:
        prometheus = require_binary("prometheus")
        alertmanager = require_binary("prometheus-alertmanager")
        self.group = ProcessGroup(self.root / "logs")
        ports = {name: free_port() for name in ("serving", "controller", "prom", "am")}
        self.serving_url = f"http://127.0.0.1:{ports['serving']}"
        self.controller_url = f"http://127.0.0.1:{ports['controller']}"
        self.prometheus_url = f"http://127.0.0.1:{ports['prom']}"
        self.alertmanager_url = f"http://127.0.0.1:{ports['am']}"
        token = secrets.token_hex(12)
        self.env.update({
            "DRIFTLOOP_SERVING_PORT": str(ports["serving"]),
            "DRIFTLOOP_SERVING_POLL_INTERVAL": "1",
            "DRIFTLOOP_CONTROLLER_PORT": str(ports["controller"]),
            "DRIFTLOOP_CONTROLLER_URL": self.controller_url,
            "DRIFTLOOP_CONTROLLER_TOKEN": token,
            "DRIFTLOOP_ADMIN_TOKEN": secrets.token_hex(12),
            "DRIFTLOOP_FEEDBACK_TOKEN": self.feedback_token,
            "DRIFTLOOP_CONTROLLER_SPECS": str(self.spec),
            "DRIFTLOOP_SERVING_URL": self.serving_url,
            "DRIFTLOOP_CONTROLLER_TICK_SECONDS": "0.5",
            "DRIFTLOOP_CONTROLLER_EVALUATE_EVERY_SECONDS": "1",
            "DRIFTLOOP_CONTROLLER_MIN_PAIRS": "300",
            **self.controller_env,
        })
        serving = self.group.start("serving", driftloop_command("serve", "--model", "churn"),
                                   env=self.env)
        controller = self.group.start("controller", driftloop_command("controller"), env=self.env)

        token_file = self.root / "controller-token"
        token_file.write_text(token)
        am_config = self.root / "alertmanager.yml"
        render_alertmanager_config(self.controller_url, token_file=token_file, group_wait="1s",
                                   group_interval="2s", repeat_interval="1m", out=am_config)
        am = self.group.start("alertmanager", [
            alertmanager, f"--config.file={am_config}", f"--storage.path={self.root / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{ports['am']}", "--cluster.listen-address="])
        rules = shortened_rules(self.alert_rules, self.root / "rules.yml")
        prom_config = self.root / "prometheus.yml"
        render_prometheus_config(self.serving_url, self.controller_url, self.alertmanager_url,
                                 "1s", out=prom_config, rule_files=[rules])
        prom = self.group.start("prometheus", [
            prometheus, f"--config.file={prom_config}",
            f"--storage.tsdb.path={self.root / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{ports['prom']}"])
        wait_http(f"{self.alertmanager_url}/-/ready", timeout=60, child=am)
        wait_http(f"{self.prometheus_url}/-/ready", timeout=60, child=prom)
        wait_http(f"{self.serving_url}/readyz", timeout=120, child=serving)
        wait_http(f"{self.controller_url}/healthz", timeout=120, child=controller)
        wait_until(self.targets_up, timeout=60, what="Prometheus targets up", interval=0.5,
                   child=prom)
        return self

    def targets_up(self) -> bool:
        data = httpx.get(f"{self.prometheus_url}/api/v1/targets", timeout=5).json()
        active = data["data"]["activeTargets"]
        return len(active) >= 2 and all(t["health"] == "up" for t in active)

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.controller_url}/status", timeout=10).json()["churn"]

    def model(self) -> dict[str, Any]:
        return httpx.get(f"{self.serving_url}/model", timeout=10).json()

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.prometheus_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]

    def controller_metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.controller_url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.group.stop()
