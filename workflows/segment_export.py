"""SegmentExportWorkflow: create a segment export (or adopt one), wait for it, download it.

The steps, as Fullstory's API has them:
1. create: `POST /segments/v1/exports` (Idempotency-Key from the workflow id), or adopt `operation_id`;
2. wait for the operation (shared with OperationWorkflow);
3. download the file with the shared download activity: streamed, resumable by Range,
   gzip-verified, sha256, atomic rename; a signed URL that expires is fetched anew by the
   activity itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, model_validator
from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from activities.download import DownloadActivities, DownloadParams, DownloadResult
    from activities.operations import CreateSegmentExportParams, Operation, OperationActivities
    from vocabulary import errors
    from vocabulary.contract import (
        LOCATION_HELP,
        InputModel,
        PollInterval,
        PositiveDuration,
        ResultModel,
        TimeRange,
        idempotency_key,
    )
    from vocabulary.policies import HEARTBEAT_TIMEOUT, LONG_RETRY
    from vocabulary.table_load import LoadedWindow, LoadSpec, window_key
    from vocabulary.texts import (
        LIVE_STATUS_ROW,
        Row,
        at,
        code,
        location,
        plain,
        shorten,
        size,
        span,
        stamp,
        status_checks_row,
    )
    from workflows.operation import wait_for_operation_to_end
    from workflows.steps import ProgressTracker, ProgressWorkflow, StepText, parse_input
    from workflows.table_load import check_load, load_window


ExportType = Literal["TYPE_EVENT", "TYPE_INDIVIDUAL"]
ExportFormat = Literal["FORMAT_JSON", "FORMAT_CSV", "FORMAT_NDJSON"]
_TIMEZONE = r"^(UTC|[A-Za-z]+(?:[/_+\-][A-Za-z0-9_+\-]+)*)$"

DOWNLOAD_ATTEMPT_TIMEOUT = timedelta(hours=6)
DOWNLOAD_BUDGET = timedelta(hours=12)
SUBDIR = "segment-exports"


# --- The contract --------------------------------------------------------------------------------


class SegmentExportInput(InputModel):
    """Input of `SegmentExportWorkflow`: create a segment export (or adopt `operation_id`) and download it."""

    segment_id: str | None = Field(
        default=None, min_length=1, max_length=512, description="Create an export of this segment (needs time_range)."
    )
    type: ExportType = Field(default="TYPE_EVENT", description="Events, or individuals (users).")
    format: ExportFormat = Field(default="FORMAT_NDJSON", description="File format (gzipped).")
    time_range: TimeRange | None = Field(
        default=None, description='The data to export: {"start": RFC 3339, "end": RFC 3339}, with UTC offsets.'
    )
    segment_time_range: TimeRange | None = Field(
        default=None, description="Evaluate segment membership over this range instead of time_range."
    )
    timezone: str | None = Field(
        default=None, pattern=_TIMEZONE, max_length=64, description="IANA time zone, e.g. America/New_York."
    )
    fields: list[str] | None = Field(default=None, min_length=1, description="Only these fields (a JSON list).")
    operation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Adopt an export that was already started.",
    )
    destination: str | None = Field(
        default=None, description=f"Where the file goes: {LOCATION_HELP}; defaults to the worker's FULLSTORY_DATA_DIR."
    )
    timeout: PositiveDuration = Field(default=timedelta(hours=24), description="Overall deadline, ISO 8601 or seconds.")
    max_poll_interval: PollInterval = Field(
        default=timedelta(seconds=60),
        description="Longest wait between status checks when the server sends no Retry-After (1 s to 6 h).",
    )
    verify_gzip: bool = Field(default=True, description="Check gzip integrity while downloading.")
    subdir: str = Field(
        default=SUBDIR,
        max_length=120,
        pattern=r"^([A-Za-z0-9=_-][A-Za-z0-9._=-]*)?$",
        description=f'Folder under destination for the file ("" for destination itself); default "{SUBDIR}".',
    )
    filename: str | None = Field(
        default=None,
        max_length=150,
        pattern=r"^[A-Za-z0-9=_-][A-Za-z0-9._=-]*$",
        description="The file's name (replaced if it exists); default the name Fullstory serves.",
    )
    load: LoadSpec | None = Field(
        default=None,
        description='Also load the file as a table: {"destination": "duckdb"} (or parquet, or a warehouse).',
    )

    @model_validator(mode="after")
    def _one_source(self) -> SegmentExportInput:
        if (self.segment_id is None) == (self.operation_id is None):
            raise ValueError("give exactly one of segment_id (create an export) or operation_id (adopt one)")
        if self.segment_id is not None and self.time_range is None:
            raise ValueError("time_range {start, end} is required to create an export")
        if self.operation_id is not None and (self.time_range or self.fields or self.segment_time_range):
            raise ValueError("time_range, segment_time_range and fields apply only when creating an export")
        return self


class SegmentExportResult(ResultModel):
    operation_id: str
    export_id: str | None = None
    location: str
    bytes: int
    sha256: str
    content_type: str | None = None
    filename: str
    loaded: LoadedWindow | None = None  # with `load`: the table, the window and its rows


def segment_export_workflow_id(operation_id: str) -> str:
    return f"fullstory-segment-export-{operation_id}"


def workflow_id_for(args: SegmentExportInput, unique: str) -> str:
    if args.operation_id:
        return segment_export_workflow_id(args.operation_id)
    return f"fullstory-segment-export-new-{unique}"


def export_request_body(args: SegmentExportInput) -> dict[str, Any]:
    """Fullstory's camelCase request from our snake_case input."""

    def rng(r: TimeRange) -> dict[str, str]:
        return {"start": r.start.isoformat().replace("+00:00", "Z"), "end": r.end.isoformat().replace("+00:00", "Z")}

    assert args.time_range is not None  # the input's validator requires it when creating
    body: dict[str, Any] = {
        "segmentId": args.segment_id,
        "type": args.type,
        "format": args.format,
        "timeRange": rng(args.time_range),
    }
    if args.segment_time_range is not None:
        body["segmentTimeRange"] = rng(args.segment_time_range)
    if args.timezone is not None:
        body["timezone"] = args.timezone
    if args.fields is not None:
        body["fields"] = list(args.fields)
    return body


