"""The contract of `BatchImportWorkflow` (workflows/batch_job.py): its input and result, its workflow id,
and the texts the UI shows from its input.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, model_validator
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from vocabulary.contract import (
        LOCATION_HELP,
        MAX_BATCH_REQUESTS,
        BatchJobStatus,
        BatchKind,
        InputModel,
        PollInterval,
        PositiveDuration,
        ResultModel,
    )
    from vocabulary.texts import (
        LIVE_STATUS_ROW,
        Row,
        code,
        location,
        plain,
        shorten,
        span,
        status_checks_row,
    )


# --- The contract --------------------------------------------------------------------------------


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
            "Create a job from a JSON file (a list of items, or {requests, shared}) readable by the worker: "
            f"{LOCATION_HELP}; keeps big batches out of workflow history."
        ),
    )
    destination: str | None = Field(
        default=None,
        description=f"Where error/import records are written as NDJSON: {LOCATION_HELP}; "
        "defaults to the worker's FULLSTORY_DATA_DIR.",
    )
    collect_imports: bool = Field(default=False, description="Also collect the imported items (`/imports`).")
    timeout: PositiveDuration = Field(
        default=timedelta(hours=24),
        description="Overall deadline for the job to finish, ISO 8601 (PT6H) or seconds.",
    )
    max_poll_interval: PollInterval = Field(
        default=timedelta(seconds=60),
        description="Longest wait between status checks when the server sends no Retry-After.",
    )
    expected_duration: PositiveDuration | None = Field(
        default=None, description="Set by a bulk import: how long its earlier batches took; checked then too."
    )

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


HIDDEN_FIELDS = frozenset({"expected_duration"})


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


def batch_workflow_id(kind: str, job_id: str) -> str:
    """Deterministic id for watching a job: a second start joins the first."""
    return f"fullstory-batch-{kind}-{job_id}"


def workflow_id_for(args: BatchImportInput, unique: str) -> str:
    """Watching a job: its deterministic id. Creating one: a new id (`unique`), so each start creates."""
    if args.job_id:
        return batch_workflow_id(args.kind, args.job_id)
    return f"fullstory-batch-{args.kind}-new-{unique}"


def start_texts(args: BatchImportInput) -> tuple[str, str, list[Row]]:
    """(summary, headline, rows) for the UI's static texts, set by whoever starts the workflow."""
    kind = args.kind.capitalize()
    if args.job_id is not None:
        source = f"job {args.job_id}"
        job_row = ("Job", f"watch existing job {code(args.job_id)}")
    elif args.requests is not None:
        n = len(args.requests)
        source = f"{n:,} request{'s' if n != 1 else ''}"
        job_row = ("Job", f"create one from {source} given inline (contents not shown)")
    else:
        source = f"requests from {shorten(args.requests_url or '', 60)}"
        job_row = ("Job", f"create one from the requests in {location(args.requests_url)}")
    collected = "error records" + (" and imported items" if args.collect_imports else "")
    rows = [
        job_row,
        ("Shared", f"{len(args.shared)} field(s) sent with every request (values not shown)" if args.shared else ""),
        ("Records to", f"{location(args.destination)} as NDJSON ({collected})"),
        ("Deadline", f"{span(args.timeout)} after start"),
        status_checks_row(args.max_poll_interval),
        (
            "Steps",
            ("create the job (Idempotency-Key from the workflow id) → " if args.job_id is None else "")
            + f"wait until it finishes → collect the {collected}",
        ),
        LIVE_STATUS_ROW,
    ]
    dest = f" to {shorten(plain(location(args.destination, 200)), 60)}" if args.destination else ""
    return f"{kind} batch import, {source}{dest}", f"{kind} batch import", rows
