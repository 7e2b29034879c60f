"""The small shared contract: what every workflow's input, result and `progress` answer build on.

Other services start our workflows by name with plain JSON; each workflow module holds its own
input and result models, and `workflows/schemas/` their JSON Schemas (`workflows.schemas`). Field
names are snake_case; durations accept ISO 8601 (`PT6H`) or seconds; times are RFC 3339.
No I/O here: workflows, activities, the CLI and the worker all import it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

BatchKind = Literal["events", "users"]
BatchJobStatus = Literal["PROCESSING", "COMPLETED", "FAILED"]

MAX_BATCH_REQUESTS = 50_000
DEFAULT_TASK_QUEUE = "fullstory"

# One sentence for every field that names a place to read or write (see activities/locations.py).
LOCATION_HELP = (
    "a local path, a file:// URL or an object-store URL such as s3://bucket/prefix, "
    "inside the worker's FULLSTORY_ALLOWED_LOCATIONS"
)


class InputModel(BaseModel):
    """Inputs reject unknown fields: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResultModel(BaseModel):
    """Results ignore unknown fields so older clients read newer results."""

    model_config = ConfigDict(extra="ignore")


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration (ISO 8601 like PT6H, or seconds)")
    return value


def _sane_poll_interval(value: timedelta) -> timedelta:
    if not timedelta(seconds=1) <= value <= timedelta(hours=6):
        raise ValueError("must be between 1 second and 6 hours")
    return value


# Every input's deadlines and poll intervals: one rule each (the error names the field).
PositiveDuration = Annotated[timedelta, AfterValidator(_positive)]
PollInterval = Annotated[timedelta, AfterValidator(_sane_poll_interval)]


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


class Progress(ResultModel):
    """Answer of every workflow's `progress` query.

    The attempt and last failure of the step in flight are the server's to tell (the CLI's
    `status` shows them from the workflow's pending activities), so they are not repeated here.
    """

    phase: str = "starting"
    detail: str = ""
    job_id: str | None = None
    status: str | None = None
    percent: float | None = None
    records: int = 0
    bytes: int = 0
    waiting_until: datetime | None = None
    cursor: int | None = None
    cursor_iso: str | None = None
    holding_slot: int | None = None  # a bulk import: its batches running at Fullstory (each holds an org slot)
    waiting_for_slot: int | None = None  # ... and those started and waiting for an org batch slot
    updated_at: datetime | None = None


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


def redact_url(url: object) -> str:
    """A URL fit for logs, errors, history and the UI: no query string (signed URLs carry credentials
    there), no fragment, no userinfo. A plain path stays as it is."""
    parts = urlsplit(str(url))
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))
