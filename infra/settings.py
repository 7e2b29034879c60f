"""Worker settings from environment variables (names are part of the contract)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vocabulary.contract import DEFAULT_TASK_QUEUE
from vocabulary.policies import DEFAULT_BATCH_SLOT_RECLAIM_SECONDS, DEFAULT_MAX_BATCHES_IN_PROGRESS


class SettingsError(Exception):
    """A bad or missing setting: the worker prints this one line and exits 2."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    fullstory_api_key: SecretStr | None = None
    fullstory_api_key_file: Path | None = None
    fullstory_base_url: str = "https://api.fullstory.com"
    fullstory_export_base_url: str = "https://export.fullstory.com"
    fullstory_task_queue: str = DEFAULT_TASK_QUEUE
    fullstory_data_dir: str = "./data"
    # Where workflows may read and write: comma-separated local directories and URL prefixes
    # (activities/locations.py); unset: FULLSTORY_DATA_DIR and the object stores (s3://, gs://, ...).
    fullstory_allowed_locations: str | None = None
    fullstory_export_downloads_per_minute: float = Field(default=2.0, gt=0)
    fullstory_http_timeout: float = Field(default=25.0, gt=0)
    fullstory_max_concurrent_activities: int = Field(default=200, gt=0)
    # Batch jobs in progress at once for one API key, all workflows and workers together (the org batch limit
    # workflow); a slot whose holder no longer runs is reclaimed after at most the reclaim interval.
    fullstory_max_batches_in_progress: int = Field(default=DEFAULT_MAX_BATCHES_IN_PROGRESS, gt=0)
    fullstory_batch_slot_reclaim_seconds: float = Field(default=DEFAULT_BATCH_SLOT_RECLAIM_SECONDS, ge=1)
    # Worker Versioning (infra/versioning.py): set, the workers run as the Worker Deployment Version
    # <name>.<build id>; unset (make run, the tests), unversioned. Build id unset: package version + code hash.
    fullstory_deployment_name: str | None = Field(default=None, max_length=200)
    fullstory_build_id: str | None = Field(default=None, max_length=200)

    # Where the worker serves /metrics (Prometheus) and /healthz + /readyz; off when the port is unset.
    fullstory_listen_host: str = "127.0.0.1"
    fullstory_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    fullstory_health_port: int | None = Field(default=None, ge=1, le=65535)

    # The Temporal connection itself (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS, profiles)
    # is read by temporalio's envconfig: infra/temporal_connection.py.
    temporal_ui_port: int | None = Field(default=None, ge=1, le=65535)  # the embedded dev server's UI
    temporal_ui_url: str | None = None  # links printed by the CLI, for a cluster's own UI

    @field_validator("fullstory_base_url", "fullstory_export_base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("fullstory_deployment_name", "fullstory_build_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return (v.strip() or None) if isinstance(v, str) else v

    @field_validator("fullstory_deployment_name")
    @classmethod
    def _no_dot(cls, v: str | None) -> str | None:
        if v is not None and "." in v:
            raise ValueError("must not contain '.' (Temporal writes a version as <deployment name>.<build id>)")
        return v

    def api_key(self) -> str | None:
        """The Fullstory key, from FULLSTORY_API_KEY or the file FULLSTORY_API_KEY_FILE names."""
        if self.fullstory_api_key is not None:
            key = self.fullstory_api_key.get_secret_value().strip()
            return key or None
        if self.fullstory_api_key_file is not None:
            try:
                key = self.fullstory_api_key_file.read_text().strip()
            except OSError as e:
                raise SettingsError(
                    f"FULLSTORY_API_KEY_FILE: cannot read {self.fullstory_api_key_file}: {e.strerror}"
                ) from None
            if not key:
                raise SettingsError(f"FULLSTORY_API_KEY_FILE: {self.fullstory_api_key_file} is empty")
            return key
        return None


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in e.errors(include_url=False, include_input=False)
        )
        raise SettingsError(f"bad setting: {problems}") from None
