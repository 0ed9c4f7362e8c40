"""The controller's settings (environment first, prefix ``DRIFTLOOP_``); built in factories."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.gate import GatePolicy
from controller.machine import Policy
from controller.schedule import validate as validate_schedule
from kernel.settings import CommonSettings


class ControllerPolicy(BaseSettings):
    """What the controller decides by: cooldowns, timeouts, the gate's knobs, retraining windows.

    These are the settings a backtest's policy file may set (backtest/adapters.py reads this
    class's fields); everything in ``ControllerSettings`` beyond them is wiring (addresses,
    tokens, stores, launchers, loop periods) that a replay sets itself."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore")

    controller_cooldown_seconds: float = Field(6 * 3600, description="After a decision, "
                                               "automatic triggers are held back this long.")
    controller_failed_backoff_seconds: float = Field(1800, description="After a failed cycle, "
                                                     "automatic triggers are held back this long.")
    controller_training_timeout_seconds: float = Field(3600, description="A training attempt "
                                                       "without a registered version fails after this.")
    controller_training_attempts: int = Field(3, description="Training attempts per cycle before "
                                              "it fails (usage/data errors are not retried).")
    controller_evaluation_timeout_seconds: float = Field(
        72 * 3600, description="Shadow phase limit; then the challenger is rejected. Longer than "
        "a typical label delay (a day), so that shadow pairs can get labels in time.")
    controller_probation_seconds: float = Field(24 * 3600, description="After a promotion, how "
                                                "long automatic rollbacks are allowed.")
    controller_rollback_margin: float = Field(0.02, description="Roll back when the new "
                                              "champion's realised metric is this far below the old one's.")
    controller_performance_threshold: float | None = Field(
        None, description="Realised metric below this triggers a retrain; unset: only degraded "
        "verdicts do.")
    # gate
    controller_min_pairs: int = Field(200, description="Gate: labelled pairs needed before it "
                                      "decides.")
    controller_margin: float = Field(0.01, description="Gate: non-inferiority margin in metric "
                                     "units (promote when CI low >= -margin).")
    controller_confidence: float = Field(0.95, description="Gate: confidence level of the "
                                         "confidence sequence (valid at every look at once).")
    controller_bootstrap: int = Field(1000, description="Gate: bootstrap resamples (only for "
                                      "average_precision's variance).")
    controller_gate_tuning_pairs: int = Field(
        2000, ge=1, description="Gate: the confidence sequence is tightest around this many "
        "pairs (wider before and after; valid at every n whatever it is).")
    controller_require_superiority: Literal["never", "scheduled", "always"] = Field(
        "never", description="Gate: promote only a challenger better than the champion (CI low "
        "> 0) instead of non-inferior: never, scheduled (routine retrains: schedule or "
        "labelled-rows triggers only) or always.")
    # retrain data and built-in triggers
    controller_recent_days: float = Field(14, description="Labelled production rows from the "
                                          "last N days join the spec's history (0: none).")
    controller_holdout_fraction: float = Field(0.3, description="Newest share of those rows "
                                               "(within the retrain window) kept out of training "
                                               "for offline replay.")
    controller_retrain_window_days: float | None = Field(
        None, description="Train only on rows from the last N days (--since); default all.")
    controller_schedule: str | None = Field(None, description="5-field cron (UTC; named days and "
                                            "months allowed) or @hourly, @daily, @weekly: "
                                            "scheduled retrains.")
    controller_retrain_labelled_rows: int | None = Field(
        None, description="Retrain once this many new labelled rows arrived since training.")
    controller_offline_replay: bool = Field(
        True, description="Let an offline replay of both models on labelled rows the challenger "
        "was not trained on decide; false: only live shadow pairs decide.")

    @field_validator("controller_schedule")
    @classmethod
    def _schedule_is_cron(cls, value: str | None) -> str | None:
        """A malformed schedule stops start-up: the settings cannot be built with one
        (a UsageError, not a ValidationError: the CLI prints one line and exits 2)."""
        if value is None or not value.strip():
            return value
        return validate_schedule(value)


class ControllerSettings(CommonSettings, ControllerPolicy):
    """The controller deployable: its wiring, plus the policy it decides by."""

    controller_token: str | None = Field(None, description="Bearer token for mutating endpoints "
                                         "(DRIFTLOOP_CONTROLLER_TOKEN); unset: they all answer 401.")
    controller_host: str = Field("127.0.0.1", description="Address the controller listens on.")
    controller_port: int = Field(8001, description="Port the controller listens on.")
    controller_url: str = Field("http://127.0.0.1:8001",
                                description="Where the CLI finds the controller.")
    controller_database_url: str | None = Field(
        None, description="SQLAlchemy URL of the state store; default sqlite:///<home>/controller.db; "
        "postgresql+psycopg://... for several replicas.")
    controller_specs: str = Field("", description="Comma-separated dataset spec paths: the models "
                                  "the controller manages.")
    serving_url: str | None = Field(None, description="Serving app to tell to reload after a move.")
    admin_token: str | None = Field(None, description="Bearer token for the serving app's "
                                    "/admin/reload.")
    controller_launcher: str = Field("local", description="How retraining runs: local (a "
                                     "driftloop train process) or github (workflow_dispatch).")
    controller_github_repo: str | None = Field(None, description="owner/name for workflow_dispatch")
    controller_github_workflow: str = Field("retrain.yml", description="Workflow file that "
                                            "retrains (github launcher).")
    controller_github_ref: str = Field("main", description="Git ref the workflow runs on.")
    controller_github_token: str | None = Field(
        None, validation_alias=AliasChoices("DRIFTLOOP_CONTROLLER_GITHUB_TOKEN", "GITHUB_TOKEN"),
        description="Token allowed to dispatch the workflow (github launcher).")
    controller_github_api: str = Field("https://api.github.com",
                                       description="GitHub API base URL (GitHub Enterprise: its own).")
    controller_github_data_uri: str | None = Field(
        None, description="Where the github launcher copies each cycle's recent labelled rows "
        "for the workflow (an s3:// prefix the runner reads; files go to "
        "<uri>/<model>/cycles/<cycle id>.parquet). Unset: the workflow trains without them.")
    controller_notify_url: str | None = Field(None, description="Slack-compatible webhook URL.")
    # timing (seconds)
    controller_tick_seconds: float = Field(5.0, description="Reconcile loop period in seconds "
                                           "(intake wakes it at once).")
    controller_lease_seconds: float = Field(30.0, description="Per-model lease: how long a "
                                            "replica holds a model without renewing it.")
    controller_evaluate_every_seconds: float = Field(60, description="How often the gate is "
                                                     "evaluated during the shadow phase.")
    controller_labels_check_seconds: float = Field(300, description="How often the labelled-rows "
                                                   "trigger counts new labels.")
    controller_max_body_bytes: int = Field(
        10_000_000, ge=1024, description="Largest request body the intake reads (413 above).")
    controller_retention_days: float = Field(
        30, ge=0, description="Stored webhook/verdict bodies and finished (done, resolved, "
        "ignored) triggers older than this many days are deleted, hourly; pending triggers, "
        "cycles and decisions are kept. 0: keep everything.")

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
            require_superiority=self.controller_require_superiority,
        )

    def gate_policy(self) -> GatePolicy:
        return GatePolicy(min_pairs=self.controller_min_pairs, margin=self.controller_margin,
                          confidence=self.controller_confidence, n_boot=self.controller_bootstrap,
                          tuning_pairs=self.controller_gate_tuning_pairs)
