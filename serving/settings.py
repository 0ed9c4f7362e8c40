"""Settings of the serving app (``DRIFTLOOP_`` environment variables; docs/serving.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from kernel.settings import CommonSettings


class ServingSettings(CommonSettings):
    """Built in the factory or the CLI, never at import."""

    model: str | None = Field(None, description="Registered model name to serve (DRIFTLOOP_MODEL).")
    serving_host: str = Field("127.0.0.1", description="Address to listen on.")
    serving_port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    serving_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    admin_token: str | None = Field(
        None, description="Bearer token for POST /admin/reload; unset: the endpoint refuses all.")
    feedback_token: str | None = Field(
        None, description="Bearer token for POST /feedback (checked before the body is read); "
        "unset: the endpoint refuses all.")
    serving_poll_interval: float = Field(
        5.0, gt=0, description="Seconds between alias polls once a model is loaded.")
    serving_retry_interval: float = Field(
        2.0, gt=0, description="Seconds between load attempts while no model is loaded.")
    serving_batch_limit: int = Field(1000, ge=1, description="Most records per /predict/batch.")
    serving_max_body_bytes: int = Field(
        4_000_000, ge=1024, description="Largest request body accepted (413 above).")
    serving_max_text_chars: int = Field(
        10_000, ge=1, description="Longest text a text feature may carry in a request, in "
        "characters (422 naming the feature above).")
    serving_check_rows: int = Field(
        2000, ge=10, description="Reference rows a new version is checked (and its fast path "
        "verified) on before it is swapped in.")
    serving_cache_versions: int = Field(
        3, ge=1, description="Downloaded versions kept under <home>/cache/<model>.")
    serving_metrics: bool = Field(True, description="Record Prometheus metrics (off: benchmarks).")
    serving_log: bool = Field(True, description="Write the prediction log (off: benchmarks).")
    serving_shadow: bool = Field(True, description="Shadow-score @challenger when it exists.")
    serving_shadow_queue: int = Field(
        10_000, ge=1, description="Shadow queue bound; when full, shadow samples are dropped.")
    serving_shadow_cpu_share: float = Field(
        0.02, gt=0, le=1, description="Most of one core the shadow scorer may use (it rests "
        "between batches); the shadow sample rate is derived from it, the challenger's cost "
        "per row and the load (driftloop_shadow_target_rate).")
    serving_shadow_adaptive: bool = Field(
        True, description="Derive the shadow sample rate from the CPU share (above); false: "
        "shadow every request the queue has room for, whatever it costs (the demo: the same "
        "requests shadowed on every run).")
    serving_fast_path: bool = Field(
        True, description="Use the compiled array path when it matches scikit-learn.")
    log_sample_rate: float = Field(
        1.0, ge=0, le=1, description="Share of predictions written to the log (by request id).")
    log_flush_interval: float = Field(1.0, gt=0, le=1.0, description="Seconds between flushes.")
    log_max_buffer: int = Field(
        2_000_000, ge=1, description="Rows (and labels) kept in memory while the log store fails; "
        "beyond it the oldest are dropped, counted as lost buffer_full.")
    log_spool_dir: Path | None = Field(
        None, description="Where rows the store cannot take at shutdown are spooled (replayed "
        "on the next start); unset: <home>/spool.")
    log_stall_seconds: float = Field(
        30.0, gt=0, description="The writer is unhealthy when buffered rows wait this long "
        "without a successful flush.")
    log_failure_mode: Literal["unready", "serve"] = Field(
        "unready", description="While the log writer is unhealthy: 'unready' answers /readyz "
        "503 with its reason; 'serve' keeps /readyz 200 (the reason in its body, the alert "
        "DriftloopLogWriteFailing fires either way).")

    @property
    def cache_dir(self) -> Path:
        return self.home_dir / "cache"

    @property
    def spool_dir(self) -> Path:
        return self.log_spool_dir if self.log_spool_dir is not None else self.home_dir / "spool"
