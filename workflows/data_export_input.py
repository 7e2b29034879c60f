"""The contract of `DataExportSyncWorkflow` (workflows/data_export_sync.py): its input and result, its
workflow id, and the texts the UI shows from its input.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from pydantic import Field, field_validator, model_validator
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from vocabulary.contract import LOCATION_HELP, InputModel, ResultModel
    from vocabulary.table_load import LoadSpec
    from vocabulary.texts import LIVE_STATUS_ROW, Row, at, code, location, plain, shorten, size, span, unix


# --- The contract --------------------------------------------------------------------------------


class DataExportSyncInput(InputModel):
    """Input of `DataExportSyncWorkflow`: download every legacy export bundle from `start`, in order."""

    start: int = Field(ge=0, description="Unix seconds: sync bundles whose end is after this.")
    destination: str | None = Field(default=None, description=f"Where the bundles go: {LOCATION_HELP}.")
    stop: int | None = Field(default=None, description="Unix seconds: finish when the cursor reaches this.")
    follow: bool = Field(default=False, description="When caught up, sleep `poll_interval` and list again, forever.")
    poll_interval: timedelta = Field(default=timedelta(hours=1), description="ISO 8601 or seconds; default 1 h.")
    bundles_per_run: int = Field(
        default=200, ge=1, le=10_000, description="Continue-as-new after this many bundles (keeps history bounded)."
    )
    load: LoadSpec | None = Field(
        default=None, description='Load each bundle as a table, exactly once: {"destination": "duckdb"} (or parquet).'
    )
    # Carried across continue-as-new; callers leave them at 0.
    bundles_so_far: int = Field(default=0, ge=0)
    bytes_so_far: int = Field(default=0, ge=0)
    rows_so_far: int = Field(default=0, ge=0)

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
    rows_loaded: int = 0  # with `load`: rows of every bundle before the cursor


# Carried across continue-as-new, not for callers (the CLI hides them).
HIDDEN_FIELDS = frozenset({"bundles_so_far", "bytes_so_far", "rows_so_far"})


def data_export_sync_workflow_id(destination: str | None = None) -> str:
    """A fixed id per destination, so a schedule or a second start never runs two syncs into one place."""
    suffix = uuid.uuid5(uuid.NAMESPACE_URL, destination).hex[:12] if destination else "default"
    return f"fullstory-data-export-sync-{suffix}"


def workflow_id_for(args: DataExportSyncInput, unique: str) -> str:
    return data_export_sync_workflow_id(args.destination)


def start_texts(args: DataExportSyncInput) -> tuple[str, str, list[Row]]:
    """(summary, headline, rows) for the UI's static texts, set by whoever starts the workflow."""
    start = at(args.start)
    if args.follow:
        until = f", following (lists every {span(args.poll_interval)})"
        mode = f"forever: when caught up it sleeps {span(args.poll_interval)} and lists again; stop it with a cancel"
    elif args.stop is not None:
        until = f" to {at(args.stop)}"
        mode = f"until the cursor reaches {unix(args.stop)}"
    else:
        until, mode = "", "until caught up"
    resumed = args.bundles_so_far > 0 or args.bytes_so_far > 0
    rows = [
        ("From", unix(args.start) + (" (continued from an earlier run)" if resumed else "")),
        ("Runs", mode),
        ("So far", f"{args.bundles_so_far:,} bundles, {size(args.bytes_so_far)}" if resumed else ""),
        ("Bundles to", location(args.destination)),
        (
            "Pace",
            (
                "oldest first, one at a time; downloads rate limited across all workers "
                "(`FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE`, default 2)"
            ),
        ),
        ("History", f"continues as new every {args.bundles_per_run:,} bundles"),
        ("Load", f"each bundle into {code(args.load.describe('BUNDLE'))}, exactly once" if args.load else ""),
        LIVE_STATUS_ROW,
    ]
    dest = f" to {shorten(plain(location(args.destination, 200)), 60)}" if args.destination else ""
    return f"Legacy data export sync from {start}{until}{dest}", "Legacy data export sync", rows