def download_source(operation_id: str, op: Operation) -> dict[str, Any]:
    """What to download: the search export the operation made, or the operation's own download URL."""
    export_id = op.results.get("searchExportId")
    if export_id:
        return {"kind": "search_export", "export_id": str(export_id)}
    if op.results.get("downloadUrl"):
        return {"kind": "operation", "operation_id": operation_id}
    raise errors.EXPORT_HAS_NO_RESULTS(
        f"operation {operation_id} COMPLETED without searchExportId or downloadUrl in its results"
    )


# --- The workflow --------------------------------------------------------------------------------


@workflow.defn(name="SegmentExportWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class SegmentExportWorkflow(ProgressWorkflow):
    timeout_error = errors.OPERATION_TIMEOUT

    @workflow.run
    async def run(self, input: dict[str, Any]) -> SegmentExportResult:
        args = parse_input(SegmentExportInput, input)
        deadline = workflow.now() + args.timeout
        say = SegmentExportNarration(self._tracker, args)
        await self.check_locations(destination=args.destination)
        await check_load(self, args.load, args.type)

        operation_id = args.operation_id if args.operation_id is not None else await self.create(args, deadline, say)
        op = await wait_for_operation_to_end(
            self, operation_id, deadline, args.timeout, args.max_poll_interval, what="export operation", then=say.then
        )
        source = download_source(operation_id, op)
        download = await self.download(args, operation_id, source, deadline, say)
        loaded = await self.load(args, operation_id, download, say) if args.load is not None else None

        say.done(operation_id, download, loaded)
        return SegmentExportResult(
            operation_id=operation_id,
            export_id=source.get("export_id"),
            location=download.location,
            bytes=download.bytes,
            sha256=download.sha256,
            content_type=download.content_type,
            filename=download.filename,
            loaded=loaded,
        )

    async def load(
        self, args: SegmentExportInput, operation_id: str, download: DownloadResult, say: SegmentExportNarration
    ) -> LoadedWindow:
        """The stored file's rows replace its window's rows in the table (the window: segment + time range)."""
        assert args.load is not None
        r = args.time_range
        window = (
            window_key(args.segment_id or "", stamp(r.start), stamp(r.end)) if r else window_key("op", operation_id)
        )
        say.loading(args.load.describe(args.type), window)
        return await load_window(
            self,
            args.load,
            kind=args.type,
            format=args.format,
            file=download.location,
            sha256=download.sha256,
            window=window,
            window_start=r.start if r else None,
            window_end=r.end if r else None,
        )

    async def create(self, args: SegmentExportInput, deadline: datetime, say: SegmentExportNarration) -> str:
        """`POST /segments/v1/exports`, its Idempotency-Key from the workflow id; the operation's id."""
        say.creating()
        return await self.step(
            OperationActivities.create_segment_export,
            CreateSegmentExportParams(
                body=export_request_body(args), idempotency_key=idempotency_key(workflow.info().workflow_id)
            ),
            deadline=deadline,
            text=say.create_step(),
        )

    async def download(
        self,
        args: SegmentExportInput,
        operation_id: str,
        source: dict[str, Any],
        deadline: datetime,
        say: SegmentExportNarration,
    ) -> DownloadResult:
        """The file, to the destination: streamed, resumable, checked; it gets its own time past the deadline."""
        say.downloading(operation_id, source)
        return await self.step(
            DownloadActivities.download_to_destination,
            DownloadParams.model_validate(
                {
                    "source": source,
                    "destination": args.destination,
                    "subdir": args.subdir or None,
                    "filename": args.filename,
                    "verify_gzip": args.verify_gzip,
                }
            ),
            deadline=max(deadline, workflow.now() + DOWNLOAD_BUDGET),
            start_to_close=DOWNLOAD_ATTEMPT_TIMEOUT,
            heartbeat=HEARTBEAT_TIMEOUT,
            retry=LONG_RETRY,
            text=say.download_step(operation_id),
        )


# --- What the UI says ----------------------------------------------------------------------------


class SegmentExportNarration:
    def __init__(self, tracker: ProgressTracker, args: SegmentExportInput) -> None:
        self.track, self.args = tracker.set, args
        self.checked = "gzip + sha256 verified" if args.verify_gzip else "sha256 computed"
        self.to = location(args.destination) + (f" under `{args.subdir}/`" if args.subdir else "")
        self.then = f"download the file (resumable, {self.checked}) to {self.to}"

    def creating(self) -> None:
        args = self.args
        self.track(
            "creating",
            f"Creating an export of segment {code(args.segment_id, 60)}",
            [
                ("Export", f"{args.type}, {args.format}"),
                ("Idempotency", "the key comes from the workflow id: a retried create never makes a second export"),
                ("Then", f"wait for it, then {self.then}"),
            ],
        )

    def create_step(self) -> StepText:
        args = self.args
        return StepText(
            f"Create export of segment {args.segment_id} ({args.type}, {args.format})",
            f"creating the export of segment {args.segment_id} did not succeed in time",
        )

    def downloading(self, operation_id: str, source: dict[str, Any]) -> None:
        export_id = source.get("export_id")
        self.track(
            "downloading",
            f"Downloading the export of operation {code(operation_id)}",
            [
                ("Export", code(export_id) if export_id else "from the operation's download URL"),
                (
                    "Progress",
                    (
                        "the bytes on disk so far are the *Last Heartbeat Details* on the *Pending Activities* "
                        "tab; a retried attempt resumes from them by Range"
                    ),
                ),
                ("Checks", f"{self.checked} on the way; visible under its final name only when complete"),
                ("To", self.to),
            ],
            percent=None,
            bytes=0,
        )

    def download_step(self, operation_id: str) -> StepText:
        return StepText(
            f"Download export of operation {operation_id} (resumable, {self.checked})",
            f"downloading the export of operation {operation_id} did not finish in time",
        )

    def loading(self, where: str, window: str) -> None:
        self.track("loading", f"Loading window {code(window)} into {code(where)}", [("To", self.to)], percent=None)

    def done(self, operation_id: str, download: DownloadResult, loaded: LoadedWindow | None) -> None:
        self.track(
            "done",
            f"Done: the export of operation {code(operation_id)} is stored" + (" and loaded" if loaded else ""),
            [
                ("Location", code(download.location, 160)),
                ("Size", size(download.bytes)),
                ("sha256", code(download.sha256)),
                ("Loaded", f"{loaded.rows:,} rows into {code(loaded.destination)}" if loaded else ""),
            ],
            bytes=download.bytes,
            records=loaded.rows if loaded else 0,
        )


def _time_range(r: TimeRange) -> str:
    return f"{at(r.start)} → {at(r.end)}"


def start_texts(args: SegmentExportInput) -> tuple[str, str, list[Row]]:
    """(summary, headline, rows) for the UI's static texts, set by whoever starts the workflow."""
    dest = location(args.destination) + (f" (under `{args.subdir}/`)" if args.subdir else "")
    if args.filename:
        dest += f" as {code(args.filename)}"
    rows: list[Row]
    if args.operation_id is not None:
        summary = f"Segment export, operation {args.operation_id}"
        rows = [("Export", f"adopt the running export operation {code(args.operation_id)}")]
        headline = "Segment export (adopted operation)"
    else:
        assert args.time_range is not None
        summary = f"Segment export of segment {args.segment_id} ({args.format})"
        headline = f"Segment export of segment {code(args.segment_id, 60)}"
        fields = list(args.fields or [])
        rows = [
            ("Export", f"{args.type}, {args.format}"),
            (
                "Time range",
                _time_range(args.time_range) + (f" (timezone {code(args.timezone)})" if args.timezone else ""),
            ),
            ("Segment time range", _time_range(args.segment_time_range) if args.segment_time_range else ""),
            ("Fields", f"{len(fields)}: {code(', '.join(fields), 120)}" if fields else ""),
        ]
    if args.destination:
        summary += f" to {shorten(plain(location(args.destination, 200)), 80)}"
    rows += [
        ("File to", dest),
        ("Load", f"into {code(args.load.describe(args.type))}, replacing the window's rows" if args.load else ""),
        ("Deadline", f"{span(args.timeout)} after start for the export to finish; the download then gets its own time"),
        status_checks_row(args.max_poll_interval),
        (
            "Steps",
            ("create the export (Idempotency-Key from the workflow id) → " if args.operation_id is None else "")
            + "wait for the operation, percent shown → download: resumable, "
            + ("gzip-verified, " if args.verify_gzip else "")
            + "sha256, atomic",
        ),
        LIVE_STATUS_ROW,
    ]
    return summary, headline, rows
