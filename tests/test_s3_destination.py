"""Object-store destinations against a real S3-compatible server on loopback (moto's server mode)."""

from __future__ import annotations

import hashlib
import json
import uuid

import fsspec
import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError

from helpers import TemporalClock, running_worker
from workflows.batch_job_input import BatchImportResult
from workflows.segment_export import SegmentExportResult


@pytest_asyncio.fixture
async def s3(s3_server, monkeypatch, ts_env, sim):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    sim.clock = await TemporalClock.start(ts_env)
    fs = fsspec.filesystem("s3")
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    yield fs, bucket
    fsspec.get_filesystem_class("s3").clear_instance_cache()


async def test_segment_export_lands_whole_in_s3(ts_env, sim, tmp_path, s3):
    fs, bucket = s3
    op = sim.add_operation(duration=600, size=3 << 20)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        result = await (
            await ts_env.client.start_workflow(
                "SegmentExportWorkflow",
                {"operation_id": op, "destination": f"s3://{bucket}/exports/"},
                id=f"s3-{uuid.uuid4().hex}",
                task_queue=tq,
                result_type=SegmentExportResult,
            )
        ).result()
    assert result.location == f"s3://{bucket}/exports/segment-exports/{result.filename}"
    assert fs.cat(result.location) and hashlib.sha256(fs.cat(result.location)).hexdigest() == sim.file_sha256(op)
    assert [p.rsplit("/", 1)[-1] for p in fs.find(bucket)] == [result.filename]  # nothing partial, nothing else
    assert not list(tmp_path.rglob("*.gz")) and not list(tmp_path.rglob("*.part"))  # staging cleaned up


async def test_batch_errors_land_in_s3(ts_env, sim, tmp_path, s3):
    fs, bucket = s3
    job = sim.add_batch_job(kind="events", duration=60, imports=3, errors=120, page_size=50)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        result = await (
            await ts_env.client.start_workflow(
                "BatchImportWorkflow",
                {"kind": "events", "job_id": job, "destination": f"s3://{bucket}/batches"},
                id=f"s3-{uuid.uuid4().hex}",
                task_queue=tq,
                result_type=BatchImportResult,
            )
        ).result()
    assert result.errors_location.startswith(f"s3://{bucket}/batches/")
    lines = fs.cat(result.errors_location).decode().splitlines()
    assert [json.loads(x) for x in lines] == sim.expected_records(job, "errors")


async def test_missing_bucket_is_a_clear_error(ts_env, sim, tmp_path, s3):
    op = sim.add_operation(duration=0, size=1 << 20)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "SegmentExportWorkflow",
            {"operation_id": op, "destination": "s3://no-such-bucket-here/x"},
            id=f"s3-{uuid.uuid4().hex}",
            task_queue=tq,
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert info.value.cause.type == "DestinationNotWritable" and "no-such-bucket-here" in info.value.cause.message
