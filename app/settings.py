"""Service settings, read from ``TSSYNTH_*`` environment variables.

Environment variables (not a config file) because the service runs in containers, where the
environment is the one channel every orchestrator offers. Every limit is a setting so an operator
can size the service to its hardware without a code change.

Admin token policy: when ``TSSYNTH_ADMIN_TOKEN`` is unset the admin endpoints answer 503. A token
generated at startup would have to be written to the log, and logs are usually shipped and kept far
longer and more widely than a secret should be; refusing is the safe default and the message says
how to enable them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TSSYNTH_", extra="ignore")

    model_dir: Path = Field(default=Path("models"), description="Where bundles live: MODEL_DIR/<name>/v<k>/.")
    default_model: str = Field(default="demo", description="Name the demo model is trained under.")
    admin_token: SecretStr | None = Field(default=None, description="Bearer token of /v1/admin/*; unset = admin off (503).")
    api_token: SecretStr | None = Field(default=None, description="Bearer token of the data endpoints; unset = open.")
    max_sequences: int = Field(default=1000, ge=1, description="Most sequences one generate/diagnostics request may ask for.")
    max_export_rows: int = Field(default=1_000_000, ge=1, description="Most rows (sequences x steps) one request may produce.")
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1, description="Largest accepted request body / CSV upload.")
    datasets_dir: Path = Field(default=Path("data"), description="Server-side CSV files that requests may name.")
    job_db: Path | None = Field(default=None, description="SQLite file of the job records; default MODEL_DIR/jobs.sqlite.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Device of training jobs and generation.")
    demo_bootstrap: bool = Field(default=True, description="Train the demo model at startup when no model exists.")
    workers: int = Field(default=2, ge=1, le=64, description="Generation requests computed at the same time.")
    training_slots: int = Field(default=1, ge=1, le=16, description="Training jobs run at the same time; others queue.")

    @field_validator("admin_token", "api_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """``TOKEN=`` (as compose writes an unset variable) must mean "no token", not "the empty token"."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def job_db_path(self) -> Path:
        return self.job_db if self.job_db is not None else self.model_dir / "jobs.sqlite"
