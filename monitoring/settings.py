"""Settings of ``driftloop drift-check`` (built in the command, never at import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from kernel.settings import CommonSettings


class MonitoringSettings(CommonSettings):
    model: str | None = Field(None, description="Registered model to check (DRIFTLOOP_MODEL).")
    controller_token: SecretStr | None = Field(
        None, description="Bearer token for POST <controller>/verdicts (DRIFTLOOP_CONTROLLER_TOKEN).")
    pushgateway_url: str | None = Field(
        None, description="Push verdict gauges here when set (DRIFTLOOP_PUSHGATEWAY_URL).")
    window_hours: float = Field(24.0, gt=0, description="Default window: the last N hours.")
    report_max_rows: int = Field(
        5_000, ge=100, description="The HTML report samples each side down to this many rows "
        "(the verdict always uses every row) (DRIFTLOOP_REPORT_MAX_ROWS).")
    http_timeout: float = Field(10.0, gt=0, description="Seconds for --post-to and the push.")
    log_retention_days: int | None = Field(
        None, ge=1, description="`driftloop log expire` deletes log partitions (predictions and "
        "labels) dated more than N days ago (DRIFTLOOP_LOG_RETENTION_DAYS); unset: keep "
        "everything.")
    label_match_days: int = Field(
        7, ge=0, description="How many days before a label's window its prediction may have "
        "been made: drift-check counts a label of the window whose request id matches no "
        "prediction of the model in that window or the N days before as never matched "
        "(`labels_unmatched`) (DRIFTLOOP_LABEL_MATCH_DAYS).")
    log_compact_after_seconds: float = Field(
        600.0, gt=0, description="`driftloop log compact` merges only flush files written more "
        "than this many seconds ago (files still being written are never touched).")
    drift_engine: Literal["exact", "summary", "spark"] = Field(
        "exact", description="How drift-check computes a prediction-log window: `exact` reads "
        "the window into memory (Evidently-identical scores, the HTML report); `summary` "
        "streams Parquet row groups into mergeable column summaries in bounded memory, stores "
        "each whole day's summary beside the log and reuses it (scores within the bounds in "
        "docs/monitoring.md, no HTML report); `spark` computes the same day summaries as "
        "Spark DataFrame aggregations (the `spark` extra; master and configuration from "
        "spark-submit) (DRIFTLOOP_DRIFT_ENGINE).")
    summary_memory_mib: int = Field(
        256, ge=16, description="The summary engine's working memory for one record batch, "
        "in MiB: it sets the rows per batch (DRIFTLOOP_SUMMARY_MEMORY_MIB).")
