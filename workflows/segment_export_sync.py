"""SegmentExportSyncWorkflow: an unattended, gap-free, windowed segment export (what hauser does, resumable).

Windows `[t, t + window)` from `start`, each exported once its end + `delay` has passed, as one child
`SegmentExportWorkflow` with a deterministic id (`<sync id>-<window start>`: its Idempotency-Key
comes from it, so a restarted or repeated sync never creates a window's export twice). The child's
file lands as `<destination>/<segment_id>/<type>/<start>_<end>.<ext>`; only then is the window
written to `manifest.ndjson` beside the files (listed = complete and final). The cursor is the end
of the last contiguous done window, never past a gap. Catching up runs up to `max_in_flight`
windows at once; following, the sync sleeps on a durable timer until the next window is due.
Continue-as-new (with nothing in flight) every `windows_per_run` windows keeps history bounded.
Operators `pause` and `resume` it (Updates) and read the `progress` query.

Beside it: segment_windows.py (the window bookkeeping: names, cursor, gaps, manifest entries) and
segment_sync_narration.py (the live status the UI and `progress` show).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator
from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.segment_sync import RecordWindowsParams, SegmentSyncActivities, SyncPlaceParams
    from vocabulary import errors
    from vocabulary.contract import LOCATION_HELP, InputModel, PositiveDuration, Progress, ResultModel, TimeRange
    from vocabulary.texts import LIVE_STATUS_ROW, Row, at, code, iso, location, plain, shorten, size, span
    from workflows.segment_export import (
        _TIMEZONE,
        ExportFormat,
        ExportType,
        SegmentExportInput,
        SegmentExportResult,
        SegmentExportWorkflow,
    )
    from workflows.segment_sync_narration import SegmentSyncNarration
    from workflows.segment_windows import (
        WINDOW_RETRY_GAP,
        SyncState,
        manifest_entry,
        window_filename,
        window_workflow_id,
    )
    from workflows.steps import ProgressWorkflow, parse_input


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
    # Carried across continue-as-new; callers leave them alone.
    windows_so_far: int = Field(default=0, ge=0)
    bytes_so_far: int = Field(default=0, ge=0)
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


class SegmentSyncProgress(Progress):
    """The `progress` answer: the shared fields, plus the windows."""

    windows_done: int = 0
    windows_skipped: int = 0  # already listed in the manifest (a restarted sync): not exported again
    windows_in_flight: list[str] = Field(default_factory=list)
    windows_failed: list[str] = Field(default_factory=list)  # failed attempts: "<window start>: <why>"
    next_window_due_at: datetime | None = None
    paused: bool = False
    manifest_location: str | None = None


HIDDEN_FIELDS = frozenset({"windows_so_far", "bytes_so_far", "paused"})


def segment_sync_workflow_id(args: SegmentExportSyncInput) -> str:
    """One sync per (segment, type, format, destination): two never write one manifest."""
    key = uuid.uuid5(uuid.NAMESPACE_URL, f"{args.destination or ''}|{args.segment_id}|{args.type}|{args.format}")
    return f"fullstory-segment-sync-{key.hex[:16]}"


def workflow_id_for(args: SegmentExportSyncInput, unique: str) -> str:
    return segment_sync_workflow_id(args)


def sync_result(s: SyncState) -> SegmentExportSyncResult:
    return SegmentExportSyncResult(
        cursor=s.cursor,
        windows=s.windows,
        bytes=s.bytes,
        manifest_location=s.manifest_location,
        files_location=s.files_location,
    )


def window_export_input(args: SegmentExportSyncInput, files_location: str, start: datetime) -> dict[str, Any]:
    """The input of a window's child `SegmentExportWorkflow`: its file lands as `<start>_<end>.<ext>`."""
    end = start + args.window
    return SegmentExportInput(
        segment_id=args.segment_id,
        type=args.type,
        format=args.format,
        time_range=TimeRange(start=start, end=end),
        timezone=args.timezone,
        fields=args.fields,
        destination=files_location,
        timeout=args.window_timeout,
        subdir="",
        filename=window_filename(start, end, args.format),
    ).model_dump(mode="json", exclude_none=True)


