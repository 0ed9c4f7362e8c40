"""Settings shared by every deployable: where things live.

Environment first (``DRIFTLOOP_`` prefix) plus MLflow's own ``MLFLOW_TRACKING_URI``.
With nothing set, everything lives under ``./.driftloop/`` (the embedded default).
Settings are built in factories and entry points, never at import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.clock import Clock, clock_for


class CommonSettings(BaseSettings):
    """Locations and the registry; each deployable's settings extend this class."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore")

    home: Path = Field(
        Path(".driftloop"),
        description="Directory of the embedded default: MLflow store, logs, state, reports.",
    )
    tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "DRIFTLOOP_TRACKING_URI"),
        description="MLflow tracking URI; default sqlite:///<home>/mlflow.db.",
    )
    registry_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_REGISTRY_URI", "DRIFTLOOP_REGISTRY_URI"),
        description="MLflow registry URI; default: the tracking URI.",
    )
    artifact_root: str | None = Field(
        None,
        description="Artifact location for experiments driftloop creates; "
        "default <home>/artifacts with the embedded store, the server's default otherwise.",
    )
    log_uri: str | None = Field(
        None,
        description="Where the prediction and label logs live (a directory or an "
        "object-store URI such as s3://bucket/prefix); default <home>/log.",
    )
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, description="Both HTTP apps: a connection that has not sent a request's "
        "headers this long after connecting (or after starting the request) is answered 408 "
        "and closed.",
    )
    http_body_timeout_seconds: float = Field(
        30.0, gt=0, description="Both HTTP apps: a request body not received whole within "
        "this many seconds is refused with 408.",
    )

    simulated_clock_file: Path | None = Field(
        None, description="Demo and testing only: a file holding an ISO 8601 instant that "
        "replaces the wall clock (log rows, labels, the controller's cycles, cooldowns, "
        "windows and gate looks, verdicts); whoever writes it decides the time "
        "(`driftloop demo` does). Unset: the wall clock.",
    )

    def clock(self) -> Clock:
        """The wall clock, or the simulated one that ``simulated_clock_file`` names."""
        return clock_for(self.simulated_clock_file)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def resolved_artifact_root(self) -> str | None:
        if self.artifact_root:
            return self.artifact_root
        if self.tracking_uri:
            return None
        return (self.home_dir / "artifacts").as_uri()

    @property
    def resolved_log_uri(self) -> str:
        return self.log_uri or str(self.home_dir / "log")

    @property
    def reports_dir(self) -> Path:
        return self.home_dir / "reports"
