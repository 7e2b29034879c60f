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
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator
from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.segment_sync import (
        ManifestEntry,
        RecordWindowsParams,
        SegmentSyncActivities,
        SyncPlaceParams,
    )
    from vocabulary import errors
    from vocabulary.contract import LOCATION_HELP, InputModel, PositiveDuration, Progress, ResultModel, TimeRange
    from vocabulary.texts import LIVE_STATUS_ROW, Row, at, code, escape, iso, location, plain, shorten, size, span
    from workflows.segment_export import (
        _TIMEZONE,
        ExportFormat,
        ExportType,
        SegmentExportInput,
        SegmentExportWorkflow,
    )
    from workflows.steps import ProgressTracker, ProgressWorkflow, parse_input


WINDOW_RETRY_GAP = timedelta(minutes=5)  # before a failed window's next export (times the attempt)
RECENT_ENTRIES = 8  # each manifest write carries these again: a lost update heals at the next write
# A child failing with one of these is tried again (up to window_attempts); anything else needs a person.
RETRIED_FAILURES = frozenset({"OperationFailed", "OperationTimeout", "ExportHasNoResults"})
EXTENSIONS = {"FORMAT_NDJSON": "ndjson.gz", "FORMAT_JSON": "json.gz", "FORMAT_CSV": "csv.gz"}
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


def stamp(t: datetime) -> str:
    """A window bound in names: `20261101T000000Z` (sorts by time; no colons)."""
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def window_filename(start: datetime, end: datetime, format: str) -> str:
    return f"{stamp(start)}_{stamp(end)}.{EXTENSIONS[format]}"


def segment_sync_workflow_id(args: SegmentExportSyncInput) -> str:
    """One sync per (segment, type, format, destination): two never write one manifest."""
    key = uuid.uuid5(uuid.NAMESPACE_URL, f"{args.destination or ''}|{args.segment_id}|{args.type}|{args.format}")
    return f"fullstory-segment-sync-{key.hex[:16]}"


def workflow_id_for(args: SegmentExportSyncInput, unique: str) -> str:
    return segment_sync_workflow_id(args)


def window_workflow_id(sync_id: str, start: datetime, attempt: int = 1) -> str:
    return f"{sync_id}-{stamp(start)}" + ("" if attempt == 1 else f"-attempt{attempt}")


# --- The workflow --------------------------------------------------------------------------------


class SyncState:
    """Cursor, windows done/in flight/failed and totals; the cursor never passes a window not done."""

    def __init__(self, args: SegmentExportSyncInput) -> None:
        self.args = args
        self.window = args.window
        self.cursor = args.start
        self.next_start = args.start  # the first window not started yet
        self.done: set[datetime] = set()  # done windows at or after the cursor (out of order)
        self.listed: set[datetime] = set()
        self.in_flight: dict[datetime, asyncio.Task[None]] = {}
        self.failed_attempts: list[str] = []
        self.failed: tuple[datetime, str] | None = None  # the window the sync stops at, and why
        self.windows, self.bytes = args.windows_so_far, args.bytes_so_far
        self.skipped = 0
        self.started_this_run = 0
        self.recent: list[ManifestEntry] = []
        self.files_location = self.manifest_location = ""

    def due_at(self, start: datetime) -> datetime:
        return start + self.window + self.args.delay

    def finished_window(self, start: datetime, nbytes: int | None) -> None:
        if nbytes is None:
            self.skipped += 1
        else:
            self.windows += 1
            self.bytes += nbytes
        self.done.add(start)
        while self.cursor in self.done:
            self.done.discard(self.cursor)
            self.cursor += self.window

    def at_stop(self) -> bool:
        return self.args.stop is not None and self.next_start >= self.args.stop

    def result(self) -> SegmentExportSyncResult:
        return SegmentExportSyncResult(
            cursor=self.cursor,
            windows=self.windows,
            bytes=self.bytes,
            manifest_location=self.manifest_location,
            files_location=self.files_location,
        )


