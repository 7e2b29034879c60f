"""The contract of `SegmentExportSyncWorkflow` (workflows/segment_export_sync.py): its input, result and
`progress` answer, its workflow id, and the texts the UI shows from its input.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pydantic import Field, field_validator, model_validator
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from vocabulary.contract import LOCATION_HELP, InputModel, PositiveDuration, Progress, ResultModel
    from vocabulary.table_load import LoadSpec
    from vocabulary.texts import LIVE_STATUS_ROW, Row, at, code, iso, location, plain, shorten, size, span
    from workflows.segment_export import _TIMEZONE, ExportFormat, ExportType

DEFAULT_DELAY = timedelta(hours=24)  # README: "Continuous segment exports" says why


# --- The contract --------------------------------------------------------------------------------


class SegmentExportSyncInput(InputModel):
    """Input of `SegmentExportSyncWorkflow`: export a segment window by window, gap-free, from `start`."""

    segment_id: str = Field(min_length=1, max_length=512, description="The segment to export.")
    type: ExportType = Field(default="TYPE_EVENT", description="Events, or individuals (users).")
    format: ExportFormat = Field(default="FORMAT_NDJSON", description="File format (gzipped).")
    fields: list[str] | None = Field(default=None, min_length=1, description="Only these fields (a JSON list).")
    timezone: str | None = Field(
        default=None, pattern=_TIMEZONE, max_length=64, description="IANA time zone, e.g. America/New_York."
    )
    window: timedelta = Field(
        default=timedelta(days=1), description="Each export covers this long: ISO 8601 from PT1H to P1D."
    )
    start: datetime = Field(description="RFC 3339 with a UTC offset; a multiple of `window` since the Unix epoch.")
    stop: datetime | None = Field(default=None, description="Finish when the cursor reaches this (aligned too).")
    follow: bool = Field(
        default=False,
        description="Wait for windows that are not due yet (forever, or until stop); else stop caught up.",
    )
    delay: timedelta = Field(
        default=DEFAULT_DELAY, description="Export a window this long after it ends (late data); default 24 h."
    )
    max_in_flight: int = Field(default=2, ge=1, le=16, description="Windows exported at once while catching up.")
    destination: str | None = Field(default=None, description=f"Where the files go: {LOCATION_HELP}.")
    window_timeout: PositiveDuration = Field(
        default=timedelta(hours=24), description="Each window's export must finish within this (its `timeout`)."
    )
    window_attempts: int = Field(
        default=3, ge=1, le=20, description="Exports of a window Fullstory reports FAILED before the sync stops there."
    )
    windows_per_run: int = Field(
        default=100, ge=1, le=10_000, description="Continue-as-new after this many windows (keeps history bounded)."
    )
    load: LoadSpec | None = Field(
        default=None,
        description='Load each window as a table, exactly once: {"destination": "duckdb"} (or parquet, a warehouse).',
    )
    # Carried across continue-as-new; callers leave them alone.
    windows_so_far: int = Field(default=0, ge=0)
    bytes_so_far: int = Field(default=0, ge=0)
    rows_so_far: int = Field(default=0, ge=0)
    paused: bool = False

    @field_validator("window")
    @classmethod
    def _window(cls, v: timedelta) -> timedelta:
        if not timedelta(hours=1) <= v <= timedelta(days=1) or v.total_seconds() % 60:
            raise ValueError("window must be whole minutes from PT1H to P1D")
        return v

    @field_validator("delay")
    @classmethod
    def _delay(cls, v: timedelta) -> timedelta:
        if not timedelta(0) <= v <= timedelta(days=7):
            raise ValueError("delay must be between 0 and 7 days")
        return v

    @model_validator(mode="after")
    def _aligned(self) -> SegmentExportSyncInput:
        w = int(self.window.total_seconds())
        for name in ("start", "stop"):
            t = getattr(self, name)
            if t is None:
                continue
            if t.tzinfo is None:
                raise ValueError(f"{name} needs a UTC offset (e.g. 2026-11-01T00:00:00Z)")
            if t.timestamp() % w:
                raise ValueError(f"{name} must be aligned to the window ({w} s since the Unix epoch, UTC)")
        if self.stop is not None and self.stop <= self.start:
            raise ValueError("stop must be after start")
        return self


class SegmentExportSyncResult(ResultModel):
    cursor: datetime  # every window before it is exported and listed in the manifest
    windows: int
    bytes: int
    manifest_location: str
    files_location: str
    rows_loaded: int = 0  # with `load`: rows of every window before the cursor, in `table`
    table: str | None = None


class SegmentSyncProgress(Progress):
    """The `progress` answer: the shared fields, plus the windows."""

    windows_done: int = 0
    windows_skipped: int = 0  # already listed in the manifest (a restarted sync): not exported again
    windows_in_flight: list[str] = Field(default_factory=list)
    windows_failed: list[str] = Field(default_factory=list)  # failed attempts: "<window start>: <why>"
    next_window_due_at: datetime | None = None
    paused: bool = False
    manifest_location: str | None = None
    windows_loaded: int = 0  # with `load`: windows whose rows are in `table` (a window is done once loaded)
    rows_loaded: int = 0
    table: str | None = None


HIDDEN_FIELDS = frozenset({"windows_so_far", "bytes_so_far", "rows_so_far", "paused"})


def segment_sync_workflow_id(args: SegmentExportSyncInput) -> str:
    """One sync per (segment, type, format, destination): two never write one manifest."""
    key = uuid.uuid5(uuid.NAMESPACE_URL, f"{args.destination or ''}|{args.segment_id}|{args.type}|{args.format}")
    return f"fullstory-segment-sync-{key.hex[:16]}"


def workflow_id_for(args: SegmentExportSyncInput, unique: str) -> str:
    return segment_sync_workflow_id(args)


def mode_text(args: SegmentExportSyncInput) -> str:
    until = f"until {iso(args.stop)}" if args.stop is not None else ""
    if args.follow:
        return f"follow {until or 'forever'}: each window {span(args.delay)} after it ends"
    return until or "until caught up"


def start_texts(args: SegmentExportSyncInput) -> tuple[str, str, list[Row]]:
    """(summary, headline, rows) for the UI's static texts, set by whoever starts the workflow."""
    resumed = args.windows_so_far > 0 or args.bytes_so_far > 0
    rows: list[Row] = [
        ("Export", f"{args.type}, {args.format}" + (f", timezone {code(args.timezone)}" if args.timezone else "")),
        ("Fields", f"{len(args.fields)}: {code(', '.join(args.fields), 120)}" if args.fields else ""),
        ("Windows", f"{span(args.window)} each, from {iso(args.start)}" + (" (continued)" if resumed else "")),
        ("Runs", mode_text(args) + f"; each window exported {span(args.delay)} after it ends"),
        ("At once", f"up to {args.max_in_flight} windows while catching up"),
        ("So far", f"{args.windows_so_far:,} windows, {size(args.bytes_so_far)}" if resumed else ""),
        ("Files to", location(args.destination) + f" under `{args.segment_id}/{args.type}/`, beside `manifest.ndjson`"),
        ("History", f"continues as new every {args.windows_per_run:,} windows"),
        ("Load", f"each window into {code(args.load.describe(args.type))}, exactly once" if args.load else ""),
        LIVE_STATUS_ROW,
    ]
    dest = f" to {shorten(plain(location(args.destination, 200)), 60)}" if args.destination else ""
    summary = f"Segment export sync of {args.segment_id} ({span(args.window)} windows from {at(args.start)}){dest}"
    return summary, f"Segment export sync of segment {code(args.segment_id, 60)}", rows
