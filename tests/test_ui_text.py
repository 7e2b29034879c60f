"""What a person reads in the Temporal UI: static texts at start, current details while running."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import ApplicationErrorCategory as ProtoCategory
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from helpers import TemporalClock, running_worker
from infra.data_converter import DATA_CONVERTER, BenignWithoutStackTrace
from vocabulary.texts import at, bar, current_details, location, one_line, size, span
from workflows.batch_job_input import BatchImportInput
from workflows.registry import start_texts
from workflows.segment_export import SegmentExportInput

WHEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
SECRETISH = "ada.lovelace@example.com"


# --- formatters ----------------------------------------------------------------------------------


def test_times_and_durations_read_like_a_person_wrote_them():
    t = datetime(2026, 11, 26, 15, 28, 42, 97528, tzinfo=UTC)
    assert at(t) == "2026-11-26 15:28 UTC"
    assert at(t.astimezone(timezone(timedelta(hours=-5)))) == "2026-11-26 15:28 UTC"
    assert [span(timedelta(seconds=s)) for s in (4.5, 60, 90, 3600, 5400, 86400, 7 * 86400, 2 * 86400 + 3 * 3600)] == [
        "4.5 s",
        "1 min",
        "1 min 30 s",
        "1 h",
        "1 h 30 min",
        "24 h",
        "7 d",
        "2 d 3 h",
    ]
    assert [size(n) for n in (0, 512, 3 << 20)] == ["0 bytes", "512 bytes", "3.0 MiB"]
    assert bar(25) == "`▓▓▓▓▓░░░░░░░░░░░░░░░` **25%**" and bar(140).endswith("**100%**")


def test_locations_lose_credentials_and_queries():
    assert location("s3://AKIA:secret@bucket/prefix") == "`s3://bucket/prefix`"
    assert location("https://store.example/x.gz?X-Amz-Signature=abc") == "`https://store.example/x.gz`"
    assert location(None) == "the worker's `FULLSTORY_DATA_DIR`"
    long = location("/data/" + "d" * 300)
    assert len(long) <= 82 and "…" in long


def test_current_details_and_the_one_line_detail_come_from_the_same_rows():
    rows = [("Status", "PROCESSING"), ("Skipped", ""), ("Next check", "within 1 min, see *Next Retry*")]
    md = current_details("Waiting for job `a_b=`", rows)
    assert md == (
        "**Waiting for job `a_b=`**\n\n- **Status:** PROCESSING\n- **Next check:** within 1 min, see *Next Retry*"
    )
    assert one_line("Waiting for job `a_b=`", rows) == (
        "Waiting for job a_b=; status: PROCESSING; next check: within 1 min, see Next Retry"
    )


# --- start_texts ---------------------------------------------------------------------------------


def test_batch_import_watching_a_job():
    summary, details = start_texts("BatchImportWorkflow", {"kind": "events", "job_id": "abc123="})
    assert summary == "Events batch import, job abc123="
    assert "`abc123=`" in details and "**Deadline:** 24 h after start\n" in details and "at most 1 min apart" in details
    assert "FULLSTORY_DATA_DIR" in details and "create the job" not in details


def test_batch_import_requests_are_counted_never_shown():
    requests = [{"uid": f"u{i}", "email": SECRETISH} for i in range(12_345)]
    args = BatchImportInput(
        kind="users",
        requests=requests,
        destination="s3://key:pw@bucket/imports?token=t",
        collect_imports=True,
        timeout="PT6H",
    )
    summary, details = start_texts("BatchImportWorkflow", args)
    assert summary == "Users batch import, 12,345 requests to s3://bucket/imports"
    assert SECRETISH not in summary + details and "pw" not in details and "token" not in details
    assert "12,345 requests" in details and "`s3://bucket/imports`" in details and "6 h after start" in details
    assert "imported items" in details and "Idempotency-Key" in details
    assert len(details) < 2000


def test_batch_import_shared_fields_are_counted_never_shown():
    _, details = start_texts(
        "BatchImportWorkflow",
        {"kind": "events", "requests": [{"event": "x"}], "shared": {"user": {"email": SECRETISH}, "device": {}}},
    )
    assert "2 field(s)" in details and SECRETISH not in details


def test_dict_and_model_give_the_same_texts():
    raw = {
        "segment_id": "everyone",
        "type": "TYPE_INDIVIDUAL",
        "format": "FORMAT_CSV",
        "time_range": {"start": "2026-11-01T00:00:00-05:00", "end": "2026-11-02T00:00:00-05:00"},
        "timezone": "America/New_York",
        "fields": [f"field_{i}" for i in range(200)],
        "destination": "s3://exports/fullstory",
    }
    assert start_texts("SegmentExportWorkflow", raw) == start_texts(
        "SegmentExportWorkflow", SegmentExportInput.model_validate(raw)
    )


def test_segment_export_says_what_is_exported_and_where():
    summary, details = start_texts(
        "SegmentExportWorkflow",
        {
            "segment_id": "everyone",
            "format": "FORMAT_NDJSON",
            "destination": "s3://exports/fullstory",
            "time_range": {"start": "2026-11-01T00:00:00-05:00", "end": "2026-11-02T00:00:00-05:00"},
            "fields": [f"field_{i}" for i in range(200)],
        },
    )
    assert summary == "Segment export of segment everyone (FORMAT_NDJSON) to s3://exports/fullstory"
    assert "2026-11-01 05:00 UTC → 2026-11-02 05:00 UTC" in details  # offsets shown in UTC
    assert "TYPE_EVENT, FORMAT_NDJSON" in details and "`s3://exports/fullstory`" in details
    assert "200: `field_0, field_1, " in details and "field_199`" in details and "…" in details  # truncated list
    assert len(details) < 2000


def test_segment_export_adopting_an_operation():
    summary, details = start_texts("SegmentExportWorkflow", {"operation_id": "op-1", "verify_gzip": False})
    assert summary == "Segment export, operation op-1"
    assert "`op-1`" in details and "gzip" not in details and "create the export" not in details


def test_operation_and_sync():
    summary, details = start_texts("OperationWorkflow", {"operation_id": "op-9", "timeout": "PT2H"})
    assert summary == "Wait for Fullstory operation op-9" and "2 h after start" in details
    summary, details = start_texts(
        "DataExportSyncWorkflow",
        {"start": 1_700_000_000, "follow": True, "poll_interval": "PT1H", "destination": "/data/bundles"},
    )
    assert summary == "Legacy data export sync from 2023-11-14 22:13 UTC, following (lists every 1 h) to /data/bundles"
    assert "`1700000000`" in details and "rate limited" in details
    summary, _ = start_texts("DataExportSyncWorkflow", {"start": 1_700_000_000, "stop": 1_700_600_000})
    assert summary == "Legacy data export sync from 2023-11-14 22:13 UTC to 2023-11-21 20:53 UTC"


def test_bad_input_or_unknown_type_still_gets_texts_never_an_exception():
    summary, details = start_texts("BatchImportWorkflow", {"kind": "videos", "job_id": SECRETISH})
    assert summary == "Batch import (invalid input)" and "kind" in details and SECRETISH not in details
    summary, details = start_texts("SomeOtherWorkflow", {"b": 1, "a": 2})
    assert summary == "SomeOtherWorkflow" and "a, b" in details


@pytest.mark.parametrize(
    "workflow_type, args",
    [
        ("BatchImportWorkflow", {"kind": "events", "job_id": "x" * 512}),
        (
            "SegmentExportWorkflow",
            {
                "segment_id": "s" * 512,
                "time_range": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
                "destination": "/" + "d" * 2000,
            },
        ),
        ("OperationWorkflow", {"operation_id": "o" * 512}),
    ],
)
def test_summaries_stay_one_short_line(workflow_type, args):
    summary, details = start_texts(workflow_type, args)
    assert "\n" not in summary and len(summary) <= 200
    assert len(details) < 3000


# --- benign failures -----------------------------------------------------------------------------


def _failure(err: BaseException) -> Failure:
    try:
        raise err
    except BaseException as raised:  # noqa: BLE001 - a real traceback to convert
        failure = Failure()
        BenignWithoutStackTrace().to_failure(raised, DATA_CONVERTER.payload_converter, failure)
        return failure


def test_benign_not_finished_failures_carry_no_stack_trace_real_ones_do():
    benign = _failure(
        ApplicationError(
            "still PROCESSING",
            type="BatchJobNotFinished",
            category=ApplicationErrorCategory.BENIGN,
            next_retry_delay=timedelta(seconds=5),
        )
    )
    assert benign.stack_trace == "" and benign.message == "still PROCESSING"
    assert benign.application_failure_info.category == ProtoCategory.APPLICATION_ERROR_CATEGORY_BENIGN
    assert benign.application_failure_info.next_retry_delay.ToTimedelta() == timedelta(seconds=5)
    real = _failure(ApplicationError("boom", type="FullstoryBadRequest"))
    assert "test_ui_text.py" in real.stack_trace
    assert DATA_CONVERTER.failure_converter_class is BenignWithoutStackTrace
    assert DATA_CONVERTER.payload_converter_class is pydantic_data_converter.payload_converter_class


# --- what the workflows show while they run ------------------------------------------------------


@pytest_asyncio.fixture
async def sim_on_server_time(ts_env, sim):
    sim.clock = await TemporalClock.start(ts_env)
    return sim


async def current_details_of(handle) -> str:
    meta = await handle.query("__temporal_workflow_metadata")
    return meta.current_details if hasattr(meta, "current_details") else meta["currentDetails"]


async def test_a_waiting_batch_import_shows_next_check_and_deadline(ts_env, sim_on_server_time, tmp_path):
    sim = sim_on_server_time
    job_id = sim.add_batch_job(kind="events", duration=3600)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "BatchImportWorkflow",
            {"kind": "events", "job_id": job_id, "max_poll_interval": 30},
            id=f"ui-{uuid.uuid4().hex}",
            task_queue=tq,
        )
        while sim.count(route="/v2/{kind}/batch/{job_id}") < 1:
            await asyncio.sleep(0.01)
        details = await current_details_of(handle)
        progress = await handle.query("progress")
        await handle.result()
        done = await current_details_of(handle)
    assert details.startswith(f"**Waiting for events batch job `{job_id}` to finish**")
    assert "- **Next check:** within 30 s" in details and "*Next Retry*" in details
    assert "no percent" in details
    deadline = re.search(r"- \*\*Deadline:\*\* (.*)", details).group(1)
    assert WHEN.match(deadline) and "24 h after start" in deadline and "." not in deadline  # no microseconds
    assert progress["detail"].startswith(f"Waiting for events batch job {job_id} to finish; status: PROCESSING")
    assert "*" not in progress["detail"] and "`" not in progress["detail"]
    assert done.startswith(f"**Done: events batch job `{job_id}` COMPLETED: 10 imported, 0 failed**")


async def test_a_waiting_export_shows_its_percent(ts_env, sim_on_server_time, tmp_path):
    sim = sim_on_server_time
    op_id = sim.add_operation(duration=4 * 3600, progress_steps=4)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "SegmentExportWorkflow",
            {"operation_id": op_id, "destination": str(tmp_path / "out")},
            id=f"ui-{uuid.uuid4().hex}",
            task_queue=tq,
        )
        result = asyncio.create_task(handle.result())  # time skips only while a result is awaited
        seen: set[str] = set()
        while not result.done():
            details = await current_details_of(handle)
            if m := re.search(r"\*\*(\d+)%\*\* (RUNNING|PENDING)", details):
                seen.add(m.group(1))
                assert "- **Then:** download the file (resumable, gzip + sha256 verified)" in details
            await asyncio.sleep(0.005)
        await result
        done = await current_details_of(handle)
    assert {"25", "50"} & seen, seen
    assert done.startswith(f"**Done: the export of operation `{op_id}` is stored**") and "MiB" in done
