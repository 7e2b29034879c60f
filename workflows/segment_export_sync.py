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
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.segment_sync import RecordWindowsParams, SegmentSyncActivities, SyncPlaceParams
    from vocabulary import errors
    from vocabulary.contract import TimeRange
    from vocabulary.texts import at, iso
    from workflows.segment_export import SegmentExportInput, SegmentExportResult, SegmentExportWorkflow
    from workflows.segment_sync_input import (
        SegmentExportSyncInput,
        SegmentExportSyncResult,
        SegmentSyncProgress,
        mode_text,
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
    from workflows.table_load import check_load


def sync_result(s: SyncState) -> SegmentExportSyncResult:
    return SegmentExportSyncResult(
        cursor=s.cursor,
        windows=s.windows,
        bytes=s.bytes,
        manifest_location=s.manifest_location,
        files_location=s.files_location,
        rows_loaded=s.rows,
        table=s.table,
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
        load=args.load,
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
            self._tracker,
            s,
            lambda: self.paused,
            mode=mode_text(args),
            destination=args.destination,
            load_to=args.load.describe(args.type) if args.load else None,
        )
        await self.check_locations(destination=args.destination)
        await check_load(self, args.load, args.type)
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
                load_table=args.load.describe(args.type) if args.load else None,
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
            if args.load is not None:
                carried["rows_so_far"] = s.rows
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
                s.finished_window(start, export.bytes, export.loaded)
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
