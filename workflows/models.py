"""The public JSON contract: workflow inputs, results and the `progress` query.

Other services start our workflows by name with plain JSON shaped like these
models; `workflows/schemas/` holds their JSON Schemas (see `workflows.schemas`).
Field names are snake_case; durations accept ISO 8601 (`PT6H`) or seconds.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

BatchKind = Literal["events", "users"]
BatchJobStatus = Literal["PROCESSING", "COMPLETED", "FAILED"]

MAX_BATCH_REQUESTS = 50_000
DEFAULT_TASK_QUEUE = "fullstory"


class InputModel(BaseModel):
    """Inputs reject unknown fields: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResultModel(BaseModel):
    """Results ignore unknown fields so older clients read newer results."""

    model_config = ConfigDict(extra="ignore")


def _positive(value: timedelta, field: str) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"{field} must be a positive duration (ISO 8601 like PT6H, or seconds)")
    return value


class BatchImportInput(InputModel):
    """Input of `BatchImportWorkflow`: create a batch import job or watch an existing one."""

    kind: BatchKind = Field(description="Which batch API: `events` or `users`.")
    job_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Watch this existing job instead of creating one.",
    )
    requests: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BATCH_REQUESTS,
        description="Create a job from these items (1..50,000). For big batches prefer `requests_url`.",
    )
    shared: dict[str, Any] | None = Field(
        default=None, description="Events only: the `shared` object sent beside `requests`."
    )
    requests_url: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Create a job from a JSON file (a list of items, or {requests, shared}) at a local path "
            "or file:// URL readable by the worker; keeps big batches out of workflow history."
        ),
    )
    destination: str | None = Field(
        default=None,
        description="Where error/import records are written as NDJSON (local path or file:// URL); "
        "defaults to the worker's FULLSTORY_DATA_DIR.",
    )
    collect_imports: bool = Field(default=False, description="Also collect the imported items (`/imports`).")
    timeout: timedelta = Field(
        default=timedelta(hours=24),
        description="Overall deadline for the job to finish, ISO 8601 (PT6H) or seconds.",
    )
    max_poll_interval: timedelta = Field(
        default=timedelta(seconds=60),
        description="Longest wait between status checks when the server sends no Retry-After.",
    )

    @field_validator("timeout")
    @classmethod
    def _timeout_positive(cls, v: timedelta) -> timedelta:
        return _positive(v, "timeout")

    @field_validator("max_poll_interval")
    @classmethod
    def _poll_interval_sane(cls, v: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= v <= timedelta(hours=6):
            raise ValueError("max_poll_interval must be between 1 second and 6 hours")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> BatchImportInput:
        given = [n for n in ("job_id", "requests", "requests_url") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of job_id (watch an existing job), requests (create one) "
                f"or requests_url (create one from a file); got {given or 'none'}"
            )
        if self.shared is not None and (self.kind != "events" or self.job_id is not None):
            raise ValueError("shared is only allowed when creating an events batch")
        return self


class BatchImportResult(ResultModel):
    """Result of `BatchImportWorkflow`. Records themselves live at the *_location files."""

    job_id: str
    kind: BatchKind
    status: BatchJobStatus
    imports: int
    errors: int
    created: datetime | None = None
    finished: datetime | None = None
    error_codes: dict[str, int] = Field(default_factory=dict)
    errors_location: str | None = None
    imports_location: str | None = None
    records_collected: int = 0


class Progress(ResultModel):
    """Answer of every workflow's `progress` query."""

    phase: str = "starting"
    detail: str = ""
    job_id: str | None = None
    status: str | None = None
    attempts: int = 0
    last_http_status: int | None = None
    percent: float | None = None
    records: int = 0
    bytes: int = 0
    waiting_until: datetime | None = None
    updated_at: datetime | None = None


def batch_workflow_id(kind: str, job_id: str) -> str:
    """Deterministic id for watching a job: a second start joins the first."""
    return f"fullstory-batch-{kind}-{job_id}"


def idempotency_key(workflow_id: str) -> str:
    """Idempotency-Key for a create call, stable across retries and worker restarts."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fullstory-jobs:{workflow_id}"))


def describe_validation_error(model: type[BaseModel], err: ValidationError) -> str:
    """One readable line per problem, naming the field and the fix; no input values echoed."""
    lines = []
    for e in err.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(input)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return f"invalid {model.__name__}: " + "; ".join(lines)
