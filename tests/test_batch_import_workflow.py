"""BatchImportWorkflow on the time-skipping server, with the simulator over a real socket."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from helpers import TemporalClock, activities_scheduled, running_worker, server_time
from vocabulary.contract import idempotency_key
from workflows.batch_job_input import BatchImportResult, batch_workflow_id

STATUS_ROUTE = "/v2/{kind}/batch/{job_id}"
ERRORS_ROUTE = "/v2/{kind}/batch/{job_id}/errors"
IMPORTS_ROUTE = "/v2/{kind}/batch/{job_id}/imports"


@pytest_asyncio.fixture(autouse=True)
async def _simulator_on_server_time(ts_env, sim):
    """Jobs, operations and rate limits in the simulator run on the time-skipping server's clock."""
    sim.clock = await TemporalClock.start(ts_env)


def read_ndjson(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


async def start(env, task_queue, inp, wf_id=None):
    return await env.client.start_workflow(
        "BatchImportWorkflow",
        inp,
        id=wf_id or f"test-{uuid.uuid4().hex}",
        task_queue=task_queue,
        result_type=BatchImportResult,
    )


async def failure_of(handle) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


@pytest.mark.e2e  # ~7 s: hours of simulated polling; `make test-fast` skips it
async def test_six_hour_job_with_an_hour_long_retry_after(ts_env, sim, tmp_path):
    t0 = await server_time(ts_env)
    job_id = sim.add_batch_job(kind="events", duration=6 * 3600, imports=40, errors=3, page_size=2)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await start(ts_env, tq, {"kind": "events", "job_id": job_id}, batch_workflow_id("events", job_id))
        while sim.count(route=STATUS_ROUTE) < 3:
            await asyncio.sleep(0.01)
        sim.fault(r"/v2/events/batch/[^/]+$", kind="status", status=429, retry_after="3600")
        result = await handle.result()
    assert result.status == "FAILED" and result.imports == 40 and result.errors == 3
    assert await server_time(ts_env) - t0 >= 6 * 3600
    assert sum(result.error_codes.values()) == 3
    # After the 429, the next status check came an hour (simulated) later, not sooner.
    status_calls = [r for r in sim.requests if r.route == STATUS_ROUTE]
    i429 = next(i for i, r in enumerate(status_calls) if r.status == 429)
    assert status_calls[i429 + 1].at - status_calls[i429].at >= 3600
    # Capped backoff: about one check a minute, not one a second.
    assert len(status_calls) < 6 * 60 + 20
    assert await activities_scheduled(handle) <= 3  # six hours of waiting are retries of one activity


async def test_failed_job_with_partial_failures_collects_every_error_once(ts_env, sim, tmp_path):
    job_id = sim.add_batch_job(kind="users", duration=120, imports=8, errors=250, page_size=100)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await start(ts_env, tq, {"kind": "users", "job_id": job_id, "destination": str(tmp_path / "out")})
        result = await handle.result()
    assert (result.status, result.imports, result.errors) == ("FAILED", 8, 250)
    expected = sim.expected_records(job_id, "errors")
    assert read_ndjson(result.errors_location) == expected
    assert result.error_codes == dict(Counter(r["code"] for r in expected))
    assert result.records_collected == 250
    assert result.errors_location.startswith(str(tmp_path / "out"))
    assert sim.count(route=ERRORS_ROUTE) == 3
    assert result.imports_location is None and sim.count(route=IMPORTS_ROUTE) == 0


async def test_completed_job_with_zero_errors_reads_no_error_pages(ts_env, sim, tmp_path):
    job_id = sim.add_batch_job(kind="events", duration=30, imports=12, errors=0)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        result = await (await start(ts_env, tq, {"kind": "events", "job_id": job_id, "collect_imports": True})).result()
    assert (result.status, result.imports, result.errors, result.error_codes) == ("COMPLETED", 12, 0, {})
    assert result.errors_location is None and sim.count(route=ERRORS_ROUTE) == 0
    assert read_ndjson(result.imports_location) == sim.expected_records(job_id, "imports")
    assert result.records_collected == 12


async def test_create_from_requests_sends_an_idempotency_key(ts_env, sim, tmp_path):
    sim.batch_defaults.update(duration=60, errors=2)
    requests = [{"uid": f"u{i}", "properties": {"n": i}} for i in range(30)]
    wf_id = f"create-{uuid.uuid4().hex}"
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        result = await (await start(ts_env, tq, {"kind": "users", "requests": requests}, wf_id)).result()
    creates = [r for r in sim.requests if r.method == "POST"]
    assert len(creates) == 1
    assert creates[0].headers["idempotency-key"] == idempotency_key(wf_id)
    assert (result.status, result.imports, result.errors) == ("FAILED", 28, 2)
    assert len(read_ndjson(result.errors_location)) == 2


async def test_unknown_job_id_fails_at_once_with_a_clear_error(ts_env, sim, tmp_path):
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        err = await failure_of(await start(ts_env, tq, {"kind": "events", "job_id": "no-such-job="}))
    assert err.type == "FullstoryNotFound" and err.non_retryable
    assert "no-such-job=" in err.message and "resource_not_found" in err.message
    assert sim.count(route=STATUS_ROUTE) == 1


async def test_wrong_api_key_fails_naming_the_key(ts_env, sim, tmp_path):
    job_id = sim.add_batch_job(kind="events")
    async with running_worker(ts_env.client, sim.base_url, tmp_path, api_key="not-the-key") as tq:
        err = await failure_of(await start(ts_env, tq, {"kind": "events", "job_id": job_id}))
    assert err.type == "FullstoryUnauthorized" and "FULLSTORY_API_KEY" in err.message
    assert "not-the-key" not in err.message
    assert sim.count(route=STATUS_ROUTE) == 1


async def test_forbidden_names_the_key_role(ts_env, sim, tmp_path):
    job_id = sim.add_batch_job(kind="events", errors=1)
    sim.fault(r"/errors$", kind="status", status=403)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        err = await failure_of(await start(ts_env, tq, {"kind": "events", "job_id": job_id}))
    assert err.type == "FullstoryForbidden" and "Admin or Architect" in err.message


async def test_50001_requests_are_rejected_before_any_call(ts_env, sim, tmp_path):
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        err = await failure_of(await start(ts_env, tq, {"kind": "events", "requests": [{"n": 1}] * 50_001}))
        assert err.type == "InvalidInput" and "requests" in err.message and "50000" in err.message
        big = tmp_path / "big.json"
        big.write_text(json.dumps([{"n": 1}] * 50_001))
        err = await failure_of(await start(ts_env, tq, {"kind": "events", "requests_url": str(big)}))
        assert err.type == "InvalidInput" and "50,001" in err.message
    assert sim.requests == []


async def test_transient_faults_are_retried_to_the_end(ts_env, sim, tmp_path):
    job_id = sim.add_batch_job(kind="events", duration=10, imports=5, errors=30, page_size=10)
    sim.fault(r"/v2/events/batch/[^/]+$", kind="status", status=503, count=3)
    sim.fault(r"/errors$", kind="reset", after_bytes=20)
    sim.fault(r"/errors$", kind="malformed")
    sim.fault(r"/errors$", kind="status", status=429, retry_after="120")
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        result = await (await start(ts_env, tq, {"kind": "events", "job_id": job_id})).result()
    assert read_ndjson(result.errors_location) == sim.expected_records(job_id, "errors")


async def test_deadline_ends_the_wait_with_a_clear_timeout(ts_env, sim, tmp_path):
    job_id = sim.add_batch_job(kind="events", duration=10 * 3600)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await start(ts_env, tq, {"kind": "events", "job_id": job_id, "timeout": "PT2H"})
        err = await failure_of(handle)
    assert err.type == "BatchJobTimeout" and job_id in err.message and "2:00:00" in err.message


async def test_progress_query_says_what_it_waits_for(ts_env, sim, tmp_path):
    job_id = sim.add_batch_job(kind="users", duration=3600)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await start(ts_env, tq, {"kind": "users", "job_id": job_id})
        while sim.count(route=STATUS_ROUTE) < 1:
            await asyncio.sleep(0.01)
        progress = await handle.query("progress")
        assert progress["phase"] == "waiting" if isinstance(progress, dict) else progress.phase == "waiting"
        desc = await handle.describe()
        await handle.result()
    detail = progress["detail"] if isinstance(progress, dict) else progress.detail
    assert job_id in detail and "deadline" in detail
    assert desc.status is not None


async def test_a_second_start_of_the_same_job_joins_the_first(ts_env, sim, tmp_path):
    from temporalio.common import WorkflowIDConflictPolicy

    job_id = sim.add_batch_job(kind="events", duration=600, errors=2)
    wf_id = batch_workflow_id("events", job_id)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        h1 = await start(ts_env, tq, {"kind": "events", "job_id": job_id}, wf_id)
        h2 = await ts_env.client.start_workflow(
            "BatchImportWorkflow",
            {"kind": "events", "job_id": job_id},
            id=wf_id,
            task_queue=tq,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            result_type=BatchImportResult,
        )
        assert h2.result_run_id == h1.result_run_id
        assert (await h2.result()) == (await h1.result())


async def test_the_shortest_poll_interval_allowed_works(ts_env, sim, tmp_path):
    """max_poll_interval 1 s (the minimum the input accepts) once made an invalid retry policy (max < initial)."""
    job_id = sim.add_batch_job(kind="users", duration=30, imports=5)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await start(ts_env, tq, {"kind": "users", "job_id": job_id, "max_poll_interval": 1})
        result = await asyncio.wait_for(handle.result(), 60)
    assert (result.status, result.imports) == ("COMPLETED", 5)


@pytest.mark.e2e  # simulated hours on the time-skipping server
@pytest.mark.parametrize("duration", [10, 137, 3 * 3600 + 17])
async def test_a_job_that_ends_between_two_checks_is_seen_within_a_tenth_of_its_age(ts_env, sim, tmp_path, duration):
    """The wait checks a job every max(2 s, 10 % of its age): its end is seen that promptly, for jobs of
    seconds and of hours alike (the cap, max_poll_interval, is set high so the age rule is what is tested)."""
    job_id = sim.add_batch_job(kind="users", duration=duration, imports=3)
    job = sim.batch.jobs[job_id]
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await start(ts_env, tq, {"kind": "users", "job_id": job_id, "max_poll_interval": "PT6H"})
        result = await handle.result()
    assert result.status == "COMPLETED"
    checks = [r for r in sim.requests if r.route == STATUS_ROUTE]
    seen = next(r.at for r in checks if r.at >= job.finished)
    age = job.finished - job.created
    assert seen - job.finished <= max(2.0, 0.1 * age) + 1.0, (seen - job.finished, age)  # + 1 s: scheduling
    assert all(b.at - a.at <= max(2.0, 0.1 * (b.at - job.created)) + 1.0 for a, b in itertools.pairwise(checks))
    assert len(checks) < 2 * 60  # logarithmic in the job's length, not one check every 2 s


@pytest.mark.e2e  # simulated minutes on the time-skipping server
async def test_a_job_of_the_expected_length_is_seen_just_after_it_ends(ts_env, sim, tmp_path):
    """A bulk import tells each batch how long the earlier ones took (`expected_duration`): the wait checks
    just after that too, so a job that took as long is seen at once, not up to a gap (10 % of its age) later."""
    job_id = sim.add_batch_job(kind="users", duration=137, imports=3)
    job = sim.batch.jobs[job_id]
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        inp = {"kind": "users", "job_id": job_id, "max_poll_interval": "PT6H", "expected_duration": 137}
        result = await (await start(ts_env, tq, inp)).result()
    assert result.status == "COMPLETED"
    checks = [r for r in sim.requests if r.route == STATUS_ROUTE]
    seen = next(r.at for r in checks if r.at >= job.finished)
    ages = [round(r.at - job.created, 2) for r in checks]
    assert seen - job.finished <= 0.25 + 1.0, ages  # EXPECTED_END_MARGIN + 1 s: scheduling
    assert all(b.at - a.at <= max(2.0, 0.1 * (b.at - job.created)) + 1.0 for a, b in itertools.pairwise(checks))
