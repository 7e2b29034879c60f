"""The contract of `BulkImportWorkflow` (workflows/bulk_import.py): its input, result and progress counts,
and its workflow id. Its start texts and live status are in bulk_narration.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.bulk_import import StagedSource
    from vocabulary.contract import (
        LOCATION_HELP,
        MAX_BATCH_REQUESTS,
        BatchKind,
        InputModel,
        PositiveDuration,
        ResultModel,
    )


# --- The contract --------------------------------------------------------------------------------


class BulkProgress(BaseModel):
    """What a run carries into the next (continue-as-new): where it is, and the counts so far."""

    deadline: datetime
    staged: StagedSource | None = None
    next_batch: int = 0
    done: int = 0  # batches finished, whatever the outcome
    failed: int = 0  # of those: the job FAILED (some items failed) or the batch's workflow failed
    imports: int = 0
    errors: int = 0
    error_codes: dict[str, int] = Field(default_factory=dict)
    records_collected: int = 0
    runs: int = 1
    durations: list[float] = Field(default_factory=list)  # the last batches' jobs at Fullstory, seconds


class BulkImportInput(InputModel):
    """Input of `BulkImportWorkflow`: import every item of one file or object, in batches."""

    kind: BatchKind = Field(description="Which batch API: `events` or `users`.")
    source: str = Field(
        min_length=1,
        description=f"Where the items are: {LOCATION_HELP}; NDJSON (one item a line) or a JSON array, "
        "optionally gzip-compressed (.gz or by its first bytes).",
    )
    shared: dict[str, Any] | None = Field(
        default=None, description="Events only: the `shared` object sent with every batch."
    )
    batch_size: int = Field(
        default=MAX_BATCH_REQUESTS, ge=1, le=MAX_BATCH_REQUESTS, description="Items per batch (1..50,000)."
    )
    max_in_flight: int = Field(
        default=10, ge=1, le=1000, description="This import's batches in progress at once (the org limit applies too)."
    )
    destination: str | None = Field(
        default=None,
        description=f"Where the chunks, the merged error report and the batch results go: {LOCATION_HELP}; "
        "defaults to the worker's FULLSTORY_DATA_DIR.",
    )
    collect_imports: bool = Field(default=False, description="Also collect (and merge) the imported items.")
    timeout: PositiveDuration = Field(
        default=timedelta(hours=72), description="Overall deadline, ISO 8601 (P3D) or seconds; default 72 h."
    )
    progress_so_far: BulkProgress | None = Field(default=None, description="Set by continue-as-new; never by hand.")

    @model_validator(mode="after")
    def _shared_events_only(self) -> BulkImportInput:
        if self.shared is not None and self.kind != "events":
            raise ValueError("shared is only allowed for events")
        return self


HIDDEN_FIELDS = frozenset({"progress_so_far"})


class BulkImportResult(ResultModel):
    """Result of `BulkImportWorkflow`. The records themselves are in the *_location files."""

    kind: BatchKind
    status: str = Field(description="COMPLETED when every batch completed with no errors, else FAILED.")
    batches: int
    items: int
    imports: int
    errors: int
    failed_batches: int = 0
    error_codes: dict[str, int] = Field(default_factory=dict)
    errors_location: str | None = None
    imports_location: str | None = None
    batches_location: str | None = None
    records_collected: int = 0


def workflow_id_for(args: BulkImportInput, unique: str) -> str:
    return f"fullstory-bulk-{args.kind}-{unique}"
