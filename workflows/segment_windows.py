"""The window bookkeeping of a segment export sync: names, the cursor, the gaps, the manifest entries.

A window `[t, t + window)` is done once its file is stored and listed in the manifest. The cursor is
the end of the last contiguous done window, so it never passes a gap (a window that failed, or one
still in flight). `SegmentExportSyncWorkflow` (segment_export_sync.py) decides when a window starts
and runs its export; `SyncState` keeps count, with no I/O and no commands of its own.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Protocol

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.segment_sync import ManifestEntry
    from vocabulary.table_load import LoadedWindow
    from vocabulary.texts import iso, stamp
    from workflows.segment_export import SegmentExportResult

WINDOW_RETRY_GAP = timedelta(minutes=5)  # before a failed window's next export (times the attempt)
RECENT_ENTRIES = 8  # each manifest write carries these again: a lost update heals at the next write
# A child failing with one of these is tried again (up to window_attempts); anything else needs a person.
RETRIED_FAILURES = frozenset({"OperationFailed", "OperationTimeout", "ExportHasNoResults"})
EXTENSIONS = {"FORMAT_NDJSON": "ndjson.gz", "FORMAT_JSON": "json.gz", "FORMAT_CSV": "csv.gz"}


def window_filename(start: datetime, end: datetime, format: str) -> str:
    return f"{stamp(start)}_{stamp(end)}.{EXTENSIONS[format]}"


def window_workflow_id(sync_id: str, start: datetime, attempt: int = 1) -> str:
    return f"{sync_id}-{stamp(start)}" + ("" if attempt == 1 else f"-attempt{attempt}")


def manifest_entry(start: datetime, end: datetime, export: SegmentExportResult, finished_at: datetime) -> ManifestEntry:
    """The manifest's line for a window whose file is stored."""
    return ManifestEntry(
        window_start=start,
        window_end=end,
        file=export.filename,
        location=export.location,
        bytes=export.bytes,
        sha256=export.sha256,
        operation_id=export.operation_id,
        finished_at=finished_at,
        table=export.loaded.destination if export.loaded else None,
        rows=export.loaded.rows if export.loaded else None,
    )


class WindowPlan(Protocol):
    """What the bookkeeping reads of the sync's input (a `SegmentExportSyncInput`)."""

    @property
    def start(self) -> datetime: ...
    @property
    def stop(self) -> datetime | None: ...
    @property
    def window(self) -> timedelta: ...
    @property
    def delay(self) -> timedelta: ...
    @property
    def windows_so_far(self) -> int: ...
    @property
    def bytes_so_far(self) -> int: ...
    @property
    def rows_so_far(self) -> int: ...


class SyncState:
    """Cursor, windows done/in flight/failed and totals; the cursor never passes a window not done."""

    def __init__(self, plan: WindowPlan) -> None:
        self.plan = plan
        self.window = plan.window
        self.cursor = plan.start
        self.next_start = plan.start  # the first window not started yet
        self.done: set[datetime] = set()  # done windows at or after the cursor (out of order)
        self.listed: set[datetime] = set()
        self.in_flight: dict[datetime, asyncio.Task[None]] = {}
        self.failed_attempts: list[str] = []
        self.failed: tuple[datetime, str] | None = None  # the window the sync stops at, and why
        self.windows, self.bytes = plan.windows_so_far, plan.bytes_so_far
        self.rows, self.loaded = plan.rows_so_far, 0  # with `load`: rows in the table, windows loaded this run
        self.table: str | None = None
        self.skipped = 0
        self.started_this_run = 0
        self.recent: list[ManifestEntry] = []
        self.files_location = self.manifest_location = ""

    def due_at(self, start: datetime) -> datetime:
        return start + self.window + self.plan.delay

    def at_stop(self) -> bool:
        return self.plan.stop is not None and self.next_start >= self.plan.stop

    def take_next(self) -> datetime:
        """The next window's start; the one after it is next."""
        start, self.next_start = self.next_start, self.next_start + self.window
        return start

    def finished_window(self, start: datetime, nbytes: int | None, loaded: LoadedWindow | None = None) -> None:
        """A window is done: exported (`nbytes`) and loaded if asked, or already listed in the manifest (None)."""
        if nbytes is None:
            self.skipped += 1
        else:
            self.windows += 1
            self.bytes += nbytes
        if loaded is not None:
            self.loaded += 1
            self.rows += loaded.rows
            self.table = loaded.destination
        self.done.add(start)
        while self.cursor in self.done:
            self.done.discard(self.cursor)
            self.cursor += self.window

    def attempt_failed(self, start: datetime, err: ChildWorkflowError, attempts_left: bool) -> bool:
        """Note a window's failed export: True when it gets another attempt, else the sync stops at it."""
        cause = err.cause
        why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        self.failed_attempts.append(f"{iso(start)}: {why}"[:300])
        retried = not isinstance(cause, ApplicationError) or cause.type in RETRIED_FAILURES
        if retried and attempts_left:
            return True
        self.failed = (start, why) if self.failed is None or start < self.failed[0] else self.failed
        return False

    def with_recent(self, entry: ManifestEntry) -> list[ManifestEntry]:
        """The entries the next manifest write carries: this one and the few before it."""
        self.recent = [*self.recent, entry][-RECENT_ENTRIES:]
        return self.recent
