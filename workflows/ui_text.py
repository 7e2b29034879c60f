"""What a person reads in the Temporal UI: static texts at start, current details while running.

Pure functions, no I/O and no clock (callers pass the time), so workflows can use them with
`workflow.now()` and clients with `start_texts()`:

    summary, details = start_texts("BatchImportWorkflow", {"kind": "events", "job_id": "abc123="})
    await client.start_workflow(..., static_summary=summary, static_details=details)

Inputs may carry personal data (batch `requests`, `shared`): those are shown by count only.
Locations lose any userinfo and query string (a signed URL's signature, say).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ValidationError

from workflows.activity_types import redact_url
from workflows.models import (
    BatchImportInput,
    DataExportSyncInput,
    OperationInput,
    SegmentExportInput,
)

Row = tuple[str, str]

DATA_DIR = "the worker's `FULLSTORY_DATA_DIR`"
PENDING_TAB = "*Pending Activities* tab"
MAX_SUMMARY = 200  # a one-line summary; the UI cuts long ones anyway


# --- small formatters -----------------------------------------------------------------------------

def at(t: datetime) -> str:
    """A moment to the minute, in UTC: `2026-11-26 15:28 UTC` (no microseconds, no offset noise)."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def clock(t: datetime) -> str:
    """A time of day to the second, in UTC: `15:28:42 UTC`."""
    return t.astimezone(timezone.utc).strftime("%H:%M:%S UTC")


def span(d: timedelta) -> str:
    """A duration as a person says it: `45 s`, `1 min 30 s`, `24 h`, `1 h 30 min`, `7 d`."""
    s = d.total_seconds()
    if s < 60:
        return f"{round(s, 1):g} s"
    s = round(s)
    if s < 3600:
        m, sec = divmod(s, 60)
        return f"{m} min" + (f" {sec} s" if sec else "")
    if s < 2 * 86400:
        h, rest = divmod(s, 3600)
        m = rest // 60
        return f"{h} h" + (f" {m} min" if m else "")
    d_, rest = divmod(s, 86400)
    h = rest // 3600
    return f"{d_} d" + (f" {h} h" if h else "")


def size(n: int) -> str:
    """Bytes, readable: `512 bytes`, `3.0 MiB`."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # unreachable


def shorten(text: str, limit: int = 80) -> str:
    """At most `limit` characters; the middle goes, so both the scheme and the file name stay."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2):]


def code(value: object, limit: int = 80) -> str:
    """An id or a path as inline code (markdown-safe: underscores and stars stay literal)."""
    return "`" + shorten(str(value).replace("`", "'"), limit) + "`"


def escape(text: str) -> str:
    """Free text (an error message) with markdown's special characters made literal."""
    for ch in "\\`*_[]<>#|":
        text = text.replace(ch, "\\" + ch)
    return text


def location(dest: str | None, limit: int = 80) -> str:
    """A destination for display: no userinfo, no query or fragment (signatures, tokens), shortened."""
    return code(redact_url(dest), limit) if dest else DATA_DIR


def bar(pct: float, width: int = 20) -> str:
    """`▓▓▓▓▓░░░░░░░░░░░░░░░ 25%`: a percent at a glance."""
    pct = min(max(pct, 0.0), 100.0)
    filled = round(pct / 100 * width)
    return f"`{'▓' * filled}{'░' * (width - filled)}` **{pct:g}%**"


def next_check(max_poll: timedelta) -> str:
    """When the next status check is, as far as a workflow can know.

    Each check is one attempt of a wait activity; the server schedules the next attempt from the
    activity's `next_retry_delay` without waking the workflow, so only the Pending Activities tab
    knows the exact time. The poll policy bounds it.
    """
    return (f"within {span(max_poll)} (sooner at first; later only if Fullstory's Retry-After asks). "
            f"Exact time: *Next Retry* on the {PENDING_TAB}")


# --- current details (set by the workflows) --------------------------------------------------------

def current_details(headline: str, rows: Iterable[Row] = ()) -> str:
    """Markdown for `workflow.set_current_details`: a bold headline, then one bullet per fact."""
    lines = [f"**{headline}**"]
    rows = [(label, value) for label, value in rows if value]
    if rows:
        lines.append("")
        lines += [f"- **{label}:** {value}" for label, value in rows]
    return "\n".join(lines)


