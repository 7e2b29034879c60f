"""OperationWorkflow and SegmentExportWorkflow on the time-skipping server, simulator over a socket."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.operations import Operation
from helpers import TemporalClock, activities_scheduled, running_worker, server_time
from workflows.operation import operation_workflow_id
from workflows.segment_export import SegmentExportResult

OP_ROUTE = "/operations/v1/{operation_id}"

EXPORT = {
    "segment_id": "everyone",
    "type": "TYPE_EVENT",
    "format": "FORMAT_NDJSON",
    "time_range": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
    "timezone": "America/New_York",
}


@pytest_asyncio.fixture(autouse=True)
async def _simulator_on_server_time(ts_env, sim):
    """Jobs, operations and rate limits in the simulator run on the time-skipping server's clock."""
    sim.clock = await TemporalClock.start(ts_env)


async def failure_of(handle) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    assert isinstance(info.value.cause, ApplicationError), info.value.cause
    return info.value.cause


async def test_three_hour_export_completes_with_small_history(ts_env, sim, tmp_path):
    t0 = await server_time(ts_env)
    sim.export_defaults.update(duration=3 * 3600, size=3 << 20, progress_steps=5)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "SegmentExportWorkflow",
            {**EXPORT, "destination": str(tmp_path / "out")},
            id=f"export-{uuid.uuid4().hex}",
            task_queue=tq,
            result_type=SegmentExportResult,
        )
        result = await handle.result()
    assert await server_time(ts_env) - t0 >= 3 * 3600
    path = Path(result.location)
    assert path.exists() and path.stat().st_size == result.bytes == 3 << 20
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == sim.file_sha256(result.operation_id)
    assert gzip.decompress(path.read_bytes())  # a real gzip
    assert str(path).startswith(str(tmp_path / "out"))
    assert result.export_id
    assert await activities_scheduled(handle) <= 10  # three hours of waiting do not add activities
    creates = [r for r in sim.requests if r.method == "POST" and r.path == "/segments/v1/exports"]
    assert len(creates) == 1 and "idempotency-key" in creates[0].headers


async def test_operation_workflow_reports_percent_and_returns_the_operation(ts_env, sim, tmp_path):
    op_id = sim.add_operation(duration=2 * 3600, progress_steps=4)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "OperationWorkflow",
            {"operation_id": op_id},
            id=operation_workflow_id(op_id),
            task_queue=tq,
            result_type=Operation,
        )
        result = asyncio.create_task(handle.result())  # time skips only while a result is awaited
        seen = set()
        while not result.done():
            p = await handle.query("progress")
            if p["percent"] is not None:
                seen.add(p["percent"])
            await asyncio.sleep(0.005)
        op = await result
    assert op.id == op_id and op.state == "COMPLETED" and op.finished_at is not None
    assert len(seen) >= 2  # intermediate percentages were visible, not only the end
    # The wait is retries of one activity, not a poll per check: one activity per percent seen
    # (4 steps) plus the first and the last.
    assert 2 <= await activities_scheduled(handle) <= 6


async def test_failed_operation_is_a_clear_non_retryable_error(ts_env, sim, tmp_path):
    op_id = sim.add_operation(duration=600, final_state="FAILED", error_details="segment too large to export")
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "SegmentExportWorkflow", {"operation_id": op_id}, id=f"x-{uuid.uuid4().hex}", task_queue=tq
        )
        err = await failure_of(handle)
    assert err.type == "OperationFailed" and err.non_retryable
    assert "segment too large to export" in err.message and op_id in err.message


async def test_standard_key_gets_a_clear_403(ts_env, sim, tmp_path):
    sim.add_key("standard-key-123", role="standard")
    async with running_worker(ts_env.client, sim.base_url, tmp_path, api_key="standard-key-123") as tq:
        handle = await ts_env.client.start_workflow(
            "SegmentExportWorkflow", EXPORT, id=f"x-{uuid.uuid4().hex}", task_queue=tq
        )
        err = await failure_of(handle)
    assert err.type == "FullstoryForbidden" and "Admin or Architect" in err.message
    assert "standard-key-123" not in err.message


async def test_unknown_operation_id_is_a_clear_error(ts_env, sim, tmp_path):
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "OperationWorkflow", {"operation_id": "no-such-op"}, id=f"x-{uuid.uuid4().hex}", task_queue=tq
        )
        err = await failure_of(handle)
    assert err.type == "FullstoryNotFound" and "no-such-op" in err.message
    assert sim.count(route=OP_ROUTE) == 1


async def test_download_url_results_shape_is_supported(ts_env, sim, tmp_path):
    op_id = sim.add_operation(duration=60, results_shape="downloadUrl", size=200_000)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        result = await (
            await ts_env.client.start_workflow(
                "SegmentExportWorkflow",
                {"operation_id": op_id},
                id=f"x-{uuid.uuid4().hex}",
                task_queue=tq,
                result_type=SegmentExportResult,
            )
        ).result()
    assert result.bytes == 200_000 and result.sha256 == sim.file_sha256(op_id)


async def test_operation_deadline_is_a_clear_timeout(ts_env, sim, tmp_path):
    op_id = sim.add_operation(duration=10 * 3600)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "OperationWorkflow", {"operation_id": op_id, "timeout": "PT1H"}, id=f"x-{uuid.uuid4().hex}", task_queue=tq
        )
        err = await failure_of(handle)
    assert err.type == "OperationTimeout" and op_id in err.message


@pytest.mark.parametrize(
    "bad,hint",
    [
        ({"segment_id": "s"}, "time_range"),
        ({**EXPORT, "type": "TYPE_SESSION"}, "type"),
        ({**EXPORT, "format": "xml"}, "format"),
        (
            {**EXPORT, "time_range": {"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"}},
            "end must be after start",
        ),
        ({**EXPORT, "time_range": {"start": "2026-11-01T00:00:00", "end": "2026-11-02T00:00:00Z"}}, "UTC offset"),
        ({**EXPORT, "timezone": "Mars/Olympus Mons"}, "timezone"),
        ({**EXPORT, "operation_id": "op"}, "exactly one"),
        ({**EXPORT, "fields": []}, "fields"),
    ],
)
async def test_bad_export_input_fails_before_any_call(ts_env, sim, tmp_path, bad, hint):
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "SegmentExportWorkflow", bad, id=f"x-{uuid.uuid4().hex}", task_queue=tq
        )
        err = await failure_of(handle)
    assert err.type == "InvalidInput" and hint in err.message
    assert sim.requests == []
