"""The public JSON contract: workflow inputs, results and the `progress` query.

Other services start our workflows by name with plain JSON shaped like these
models; `workflows/schemas/` holds their JSON Schemas (see `workflows.schemas`).
Field names are snake_case; durations accept ISO 8601 (`PT6H`) or seconds.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    cursor: int | None = None
    cursor_iso: str | None = None
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


# --- Operations and segment exports -------------------------------------------------

OperationState = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED"]
ExportType = Literal["TYPE_EVENT", "TYPE_INDIVIDUAL"]
ExportFormat = Literal["FORMAT_JSON", "FORMAT_CSV", "FORMAT_NDJSON"]
_TIMEZONE = r"^(UTC|[A-Za-z]+(?:[/_+\-][A-Za-z0-9_+\-]+)*)$"


class TimeRange(InputModel):
    start: datetime = Field(description="RFC 3339, with a UTC offset.")
    end: datetime = Field(description="RFC 3339, with a UTC offset; after start.")

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        for name in ("start", "end"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"{name} needs a UTC offset (e.g. 2026-11-01T00:00:00Z)")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class OperationInput(InputModel):
    """Input of `OperationWorkflow`: wait for any Fullstory operation to finish."""

    operation_id: str = Field(min_length=1, max_length=512, pattern=r"^\S+$",
                              description="The operation to wait for (from a Fullstory API that started one).")
    timeout: timedelta = Field(default=timedelta(hours=24), description="Overall deadline, ISO 8601 or seconds.")
    max_poll_interval: timedelta = Field(default=timedelta(seconds=60), description="Longest wait between status checks when the server sends no Retry-After (1 s to 6 h).")

    _timeout = field_validator("timeout")(lambda v: _positive(v, "timeout"))

    @field_validator("max_poll_interval")
    @classmethod
    def _poll_interval_sane(cls, v: timedelta) -> timedelta:
        return BatchImportInput._poll_interval_sane(v)


class Operation(ResultModel):
    """A Fullstory operation (`GET /operations/v1/{id}`), in snake_case."""

    id: str
    type: str | None = None
    state: OperationState
    error_details: str | None = Field(default=None, validation_alias=AliasChoices("errorDetails", "error_details"))
    created_at: datetime | None = Field(default=None, validation_alias=AliasChoices("createdAt", "created_at"))
    finished_at: datetime | None = Field(default=None, validation_alias=AliasChoices("finishedAt", "finished_at"))
    estimate_pct_complete: float | None = Field(default=None, validation_alias=AliasChoices("estimatePctComplete", "estimate_pct_complete"))
    results: dict[str, Any] = Field(default_factory=dict)

    @field_validator("results", mode="before")
    @classmethod
    def _results(cls, v: Any) -> dict[str, Any]:
        return v or {}


class SegmentExportInput(InputModel):
    """Input of `SegmentExportWorkflow`: create a segment export (or adopt `operation_id`) and download it."""

    segment_id: str | None = Field(default=None, min_length=1, max_length=512,
                                   description="Create an export of this segment (needs time_range).")
    type: ExportType = Field(default="TYPE_EVENT", description="Events, or individuals (users).")
    format: ExportFormat = Field(default="FORMAT_NDJSON", description="File format (gzipped).")
    time_range: TimeRange | None = Field(default=None, description='The data to export: {"start": RFC 3339, '
                                         '"end": RFC 3339}, with UTC offsets.')
    segment_time_range: TimeRange | None = Field(default=None, description="Evaluate segment membership over "
                                                 "this range instead of time_range.")
    timezone: str | None = Field(default=None, pattern=_TIMEZONE, max_length=64,
                                 description="IANA time zone, e.g. America/New_York.")
    fields: list[str] | None = Field(default=None, min_length=1, description="Only these fields (a JSON list).")
    operation_id: str | None = Field(default=None, min_length=1, max_length=512, pattern=r"^\S+$",
                                     description="Adopt an export that was already started.")
    destination: str | None = Field(default=None, description="Directory, file:// or s3:// URL for the file; "
                                    "defaults to the worker's FULLSTORY_DATA_DIR.")
    timeout: timedelta = Field(default=timedelta(hours=24), description="Overall deadline, ISO 8601 or seconds.")
    max_poll_interval: timedelta = Field(default=timedelta(seconds=60), description="Longest wait between status checks when the server sends no Retry-After (1 s to 6 h).")
    verify_gzip: bool = Field(default=True, description="Check gzip integrity while downloading.")

    _timeout = field_validator("timeout")(lambda v: _positive(v, "timeout"))

    @field_validator("max_poll_interval")
    @classmethod
    def _poll_interval_sane(cls, v: timedelta) -> timedelta:
        return BatchImportInput._poll_interval_sane(v)

    @model_validator(mode="after")
    def _one_source(self) -> SegmentExportInput:
        if (self.segment_id is None) == (self.operation_id is None):
            raise ValueError("give exactly one of segment_id (create an export) or operation_id (adopt one)")
        if self.segment_id is not None and self.time_range is None:
            raise ValueError("time_range {start, end} is required to create an export")
        if self.operation_id is not None and (self.time_range or self.fields or self.segment_time_range):
            raise ValueError("time_range, segment_time_range and fields apply only when creating an export")
        return self


class SegmentExportResult(ResultModel):
    operation_id: str
    export_id: str | None = None
    location: str
    bytes: int
    sha256: str
    content_type: str | None = None
    filename: str


def operation_workflow_id(operation_id: str) -> str:
    return f"fullstory-operation-{operation_id}"


def segment_export_workflow_id(operation_id: str) -> str:
    return f"fullstory-segment-export-{operation_id}"


# --- Legacy data export -------------------------------------------------------------

MIN_UNIX = 1_000_000_000  # 2001-09-09: Fullstory has no data from before


class DataExportSyncInput(InputModel):
    """Input of `DataExportSyncWorkflow`: download every legacy export bundle from `start`, in order."""

    start: int = Field(ge=0, description="Unix seconds: sync bundles whose end is after this.")
    destination: str | None = Field(default=None, description="Local directory or file:// URL for the bundles.")
    stop: int | None = Field(default=None, description="Unix seconds: finish when the cursor reaches this.")
    follow: bool = Field(default=False, description="When caught up, sleep `poll_interval` and list again, forever.")
    poll_interval: timedelta = Field(default=timedelta(hours=1), description="ISO 8601 or seconds; default 1 h.")
    bundles_per_run: int = Field(default=200, ge=1, le=10_000,
                                 description="Continue-as-new after this many bundles (keeps history bounded).")
    # Carried across continue-as-new; callers leave them at 0.
    bundles_so_far: int = Field(default=0, ge=0)
    bytes_so_far: int = Field(default=0, ge=0)

    @field_validator("poll_interval")
    @classmethod
    def _poll_sane(cls, v: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= v <= timedelta(days=7):
            raise ValueError("poll_interval must be between 1 second and 7 days")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> DataExportSyncInput:
        if self.stop is not None and self.stop <= self.start:
            raise ValueError("stop must be after start")
        if self.stop is not None and self.follow:
            raise ValueError("follow runs forever; it cannot be combined with stop")
        return self


class DataExportSyncResult(ResultModel):
    cursor: int
    cursor_iso: str
    bundles: int
    bytes: int


def data_export_sync_workflow_id(destination: str | None = None) -> str:
    """A fixed id per destination, so a schedule or a second start never runs two syncs into one place."""
    suffix = uuid.uuid5(uuid.NAMESPACE_URL, destination).hex[:12] if destination else "default"
    return f"fullstory-data-export-sync-{suffix}"
