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
        None, description="With the spec's retrain.window auto (the default): retrains with "
        "no located change (scheduled, new labels, manual) train only on rows from the last N "
        "days (--since); default all. A drift or degraded alarm that locates a change trains "
        "from the change; retrain.window all or N days replaces this setting.")
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
    controller_tokens: str | None = Field(
        None, description="Per-person or per-system bearer tokens as name:token pairs, "
        "comma-separated (alice:tok1,ci-bot:tok2): the name is the actor recorded on the "
        "overrides that token makes (docs/controller.md, Who is recorded).")
    controller_tokens_file: Path | None = Field(
        None, description="File of name:token lines (# comments allowed), read at start-up; "
        "adds to DRIFTLOOP_CONTROLLER_TOKENS.")
    controller_mlflow_webhook_secret: str | None = Field(
        None, description="Secret of the MLflow registry webhook that posts to /webhooks/mlflow "
        "(HMAC-SHA256); unset: every delivery is refused (401).")
    controller_mlflow_webhook_tolerance_seconds: float = Field(
        300, gt=0, description="An MLflow webhook delivery whose X-MLflow-Timestamp is further "
        "than this from the controller's clock is refused as stale (401).")
    controller_foreign_check_seconds: float = Field(
        300, ge=0, description="How often the reconcile pass compares the aliases with "
        "driftloop's records to find moves made outside it (an MLflow webhook makes it look "
        "at once).")
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
                                     "driftloop train process), github (workflow_dispatch), "
                                     "kubernetes (a Job), argo (a WorkflowTemplate) or webhook "
                                     "(Jenkins or any HTTP endpoint).")
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
    controller_launch_data_uri: str | None = Field(
        None, description="Where the kubernetes, argo and webhook launchers copy each cycle's "
        "recent labelled rows (an s3:// prefix the training run reads; files go to "
        "<uri>/<model>/cycles/<cycle id>.parquet). Unset: the rows stay on the controller.")
    # kubernetes launcher (docs/deploy.md, "Retraining as a Kubernetes Job")
    controller_kubernetes_job_template: str | None = Field(
        None, description="What each training Job starts from (volumes, envFrom Secrets, "
        "security context): cronjob/<name> (a CronJob's jobTemplate in the namespace, read at "
        "each launch, as kubectl create job --from=cronjob/<name>) or a YAML file holding a "
        "Job or a CronJob.")
    controller_kubernetes_image: str | None = Field(
        None, description="Image of the training Job's container (the driftloop image); "
        "overrides the template's.")
    controller_kubernetes_namespace: str | None = Field(
        None, description="Namespace of the training Jobs; unset: the controller's own "
        "(in cluster), else default.")
    controller_kubernetes_kubeconfig: Path | None = Field(
        None, description="kubeconfig file to reach the API; unset: the in-cluster service "
        "account, else $KUBECONFIG or ~/.kube/config.")
    controller_kubernetes_service_account: str | None = Field(
        None, description="ServiceAccount the training pods run as (overrides the template's).")
    controller_kubernetes_resources: dict[str, dict[str, str]] | None = Field(
        None, description='Training container resources as JSON, e.g. {"requests": {"cpu": '
        '"1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}} (overrides the template\'s).')
    controller_kubernetes_node_selector: dict[str, str] | None = Field(
        None, description="Training pods' nodeSelector as a JSON object (overrides the "
        "template's).")
    controller_kubernetes_tolerations: list[dict[str, str | int]] | None = Field(
        None, description="Training pods' tolerations as a JSON list (overrides the template's).")
    controller_kubernetes_ttl_seconds: int | None = Field(
        None, ge=0, description="ttlSecondsAfterFinished of each Job; unset: the template's, "
        "else 86400.")
    controller_kubernetes_deadline_seconds: int | None = Field(
        None, gt=0, description="activeDeadlineSeconds of each Job; unset: the template's, else "
        "none (the cycle's training timeout still applies).")
    controller_kubernetes_backoff_limit: int | None = Field(
        None, ge=0, description="backoffLimit of each Job; unset: the template's, else 0 (the "
        "controller's own attempts retry: DRIFTLOOP_CONTROLLER_TRAINING_ATTEMPTS).")
    # argo launcher
    controller_argo_server: str | None = Field(
        None, description="Argo Server base URL (https://argo-server.argo:2746).")
    controller_argo_token: str | None = Field(
        None, description="Bearer token for the Argo Server (a ServiceAccount token).")
    controller_argo_namespace: str = Field("default", description="Namespace the Workflows "
                                           "run in (the WorkflowTemplate's).")
    controller_argo_template: str = Field("driftloop-train", description="WorkflowTemplate "
                                          "that trains (argo launcher).")
    # webhook launcher (Jenkins buildWithParameters or any endpoint)
    controller_webhook_url: str | None = Field(
        None, description="URL template of the webhook launcher's request (placeholders as "
        "in the body, URL-encoded), e.g. https://ci/job/retrain/buildWithParameters.")
    controller_webhook_method: str = Field("POST", description="HTTP method of the webhook "
                                           "launcher's request.")
    controller_webhook_headers: dict[str, str] = Field(
        {}, description="Headers of the webhook request as a JSON object "
        "(values may hold the placeholders, ${token} among them).")
    controller_webhook_body: str = Field(
        "", description="Body template: ${model} ${reason} ${cycle_id} ${attempt} ${data_uri} "
        "${since} ${until} ${token}, escaped for the content type (JSON or form).")
    controller_webhook_content_type: str = Field(
        "application/json", description="Content type of the webhook body: application/json "
        "or application/x-www-form-urlencoded (Jenkins).")
    controller_webhook_token: str | None = Field(
        None, description="Secret for ${token} (a Jenkins build token, a bearer token).")
    controller_webhook_user: str | None = Field(
        None, description="User for HTTP basic auth on the webhook (Jenkins: with an API token "
        "as DRIFTLOOP_CONTROLLER_WEBHOOK_PASSWORD).")
    controller_webhook_password: str | None = Field(
        None, description="Password or API token for HTTP basic auth on the webhook.")
    controller_webhook_crumb_url: str | None = Field(
        None, description="Jenkins crumb issuer (https://ci/crumbIssuer/api/json): its crumb "
        "is sent as the header it names, with its session cookie.")
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
    controller_slo_check_seconds: float = Field(
        300, gt=0, description="How often each SLO of a spec (slo:) is evaluated on its rolling "
        "labelled window (docs/slo.md).")
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