# --- The workflow --------------------------------------------------------------------------------


@workflow.defn(name="SegmentExportSyncWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class SegmentExportSyncWorkflow(ProgressWorkflow):
    timeout_error = errors.SEGMENT_SYNC_TIMEOUT

    @workflow.init
    def __init__(self, input: dict[str, Any]) -> None:
        super().__init__()
        self._tracker.progress = SegmentSyncProgress()
        self.paused = bool(input.get("paused")) if isinstance(input, dict) else False
        self.changed = False
        self.manifest_lock = asyncio.Lock()
        self._args: SegmentExportSyncInput | None = None
        self.state: SyncState | None = None
        self.say: SegmentSyncNarration | None = None

    @workflow.run
    async def run(self, input: dict[str, Any]) -> SegmentExportSyncResult:
        args = self._args = parse_input(SegmentExportSyncInput, input)
        s = self.state = SyncState(args)
        self.say = SegmentSyncNarration(
            self._tracker, s, lambda: self.paused, mode=mode_text(args), destination=args.destination
        )
        await self.check_locations(destination=args.destination)
        await self.find_place(s)
        while True:
            draining = s.started_this_run >= args.windows_per_run or workflow.info().is_continue_as_new_suggested()
            if self.may_start(s, draining):
                self.start_due_windows(s)
            if not s.in_flight and (result := self.end_or_continue(s, draining)) is not None:
                return result
            wake = s.due_at(s.next_start) if self.may_start(s, draining) and self.room_for_more(s) else None
            await self.wait_for_a_change(s, wake)

    async def find_place(self, s: SyncState) -> None:
        """Where the files go, and which windows of this run the manifest already lists."""
        args = self.args
        place = await self.unattended_step(
            SegmentSyncActivities.segment_sync_place,
            SyncPlaceParams(
                destination=args.destination,
                segment_id=args.segment_id,
                type=args.type,
                since=s.cursor,
                until=s.cursor + args.window * args.windows_per_run,
            ),
            "Find the files' place and the windows the manifest already lists",
        )
        s.files_location, s.manifest_location = place.files_location, place.manifest_location
        s.listed = set(place.listed)

    def may_start(self, s: SyncState, draining: bool) -> bool:
        return not self.paused and s.failed is None and not draining

    def room_for_more(self, s: SyncState) -> bool:
        return not s.at_stop() and len(s.in_flight) < self.args.max_in_flight

    def start_due_windows(self, s: SyncState) -> None:
        args = self.args
        while (
            len(s.in_flight) < args.max_in_flight
            and not s.at_stop()
            and s.due_at(s.next_start) <= workflow.now()
            and s.started_this_run < args.windows_per_run
        ):
            start = s.take_next()
            if start in s.listed:
                s.finished_window(start, None)
                continue
            s.started_this_run += 1
            s.in_flight[start] = asyncio.create_task(self.run_window(start))

    def end_or_continue(self, s: SyncState, draining: bool) -> SegmentExportSyncResult | None:
        """Nothing in flight: stop at a failed window, finish (at stop, or caught up), or continue as new."""
        args, say = self.args, self.narration
        if s.failed is not None:
            start, why = s.failed
            say.failed(start, why)
            raise errors.SEGMENT_SYNC_WINDOW_FAILED(
                f"window {iso(start)}..{iso(start + args.window)} failed {args.window_attempts} time(s), "
                f"last: {why}; the sync stops there (cursor {iso(s.cursor)}: every window before it is "
                "exported and listed in the manifest)",
                {"window_start": iso(start), "cursor": iso(s.cursor)},
            )
        if s.at_stop():
            say.done(f"Done: reached stop {iso(s.cursor)}")
            return sync_result(s)
        if draining:
            say.continuing()
            carried = {"start": s.cursor, "windows_so_far": s.windows, "bytes_so_far": s.bytes, "paused": self.paused}
            workflow.continue_as_new(args.model_copy(update=carried).model_dump(mode="json", exclude_none=True))
        if not args.follow and args.stop is None and s.due_at(s.next_start) > workflow.now():
            say.done(f"Done: caught up at {iso(s.cursor)}")
            return sync_result(s)
        return None

    async def wait_for_a_change(self, s: SyncState, wake: datetime | None) -> None:
        """Until a window ends, an operator pauses or resumes, or (`wake`) the next window is due."""
        self.narration.status(wake)
        self.changed = False
        try:
            await workflow.wait_condition(
                lambda: self.changed,
                timeout=(wake - workflow.now()) if wake is not None else None,
                timeout_summary=f"Next window {iso(s.next_start)} due at {at(wake)}" if wake else None,
            )
        except TimeoutError:
            pass

    @property
    def args(self) -> SegmentExportSyncInput:
        assert self._args is not None
        return self._args

    @property
    def narration(self) -> SegmentSyncNarration:
        assert self.say is not None
        return self.say

    async def run_window(self, start: datetime) -> None:
        """One window: its child export (retried when Fullstory reports it FAILED), then its manifest line."""
        s, args = self.state, self.args
        assert s is not None
        child_input = window_export_input(args, s.files_location, start)
        try:
            for attempt in range(1, args.window_attempts + 1):
                if attempt > 1:
                    await workflow.sleep(
                        WINDOW_RETRY_GAP * (attempt - 1),
                        summary=f"Window {iso(start)} failed; export it again (attempt {attempt})",
                    )
                    await workflow.wait_condition(lambda: not self.paused)
                try:
                    export = await self.export_window(start, attempt, child_input)
                except ChildWorkflowError as err:
                    if s.attempt_failed(start, err, attempts_left=attempt < args.window_attempts):
                        continue
                    return
                await self.list_window(s, start, export)
                s.finished_window(start, export.bytes)
                return
        finally:
            s.in_flight.pop(start, None)
            self.changed = True

    async def export_window(self, start: datetime, attempt: int, child_input: dict[str, Any]) -> SegmentExportResult:
        """One attempt at a window's export: a child `SegmentExportWorkflow` with a deterministic id."""
        args = self.args
        return await workflow.execute_child_workflow(
            SegmentExportWorkflow.run,
            child_input,
            id=window_workflow_id(workflow.info().workflow_id, start, attempt),
            static_summary=f"Window {iso(start)} → {iso(start + args.window)} of segment {args.segment_id}"[:200],
        )

    async def list_window(self, s: SyncState, start: datetime, export: SegmentExportResult) -> None:
        """The window's line in the manifest (with the few before it), once its file is stored."""
        args = self.args
        entry = manifest_entry(start, start + args.window, export, finished_at=workflow.now())
        async with self.manifest_lock:
            await self.unattended_step(
                SegmentSyncActivities.segment_sync_record_windows,
                RecordWindowsParams(
                    destination=args.destination,
                    segment_id=args.segment_id,
                    type=args.type,
                    entries=s.with_recent(entry),
                ),
                f"List window {iso(start)} in the manifest",
            )  # CALL_TIMEOUT per attempt: a write held by a worker that died is retried within ~30 s

    @workflow.update(name="pause")
    def pause(self) -> SegmentSyncProgress:
        """Finish the windows in flight, start no new one (until `resume`)."""
        self.paused, self.changed = True, True
        if self.say is not None:
            self.say.status(None)
        return self._tracker.progress  # type: ignore[return-value]

    @workflow.update(name="resume")
    def resume(self) -> SegmentSyncProgress:
        """Carry on from the cursor."""
        self.paused, self.changed = False, True
        if self.say is not None:
            self.say.status(None)
        return self._tracker.progress  # type: ignore[return-value]


# --- What the UI says (the live status: segment_sync_narration.py) ------------------------------


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
        LIVE_STATUS_ROW,
    ]
    dest = f" to {shorten(plain(location(args.destination, 200)), 60)}" if args.destination else ""
    summary = f"Segment export sync of {args.segment_id} ({span(args.window)} windows from {at(args.start)}){dest}"
    return summary, f"Segment export sync of segment {code(args.segment_id, 60)}", rows
