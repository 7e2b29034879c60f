"""End to end: the real dev server, a real worker process (SIGKILLed mid-run) and the simulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from helpers import wait_until
from workflows.batch_job_input import BatchImportResult, batch_workflow_id

pytestmark = pytest.mark.e2e

STATUS_ROUTE = "/v2/{kind}/batch/{job_id}"
ERRORS_ROUTE = "/v2/{kind}/batch/{job_id}/errors"


async def test_sigkill_mid_wait_and_mid_page_walk_loses_and_duplicates_nothing(dev_env, sim, worker_factory, tmp_path):
    job_id = sim.add_batch_job(
        kind="events", duration=4, imports=1000, errors=5000, page_size=100, retry_after_while_processing=1
    )
    sim.page_delay = 0.05  # 50 pages take a few seconds: time to kill the worker in the middle
    worker = worker_factory().start()
    handle = await dev_env.client.start_workflow(
        "BatchImportWorkflow",
        {"kind": "events", "job_id": job_id},
        id=batch_workflow_id("events", job_id),
        task_queue=worker_factory.task_queue,
        result_type=BatchImportResult,
    )

    await wait_until(lambda: sim.count(route=STATUS_ROUTE) >= 2, what="the worker to be waiting")
    worker.kill()  # 1: while it waits for the job
    worker = worker_factory().start()

    await wait_until(lambda: sim.count(route=ERRORS_ROUTE) >= 25, what="half of the error pages")
    worker.kill()  # 2: in the middle of the 50-page error walk
    worker = worker_factory().start()

    result = await asyncio.wait_for(handle.result(), 120)
    assert (result.status, result.imports, result.errors) == ("FAILED", 1000, 5000)
    expected = sim.expected_records(job_id, "errors")
    lines = Path(result.errors_location).read_text().splitlines()
    assert [json.loads(x) for x in lines] == expected  # each record exactly once, in order
    assert result.records_collected == 5000 and sum(result.error_codes.values()) == 5000
    # It resumed from its heartbeat rather than starting the walk over.
    assert sim.count(route=ERRORS_ROUTE) < 50 + 25
    assert "resuming errors" in worker.log()
    assert not list(Path(result.errors_location).parent.glob("*.part"))