@workflow.defn(name="SegmentExportSyncWorkflow")
class SegmentExportSyncWorkflow(ProgressWorkflow):
    timeout_error = errors.SEGMENT_SYNC_TIMEOUT

    @workflow.init
    def __init__(self, input: dict[str, Any]) -> None:
        super().__init__()
        self._tracker.progress = SegmentSyncProgress()
        self.paused = bool(input.get("paused")) if isinstance(input, dict) else False
        self.changed = False
        self.manifest_lock = asyncio.Lock()
        self.state: SyncState | None = None
        self.say: SegmentSyncNarration | None = None

    @workflow.run
    async def run(self, input: dict[str, Any]) -> SegmentExportSyncResult:
        args = parse_input(SegmentExportSyncInput, input)
        s = self.state = SyncState(args)
        say = self.say = SegmentSyncNarration(self._tracker, args, s, lambda: self.paused)
        await self.check_locations(destination=args.destination)
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

        while True:
            draining = s.started_this_run >= args.windows_per_run or workflow.info().is_continue_as_new_suggested()
            if not self.paused and s.failed is None and not draining:
                self.start_due_windows()
            if not s.in_flight:
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
                    return s.result()
                if draining:
                    say.continuing()
                    workflow.continue_as_new(
                        args.model_copy(
                            update={
                                "start": s.cursor,
                                "windows_so_far": s.windows,
                                "bytes_so_far": s.bytes,
                                "paused": self.paused,
                            }
                        ).model_dump(mode="json", exclude_none=True)
                    )
                if not args.follow and args.stop is None and s.due_at(s.next_start) > workflow.now():
                    say.done(f"Done: caught up at {iso(s.cursor)}")
                    return s.result()
            wake = None
            if (
                not self.paused
                and s.failed is None
                and not draining
                and not s.at_stop()
                and len(s.in_flight) < args.max_in_flight
            ):
                wake = s.due_at(s.next_start)
            say.status(wake)
            self.changed = False
            try:
                await workflow.wait_condition(
                    lambda: self.changed,
                    timeout=(wake - workflow.now()) if wake is not None else None,
                    timeout_summary=f"Next window {iso(s.next_start)} due at {at(wake)}" if wake else None,
                )
            except TimeoutError:
                pass

    def start_due_windows(self) -> None:
        s, args = self.state, self.args
        assert s is not None
        while (
            len(s.in_flight) < args.max_in_flight
            and not s.at_stop()
            and s.due_at(s.next_start) <= workflow.now()
            and s.started_this_run < args.windows_per_run
        ):
            start, s.next_start = s.next_start, s.next_start + args.window
            if start in s.listed:
                s.finished_window(start, None)
                continue
            s.started_this_run += 1
            s.in_flight[start] = asyncio.create_task(self.run_window(start))

    @property
    def args(self) -> SegmentExportSyncInput:
        assert self.state is not None
        return self.state.args

    async def run_window(self, start: datetime) -> None:
        """One window: its child export (retried when Fullstory reports it FAILED), then its manifest line."""
        s, args = self.state, self.args
        assert s is not None
        end = start + args.window
        name = window_filename(start, end, args.format)
        child_input = SegmentExportInput(
            segment_id=args.segment_id,
            type=args.type,
            format=args.format,
            time_range=TimeRange(start=start, end=end),
            timezone=args.timezone,
            fields=args.fields,
            destination=s.files_location,
            timeout=args.window_timeout,
            subdir="",
            filename=name,
        ).model_dump(mode="json", exclude_none=True)
        try:
            for attempt in range(1, args.window_attempts + 1):
                if attempt > 1:
                    await workflow.sleep(
                        WINDOW_RETRY_GAP * (attempt - 1),
                        summary=f"Window {iso(start)} failed; export it again (attempt {attempt})",
                    )
                    await workflow.wait_condition(lambda: not self.paused)
                try:
                    result = await workflow.execute_child_workflow(
                        SegmentExportWorkflow.run,
                        child_input,
                        id=window_workflow_id(workflow.info().workflow_id, start, attempt),
                        static_summary=f"Window {iso(start)} → {iso(end)} of segment {args.segment_id}"[:200],
                    )
                except ChildWorkflowError as err:
                    cause = err.cause
                    why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
                    s.failed_attempts.append(f"{iso(start)}: {why}"[:300])
                    retried = not isinstance(cause, ApplicationError) or cause.type in RETRIED_FAILURES
                    if retried and attempt < args.window_attempts:
                        continue
                    s.failed = (start, why) if s.failed is None or start < s.failed[0] else s.failed
                    return
                entry = ManifestEntry(
                    window_start=start,
                    window_end=end,
                    file=result.filename,
                    location=result.location,
                    bytes=result.bytes,
                    sha256=result.sha256,
                    operation_id=result.operation_id,
                    finished_at=workflow.now(),
                )
                async with self.manifest_lock:
                    s.recent = [*s.recent, entry][-RECENT_ENTRIES:]
                    await self.unattended_step(
                        SegmentSyncActivities.segment_sync_record_windows,
                        RecordWindowsParams(
                            destination=args.destination,
                            segment_id=args.segment_id,
                            type=args.type,
                            entries=s.recent,
                        ),
                        f"List window {iso(start)} in the manifest",
                    )  # CALL_TIMEOUT per attempt: a write held by a worker that died is retried within ~30 s
                s.finished_window(start, result.bytes)
                return
        finally:
            s.in_flight.pop(start, None)
            self.changed = True

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