def plain(markdown: str) -> str:
    """The same text without markdown emphasis, for the `progress` query's one-line `detail`."""
    text = re.sub(r"(?<!\\)[*`]", "", markdown)
    return re.sub(r"\\([\\`*_\[\]<>#|])", r"\1", text)


def one_line(headline: str, rows: Iterable[Row] = ()) -> str:
    """Headline and rows as one plain line: `headline; label: value; ...`."""
    parts = [plain(headline)] + [f"{label.lower()}: {plain(value)}" for label, value in rows if value]
    return "; ".join(parts)


# --- static summary and details (set by whoever starts the workflow) ------------------------------

def start_texts(workflow_type: str, args: BaseModel | Mapping[str, Any]) -> tuple[str, str]:
    """(static_summary, static_details) for starting `workflow_type` with `args`.

    `args` is the input model or the plain JSON dict a caller would send. Never raises: an input
    the workflow will reject still gets a summary (the workflow then fails with InvalidInput).
    """
    model = _MODELS.get(workflow_type)
    if model is None:
        return _generic(workflow_type, args)
    if not isinstance(args, model):
        try:
            args = model.model_validate(args.model_dump() if isinstance(args, BaseModel) else args)
        except ValidationError as e:
            title = _TITLES[workflow_type]
            bad = ", ".join(".".join(map(str, err["loc"])) or "(input)" for err in e.errors(include_input=False))
            return (f"{title} (invalid input)",
                    current_details(f"{title}: invalid input; the workflow will fail with InvalidInput",
                                    [("Fields to fix", escape(shorten(bad, 300)))]))
    summary, headline, rows = _BUILDERS[workflow_type](args)
    return shorten(summary, MAX_SUMMARY), current_details(headline, rows)


def _generic(workflow_type: str, args: Any) -> tuple[str, str]:
    fields = sorted(args.keys()) if isinstance(args, Mapping) else []
    return shorten(workflow_type, MAX_SUMMARY), current_details(
        workflow_type, [("Input fields", escape(shorten(", ".join(map(str, fields)), 200)) or "none")])


def _checks(max_poll: timedelta) -> Row:
    return ("Status checks", f"at most {span(max_poll)} apart, unless Fullstory's Retry-After asks for longer")


def _batch(args: BatchImportInput) -> tuple[str, str, list[Row]]:
    kind = args.kind.capitalize()
    if args.job_id is not None:
        source = f"job {args.job_id}"
        job_row = ("Job", f"watch existing job {code(args.job_id)}")
    elif args.requests is not None:
        n = len(args.requests)
        source = f"{n:,} request{'s' if n != 1 else ''}"
        job_row = ("Job", f"create one from {source} given inline (contents not shown)")
    else:
        source = f"requests from {shorten(args.requests_url or '', 60)}"
        job_row = ("Job", f"create one from the requests in {location(args.requests_url)}")
    collected = "error records" + (" and imported items" if args.collect_imports else "")
    rows = [
        job_row,
        ("Shared", f"{len(args.shared)} field(s) sent with every request (values not shown)" if args.shared else ""),
        ("Records to", f"{location(args.destination)} as NDJSON ({collected})"),
        ("Deadline", f"{span(args.timeout)} after start"),
        _checks(args.max_poll_interval),
        ("Steps", ("create the job (Idempotency-Key from the workflow id) → " if args.job_id is None else "")
         + f"wait until it finishes → collect the {collected}"),
        ("Live status", "*Current Details* (beside this), or the `progress` query"),
    ]
    dest = f" to {shorten(plain(location(args.destination, 200)), 60)}" if args.destination else ""
    return f"{kind} batch import, {source}{dest}", f"{kind} batch import", rows


def _time_range(r: Any) -> str:
    return f"{at(r.start)} → {at(r.end)}"


