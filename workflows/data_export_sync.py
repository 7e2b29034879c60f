"""DataExportSyncWorkflow: an unattended, rate-limited, gap-free sync of legacy export bundles.

From the cursor (`start`), list bundles (20 a page, oldest first), store each
one in order (the download runs on the rate-limited downloads task queue), and
only then advance the cursor to its `Stop`. With `stop`, finish when the cursor
reaches it; with `follow`, sleep `poll_interval` when caught up and list again,
forever. Continue-as-new keeps each run's history bounded, carrying the cursor.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.activity_types import (
        LIST_EXPORT_BUNDLES,
        STORE_EXPORT_BUNDLE,
        SYNC_TIMEOUT,
        ExportBundle,
        StoredBundle,
        StoreExportBundleParams,
    )
    from workflows.common import ProgressWorkflow, parse_input, run_activity
    from workflows.models import DataExportSyncInput, DataExportSyncResult
    from workflows.ui_text import Row, at, code, size, span

BUNDLE_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
BUNDLE_ATTEMPT_TIMEOUT = timedelta(hours=6)
STEP_BUDGET = timedelta(days=7)  # an unattended sync keeps retrying transient trouble this long per step


def downloads_task_queue(task_queue: str) -> str:
    """Bundle downloads have their own task queue, rate limited server-side across all workers."""
    return f"{task_queue}-downloads"


def iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@workflow.defn(name="DataExportSyncWorkflow")
class DataExportSyncWorkflow(ProgressWorkflow):
    @workflow.run
    async def run(self, input: dict[str, Any]) -> DataExportSyncResult:
        args = parse_input(DataExportSyncInput, input)
        cursor, bundles, nbytes = args.start, args.bundles_so_far, args.bytes_so_far
        stored_this_run = 0
        track = self._tracker.set

        def result() -> DataExportSyncResult:
            return DataExportSyncResult(cursor=cursor, cursor_iso=iso(cursor), bundles=bundles, bytes=nbytes)

        def status(phase: str, headline: str, *rows: Row, **fields: Any) -> None:
            track(phase, headline, [
                *rows,
                ("Cursor", f"{iso(cursor)} (`{cursor}`): every bundle before it is stored"),
                ("Stored", f"{bundles:,} bundles, {size(nbytes)}"
                           + (f" ({stored_this_run:,} in this run)" if bundles != stored_this_run else "")),
                ("Mode", f"follow: list again every {span(args.poll_interval)} when caught up" if args.follow
                 else f"until {iso(args.stop)}" if args.stop is not None else "until caught up"),
            ], cursor=cursor, cursor_iso=iso(cursor), records=bundles, bytes=nbytes, **fields)

        while True:
            if args.stop is not None and cursor >= args.stop:
                status("done", f"Done: reached stop {iso(args.stop)}")
                return result()
            status("listing", f"Listing export bundles after {iso(cursor)}")
            page: list[ExportBundle] = await self._step(
                LIST_EXPORT_BUNDLES, cursor, list[ExportBundle], f"List export bundles after {iso(cursor)}")
            page = sorted((b for b in page if b.stop > cursor), key=lambda b: (b.stop, b.start))
            if args.stop is not None:
                page = [b for b in page if b.start < args.stop]
            if not page:
                if args.stop is not None or not args.follow:
                    status("done", "Done: caught up, no more bundles")
                    return result()
                wake = workflow.now() + args.poll_interval
                status("sleeping", f"Caught up; next listing at {at(wake)}",
                       ("Next listing", f"{at(wake)} (a durable timer of {span(args.poll_interval)})"),
                       waiting_until=wake)
                await workflow.sleep(args.poll_interval,
                                     summary=f"Caught up at {iso(cursor)}; list again at {at(wake)}")
                if workflow.info().is_continue_as_new_suggested():
                    self._continue(args, cursor, bundles, nbytes)
                continue
            for i, bundle in enumerate(page, 1):
                status("downloading", f"Storing bundle {code(bundle.id)}",
                       ("Bundle", f"{iso(bundle.start)} → {iso(bundle.stop)}"),
                       ("Pace", ("downloads are rate limited across all workers; a wait here is the limit, not "
                                 "a fault (*Pending Activities* tab shows the attempt and the bytes so far)")),
                       ("Page", f"{i} of {len(page)} listed"))
                stored: StoredBundle = await self._step(
                    STORE_EXPORT_BUNDLE, StoreExportBundleParams(bundle=bundle, destination=args.destination),
                    StoredBundle, f"Store bundle {bundle.id} ({iso(bundle.start)}..{iso(bundle.stop)})",
                    task_queue=downloads_task_queue(workflow.info().task_queue),
                    start_to_close=BUNDLE_ATTEMPT_TIMEOUT, heartbeat=BUNDLE_HEARTBEAT_TIMEOUT)
                # Only now, with the bundle stored intact, does the cursor move past it.
                cursor = bundle.stop
                bundles += 1
                nbytes += stored.bytes
                stored_this_run += 1
                if args.stop is not None and cursor >= args.stop:
                    break
                if stored_this_run >= args.bundles_per_run or workflow.info().is_continue_as_new_suggested():
                    status("continuing", "Continuing as new to keep history small")
                    self._continue(args, cursor, bundles, nbytes)

    async def _step(self, activity: str, params: Any, result_type: Any, summary: str, **options: Any) -> Any:
        return await run_activity(
            self._tracker, activity, params, result_type, deadline=workflow.now() + STEP_BUDGET, summary=summary,
            timeout_message=f"{summary}: did not succeed within {STEP_BUDGET}", timeout_type=SYNC_TIMEOUT, **options)

    def _continue(self, args: DataExportSyncInput, cursor: int, bundles: int, nbytes: int) -> None:
        workflow.continue_as_new(args.model_copy(
            update={"start": cursor, "bundles_so_far": bundles, "bytes_so_far": nbytes}).model_dump(mode="json"))