# --- What the UI says ----------------------------------------------------------------------------


class SegmentSyncNarration:
    def __init__(
        self, tracker: ProgressTracker, args: SegmentExportSyncInput, state: SyncState, paused: Callable[[], bool]
    ) -> None:
        self.track, self.args, self.state, self.paused = tracker.set, args, state, paused

    def _emit(self, phase: str, headline: str, *rows: Row, next_due: datetime | None = None) -> None:
        s, args = self.state, self.args
        in_flight = sorted(s.in_flight)
        self.track(
            phase,
            headline,
            [
                *rows,
                ("Cursor", f"{iso(s.cursor)}: every window before it is exported and listed in the manifest"),
                (
                    "Windows",
                    f"{s.windows:,} exported ({size(s.bytes)})"
                    + (f", {s.skipped:,} already listed" if s.skipped else "")
                    + (f"; in flight: {', '.join(iso(t) for t in in_flight)}" if in_flight else ""),
                ),
                ("Failed attempts", escape(shorten("; ".join(s.failed_attempts[-3:]), 300))),
                ("Next window due", f"{iso(s.next_start)} at {at(next_due)}" if next_due else ""),
                ("Mode", mode_text(args)),
                ("Files to", code(s.files_location, 120) if s.files_location else location(args.destination)),
            ],
            cursor=int(s.cursor.timestamp()),
            cursor_iso=iso(s.cursor),
            records=s.windows,
            bytes=s.bytes,
            waiting_until=next_due,
            windows_done=s.windows,
            windows_skipped=s.skipped,
            windows_in_flight=[iso(t) for t in in_flight],
            windows_failed=list(s.failed_attempts[-20:]),
            next_window_due_at=next_due,
            paused=self.paused(),
            manifest_location=s.manifest_location or None,
        )

    def status(self, wake: datetime | None) -> None:
        s = self.state
        if self.paused():
            n = len(s.in_flight)
            self.track_paused(n)
        elif s.in_flight:
            self._emit("exporting", f"Exporting {len(s.in_flight)} window(s)", next_due=wake)
        elif wake is not None:
            self._emit("sleeping", f"Caught up; next window due at {at(wake)}", next_due=wake)
        else:
            self._emit("running", "Running")

    def track_paused(self, in_flight: int) -> None:
        self._emit(
            "paused",
            "Paused: " + (f"finishing {in_flight} window(s) in flight, " if in_flight else "") + "starting no new one",
            ("Resume", "`fullstory-jobs resume <workflow id>` (the `resume` Update)"),
        )

    def done(self, headline: str) -> None:
        self._emit("done", headline)

    def continuing(self) -> None:
        self._emit("continuing", "Continuing as new to keep history small")

    def failed(self, start: datetime, why: str) -> None:
        self._emit("failed", f"Failed at window {iso(start)}: {escape(shorten(why, 200))}")


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