def _segment_export(args: SegmentExportInput) -> tuple[str, str, list[Row]]:
    dest = location(args.destination) + " (under `segment-exports/`)"
    if args.operation_id is not None:
        summary = f"Segment export, operation {args.operation_id}"
        rows: list[Row] = [("Export", f"adopt the running export operation {code(args.operation_id)}")]
        headline = "Segment export (adopted operation)"
    else:
        summary = f"Segment export of segment {args.segment_id} ({args.format})"
        headline = f"Segment export of segment {code(args.segment_id, 60)}"
        fields = list(args.fields or [])
        rows = [
            ("Export", f"{args.type}, {args.format}"),
            ("Time range", _time_range(args.time_range) + (f" (timezone {code(args.timezone)})" if args.timezone else "")),
            ("Segment time range", _time_range(args.segment_time_range) if args.segment_time_range else ""),
            ("Fields", f"{len(fields)}: {code(', '.join(fields), 120)}" if fields else ""),
        ]
    if args.destination:
        summary += f" to {shorten(plain(location(args.destination, 200)), 80)}"
    rows += [
        ("File to", dest),
        ("Deadline", f"{span(args.timeout)} after start for the export to finish; the download then gets its own time"),
        _checks(args.max_poll_interval),
        ("Steps", ("create the export (Idempotency-Key from the workflow id) → " if args.operation_id is None else "")
         + "wait for the operation, percent shown → download: resumable, "
         + ("gzip-verified, " if args.verify_gzip else "") + "sha256, atomic"),
        ("Live status", "*Current Details* (beside this), or the `progress` query"),
    ]
    return summary, headline, rows


def _operation(args: OperationInput) -> tuple[str, str, list[Row]]:
    return (f"Wait for Fullstory operation {args.operation_id}", f"Fullstory operation {code(args.operation_id)}", [
        ("Deadline", f"{span(args.timeout)} after start"),
        _checks(args.max_poll_interval),
        ("Result", "the final operation; FAILED fails the workflow with `OperationFailed` and Fullstory's errorDetails"),
        ("Live status", "*Current Details* (beside this), or the `progress` query"),
    ])


def _unix(t: int) -> str:
    return f"{at(datetime.fromtimestamp(t, tz=timezone.utc))} (`{t}`)"


def _sync(args: DataExportSyncInput) -> tuple[str, str, list[Row]]:
    start = at(datetime.fromtimestamp(args.start, tz=timezone.utc))
    if args.follow:
        until = f", following (lists every {span(args.poll_interval)})"
        mode = f"forever: when caught up it sleeps {span(args.poll_interval)} and lists again; stop it with a cancel"
    elif args.stop is not None:
        until = f" to {at(datetime.fromtimestamp(args.stop, tz=timezone.utc))}"
        mode = f"until the cursor reaches {_unix(args.stop)}"
    else:
        until, mode = "", "until caught up"
    resumed = args.bundles_so_far > 0 or args.bytes_so_far > 0
    rows = [
        ("From", _unix(args.start) + (" (continued from an earlier run)" if resumed else "")),
        ("Runs", mode),
        ("So far", f"{args.bundles_so_far:,} bundles, {size(args.bytes_so_far)}" if resumed else ""),
        ("Bundles to", location(args.destination)),
        ("Pace", ("oldest first, one at a time; downloads rate limited across all workers "
                  "(`FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE`, default 2)")),
        ("History", f"continues as new every {args.bundles_per_run:,} bundles"),
        ("Live status", "*Current Details* (beside this), or the `progress` query"),
    ]
    dest = f" to {shorten(plain(location(args.destination, 200)), 60)}" if args.destination else ""
    return f"Legacy data export sync from {start}{until}{dest}", "Legacy data export sync", rows


_MODELS: dict[str, type[BaseModel]] = {
    "BatchImportWorkflow": BatchImportInput,
    "SegmentExportWorkflow": SegmentExportInput,
    "OperationWorkflow": OperationInput,
    "DataExportSyncWorkflow": DataExportSyncInput,
}
_TITLES = {"BatchImportWorkflow": "Batch import", "SegmentExportWorkflow": "Segment export",
           "OperationWorkflow": "Fullstory operation", "DataExportSyncWorkflow": "Legacy data export sync"}
_BUILDERS: dict[str, Any] = {"BatchImportWorkflow": _batch, "SegmentExportWorkflow": _segment_export,
                             "OperationWorkflow": _operation, "DataExportSyncWorkflow": _sync}
