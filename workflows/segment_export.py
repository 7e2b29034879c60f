"""SegmentExportWorkflow: create a segment export (or adopt one), wait for it, download it.

1. `POST /segments/v1/exports` (Idempotency-Key from the workflow id), or adopt `operation_id`;
2. wait for the operation (shared with OperationWorkflow);
3. download the file with the shared download activity: streamed, resumable by
   Range, gzip-verified, sha256, atomic rename; a signed URL that expires is
   fetched anew by the activity itself.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.activity_types import (
        CREATE_SEGMENT_EXPORT,
        DOWNLOAD_TO_DESTINATION,
        OPERATION_TIMEOUT,
        CreateSegmentExportParams,
        DownloadParams,
        DownloadResult,
    )
    from workflows.common import ProgressWorkflow, parse_input, run_activity
    from workflows.models import SegmentExportInput, SegmentExportResult, idempotency_key
    from workflows.operation import wait_for_operation_to_end
    from workflows.ui_text import code, location, size

DOWNLOAD_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
DOWNLOAD_ATTEMPT_TIMEOUT = timedelta(hours=6)
DOWNLOAD_BUDGET = timedelta(hours=12)
EXPORT_HAS_NO_RESULTS = "ExportHasNoResults"


def export_request_body(args: SegmentExportInput) -> dict[str, Any]:
    """Fullstory's camelCase request from our snake_case input."""
    def rng(r: Any) -> dict[str, str]:
        return {"start": r.start.isoformat().replace("+00:00", "Z"), "end": r.end.isoformat().replace("+00:00", "Z")}

    body: dict[str, Any] = {"segmentId": args.segment_id, "type": args.type, "format": args.format,
                            "timeRange": rng(args.time_range)}
    if args.segment_time_range is not None:
        body["segmentTimeRange"] = rng(args.segment_time_range)
    if args.timezone is not None:
        body["timezone"] = args.timezone
    if args.fields is not None:
        body["fields"] = list(args.fields)
    return body


@workflow.defn(name="SegmentExportWorkflow")
class SegmentExportWorkflow(ProgressWorkflow):
    @workflow.run
    async def run(self, input: dict[str, Any]) -> SegmentExportResult:
        args = parse_input(SegmentExportInput, input)
        deadline = workflow.now() + args.timeout
        track = self._tracker.set

        checked = "gzip + sha256 verified" if args.verify_gzip else "sha256 computed"
        to = f"{location(args.destination)} under `segment-exports/`"
        then = f"download the file (resumable, {checked}) to {to}"

        operation_id = args.operation_id
        if operation_id is None:
            track("creating", f"Creating an export of segment {code(args.segment_id, 60)}", [
                ("Export", f"{args.type}, {args.format}"),
                ("Idempotency", "the key comes from the workflow id: a retried create never makes a second export"),
                ("Then", f"wait for it, then {then}")])
            operation_id = await run_activity(
                self._tracker, CREATE_SEGMENT_EXPORT,
                CreateSegmentExportParams(body=export_request_body(args),
                                          idempotency_key=idempotency_key(workflow.info().workflow_id)),
                str, deadline=deadline,
                summary=f"Create export of segment {args.segment_id} ({args.type}, {args.format})",
                timeout_message=f"creating the export of segment {args.segment_id} did not succeed in time",
                timeout_type=OPERATION_TIMEOUT,
            )

        op = await wait_for_operation_to_end(self._tracker, operation_id, deadline, args.timeout,
                                             args.max_poll_interval, what="export operation", then=then)
        export_id = op.results.get("searchExportId")
        if export_id:
            source: dict[str, Any] = {"kind": "search_export", "export_id": str(export_id)}
        elif op.results.get("downloadUrl"):
            source = {"kind": "operation", "operation_id": operation_id}
        else:
            raise ApplicationError(
                f"operation {operation_id} COMPLETED without searchExportId or downloadUrl in its results",
                type=EXPORT_HAS_NO_RESULTS, non_retryable=True)

        track("downloading", f"Downloading the export of operation {code(operation_id)}", [
            ("Export", code(export_id) if export_id else "from the operation's download URL"),
            ("Progress", ("the bytes on disk so far are the *Last Heartbeat Details* on the *Pending Activities* "
                          "tab; a retried attempt resumes from them by Range")),
            ("Checks", f"{checked} on the way; visible under its final name only when complete"),
            ("To", to),
        ], percent=None, bytes=0)
        download: DownloadResult = await run_activity(
            self._tracker, DOWNLOAD_TO_DESTINATION,
            DownloadParams.model_validate({"source": source, "destination": args.destination,
                                           "subdir": "segment-exports", "verify_gzip": args.verify_gzip}),
            DownloadResult, deadline=max(deadline, workflow.now() + DOWNLOAD_BUDGET),
            summary=f"Download export of operation {operation_id} (resumable, {checked})",
            timeout_message=f"downloading the export of operation {operation_id} did not finish in time",
            timeout_type=OPERATION_TIMEOUT, start_to_close=DOWNLOAD_ATTEMPT_TIMEOUT,
            heartbeat=DOWNLOAD_HEARTBEAT_TIMEOUT,
        )
        track("done", f"Done: the export of operation {code(operation_id)} is stored", [
            ("Location", code(download.location, 160)),
            ("Size", size(download.bytes)),
            ("sha256", code(download.sha256)),
        ], bytes=download.bytes)
        return SegmentExportResult(operation_id=operation_id, export_id=str(export_id) if export_id else None,
                                   location=download.location, bytes=download.bytes, sha256=download.sha256,
                                   content_type=download.content_type, filename=download.filename)
