"""The controller's settings (environment first, prefix ``DRIFTLOOP_``); built in factories."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, Field

from controller.gate import GatePolicy
from controller.model import Policy
from driftloop.settings import CommonSettings


class ControllerSettings(CommonSettings):
    controller_token: str | None = Field(None, description="Bearer token for mutating endpoints "
                                         "(DRIFTLOOP_CONTROLLER_TOKEN); unset: they all answer 401.")
    controller_host: str = "127.0.0.1"
    controller_port: int = 8001
    controller_url: str = Field("http://127.0.0.1:8001",
                                description="Where the CLI finds the controller.")
    controller_database_url: str | None = Field(
        None, description="SQLAlchemy URL of the state store; default sqlite:///<home>/controller.db")
    controller_specs: str = Field("", description="Comma-separated dataset spec paths: the models "
                                  "the controller manages.")
    serving_url: str | None = Field(None, description="Serving app to tell to reload after a move.")
    admin_token: str | None = None
    controller_launcher: str = Field("local", description="local | github")
    controller_github_repo: str | None = Field(None, description="owner/name for workflow_dispatch")
    controller_github_workflow: str = "retrain.yml"
    controller_github_ref: str = "main"
    controller_github_token: str | None = Field(
        None, validation_alias=AliasChoices("DRIFTLOOP_CONTROLLER_GITHUB_TOKEN", "GITHUB_TOKEN"))
    controller_github_api: str = "https://api.github.com"
    controller_notify_url: str | None = Field(None, description="Slack-compatible webhook URL.")
    # timing (seconds)
    controller_tick_seconds: float = 5.0
    controller_lease_seconds: float = 30.0
    controller_cooldown_seconds: float = 6 * 3600
    controller_failed_backoff_seconds: float = 1800
    controller_training_timeout_seconds: float = 3600
    controller_training_attempts: int = 3
    controller_evaluation_timeout_seconds: float = 24 * 3600
    controller_evaluate_every_seconds: float = 60
    controller_probation_seconds: float = 24 * 3600
    controller_rollback_margin: float = 0.02
    controller_performance_threshold: float | None = None
    # gate
    controller_min_pairs: int = 200
    controller_margin: float = 0.01
    controller_confidence: float = 0.95
    controller_bootstrap: int = 1000
    # retrain data and built-in triggers
    controller_recent_days: float = Field(14, description="Labelled production rows from the "
                                          "last N days join the spec's history (0: none).")
    controller_holdout_fraction: float = Field(0.3, description="Newest share of those rows "
                                               "kept out of training for offline replay.")
    controller_retrain_window_days: float | None = Field(
        None, description="Train only on rows from the last N days (--since); default all.")
    controller_schedule: str | None = Field(None, description="5-field cron (UTC) or @hourly, "
                                            "@daily, @weekly: scheduled retrains.")
    controller_retrain_labelled_rows: int | None = Field(
        None, description="Retrain once this many new labelled rows arrived since training.")
    controller_labels_check_seconds: float = 300

    def spec_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in self.controller_specs.split(",") if p.strip()]

    @property
    def database_url(self) -> str:
        return self.controller_database_url or f"sqlite:///{self.home_dir / 'controller.db'}"

    def policy(self, *, lower_is_better: bool = False) -> Policy:
        s = timedelta(seconds=1)
        return Policy(
            cooldown=self.controller_cooldown_seconds * s,
            failed_backoff=self.controller_failed_backoff_seconds * s,
            training_timeout=self.controller_training_timeout_seconds * s,
            training_attempts=self.controller_training_attempts,
            evaluation_timeout=self.controller_evaluation_timeout_seconds * s,
            probation=self.controller_probation_seconds * s,
            rollback_margin=self.controller_rollback_margin,
            performance_threshold=self.controller_performance_threshold,
            lower_is_better=lower_is_better,
        )

    def gate_policy(self) -> GatePolicy:
        return GatePolicy(min_pairs=self.controller_min_pairs, margin=self.controller_margin,
                          confidence=self.controller_confidence, n_boot=self.controller_bootstrap)
