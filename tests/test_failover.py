"""End to end: failover between two worker processes, and a Temporal dev-server restart mid-wait.

1. Two real workers (`python worker.py`) share one task queue and one data directory (like a shared
   volume). Worker A picks up a mix of every workflow; once it holds a page walk, a segment-export
   download and a legacy-bundle download, worker B starts and A is SIGKILLed. B must finish
   everything exactly: records, sha256, bundles + manifest, one batch job and one export created at
   "Fullstory", no `.part` left. The time until the last activity A held runs on B is printed.
2. Our own dev server with a SQLite file: a worker waits on a batch job and on an export's operation;
   the server is stopped (SIGTERM), kept down, started again on the same port and file. The worker
   process must ride the outage out by itself and both workflows complete exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import psutil
import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowHandle

from activities.legacy_export import file_sha256
from activities.operations import Operation
from helpers import API_KEY, DevServer, WorkerProcess, wait_until, worker_env
from infra.data_converter import DATA_CONVERTER
from workflows.batch_job_input import BatchImportResult, batch_workflow_id
from workflows.data_export_sync import DataExportSyncResult
from workflows.operation import operation_workflow_id
from workflows.segment_export import SegmentExportResult, segment_export_workflow_id

pytestmark = pytest.mark.e2e

STATUS_ROUTE = "/v2/{kind}/batch/{job_id}"
ERRORS_ROUTE = "/v2/{kind}/batch/{job_id}/errors"
CREATE_ROUTE = "/v2/{kind}/batch"
OPERATION_ROUTE = "/operations/v1/{operation_id}"
STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
TIME_RANGE = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"}


def parts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part")) if root.exists() else []  # pathlib's * matches hidden .names too


def part_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in parts(root))


def exited(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def poll(predicate, timeout: float, what: str, every: float = 0.2):
    """Like helpers.wait_until, for an async predicate; returns its first truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


async def started_activities(handles: list[WorkflowHandle]) -> dict[tuple[str, str], tuple[str, str, dict]]:
    """{(workflow id, activity id): (activity type, worker identity, last heartbeat)} of activities running now."""
    out = {}
    for handle in handles:
        desc = await handle.describe()
        for pa in desc.raw_description.pending_activities:
            if pa.state == STARTED:
                beat = {}
                if pa.heartbeat_details.payloads:
                    beat = (await DATA_CONVERTER.decode(pa.heartbeat_details.payloads))[0] or {}
                out[(handle.id, pa.activity_id)] = (pa.activity_type.name, pa.last_worker_identity, beat)
    return out


def finish_soon(sim, job_or_op, seconds: float) -> None:
    """Let a simulator job (or operation) that was made to run "forever" finish `seconds` from now."""
    job_or_op.duration = sim.clock_now() - job_or_op.created + seconds


# --- 1. failover between two workers --------------------------------------------------------------------

EVENTS_REQUESTS = 1000
EVENTS_ERRORS = 600  # 60 pages of 10, served slowly until the kill: A is mid-walk
USERS_IMPORTS, USERS_ERRORS = 300, 200
EXPORT_SIZE = 16 << 20
BUNDLE_SIZE = 8 << 20
BUNDLES, BUNDLES_WANTED = 5, 4  # the sync's `stop` is at the end of the 4th bundle
BUNDLE_START, BUNDLE_SPAN = 1_700_000_000, 3600
SLOW_BYTES_PER_SECOND = 1 << 20  # until B starts: a bundle takes 8 s, the export 16 s
SLOW_PAGE_DELAY = 0.2  # until B starts: the events walk takes 12 s
FROZEN_BYTES_PER_SECOND, FROZEN_PAGE_DELAY = 32 << 10, 3.0  # while B starts, until the kill


async def test_sigkill_one_of_two_workers_the_other_finishes_every_workflow_exactly(
    dev_env, sim, worker_factory, tmp_path
):
    t_start = time.monotonic()
    client = dev_env.client
    tq = worker_factory.task_queue
    data = tmp_path / "data"  # FULLSTORY_DATA_DIR of both workers: one shared volume
    bundles_dest = tmp_path / "bundles"
    env = {"FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE": "600"}

    # The simulator: slow until the kill (so A holds work), full speed afterwards.
    sim.page_delay = SLOW_PAGE_DELAY
    sim.storage_bytes_per_second = SLOW_BYTES_PER_SECOND
    sim.batch_defaults.update(duration=1, errors=EVENTS_ERRORS, page_size=10, retry_after_while_processing=1)
    sim.export_defaults.update(size=EXPORT_SIZE, duration=1)
    users_job_id = sim.add_batch_job(
        kind="users",
        duration=3600,
        imports=USERS_IMPORTS,
        errors=USERS_ERRORS,
        page_size=20,
        retry_after_while_processing=1,
    )  # waiting at the kill
    op_id = sim.add_operation(duration=3600, size=1 << 20)  # waiting at the kill
    bundle_ids = sim.add_bundles(BUNDLES, size=BUNDLE_SIZE, start=BUNDLE_START, span=BUNDLE_SPAN)
    stop = BUNDLE_START + BUNDLES_WANTED * BUNDLE_SPAN

    a = worker_factory(**env).start()

    sync = await client.start_workflow(
        "DataExportSyncWorkflow",
        {"start": 1_600_000_000, "stop": stop, "destination": str(bundles_dest)},
        id=f"fullstory-data-export-sync-failover-{tq}",
        task_queue=tq,
        result_type=DataExportSyncResult,
    )
    events = await client.start_workflow(
        "BatchImportWorkflow",
        {
            "kind": "events",
            "requests": [
                {"name": "Signup", "user": {"uid": f"u-{i}"}, "properties": {"seq": i}} for i in range(EVENTS_REQUESTS)
            ],
        },
        id=f"fullstory-batch-events-failover-{tq}",
        task_queue=tq,
        result_type=BatchImportResult,
    )
    users = await client.start_workflow(
        "BatchImportWorkflow",
        {"kind": "users", "job_id": users_job_id, "collect_imports": True},
        id=batch_workflow_id("users", users_job_id),
        task_queue=tq,
        result_type=BatchImportResult,
    )
    operation = await client.start_workflow(
        "OperationWorkflow",
        {"operation_id": op_id, "max_poll_interval": 2},
        id=operation_workflow_id(op_id),
        task_queue=tq,
        result_type=Operation,
    )
    export = await client.start_workflow(
        "SegmentExportWorkflow",
        {
            "segment_id": "everyone",
            "type": "TYPE_EVENT",
            "format": "FORMAT_NDJSON",
            "time_range": TIME_RANGE,
            "timezone": "America/New_York",
            "max_poll_interval": 2,
        },
        id=segment_export_workflow_id(f"failover-{tq}"),
        task_queue=tq,
        result_type=SegmentExportResult,
    )
    handles = [sync, events, users, operation, export]

    # A alone picks everything up: it walks the events' error pages and downloads the export and a bundle,
    # with progress heartbeated in each (so B can resume), while the users job and the operation wait.
    export_dir = data / "segment-exports"
    want = {"collect_batch_records", "download_to_destination", "store_export_bundle"}

    async def a_holds_the_long_ones():
        running = await started_activities(handles)  # only A runs yet: every identity here is A's
        progress = {t for t, _, beat in running.values() if beat.get("bytes_done") or beat.get("records")}
        return running if want <= progress else None

    held = await poll(a_holds_the_long_ones, timeout=60, what="worker A to hold a walk and two downloads")
    (a_id,) = {worker for _, worker, _ in held.values()}
    assert sim.count(route=STATUS_ROUTE) >= 2 and sim.count(route=OPERATION_ROUTE) >= 1
    # Nearly freeze the simulator while B boots (seconds on a busy machine), so A still holds all three.
    sim.storage_bytes_per_second, sim.page_delay = FROZEN_BYTES_PER_SECOND, FROZEN_PAGE_DELAY
    b = await asyncio.to_thread(worker_factory(**env).start)
    still = {k: v for k, v in (await started_activities(handles)).items() if v[1] == a_id}
    assert set(held) <= set(still), f"worker A no longer holds {set(held) - set(still)}"
    held = still
    a_children = psutil.Process(a.proc.pid).children(recursive=True)  # gzip checks: must not outlive A
    a.kill()
    t_kill = time.monotonic()
    # From here on the simulator is fast, and the waits end soon: B has all the rest to do.
    sim.page_delay = 0
    sim.storage_bytes_per_second = None
    finish_soon(sim, sim.jobs[users_job_id], 2)
    finish_soon(sim, sim.operations[op_id], 2)
    at_kill = {
        "export part": part_bytes(export_dir),
        "bundle part": part_bytes(bundles_dest),
        "error pages": sim.count(route=ERRORS_ROUTE),
    }
    beats = sorted(
        (t, {k: v for k, v in beat.items() if k in ("records", "bytes_done")}) for t, _, beat in held.values()
    )
    print(
        f"\nkilled worker A ({a_id}) {time.monotonic() - t_start:.1f}s after the test began; at the kill: "
        f"{at_kill}; it held (last heartbeats): {beats}"
    )
    takers: set[str] = set()

    async def moved():
        by_wf: dict[str, set[str]] = {}
        for wf, act in held:
            by_wf.setdefault(wf, set()).add(act)
        for handle in handles:
            if handle.id not in by_wf:
                continue
            desc = await handle.describe()
            pending = {pa.activity_id: pa for pa in desc.raw_description.pending_activities}
            for act in by_wf[handle.id]:
                pa = pending.get(act)
                if pa is None:  # done: B ran it (no one else is left)
                    continue
                if pa.state != STARTED or pa.last_worker_identity == a_id:
                    return False
                takers.add(pa.last_worker_identity)
        return True

    await poll(moved, timeout=60, what="the activities A held to run on worker B", every=0.25)
    failover = time.monotonic() - t_kill
    print(f"failover: the last activity held by A was running on B ({takers}) {failover:.1f}s after the kill")
    assert failover < 60 and len(takers) <= 1

    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 90)
    sync_result, events_result, users_result, op_result, export_result = results
    print(f"all {len(handles)} workflows done {time.monotonic() - t_kill:.1f}s after the kill")

    # The killed worker left no gzip-check child behind (they end at EOF on their stdin).
    assert a_children, "A had no gzip-check child: was it really downloading?"
    await wait_until(lambda: all(map(exited, a_children)), timeout=10, what="worker A's child processes to exit")

    # Events, created from requests: exactly one job at "Fullstory", every error record once, in order.
    created = [j for j in sim.jobs if j != users_job_id]
    assert created == [events_result.job_id], f"duplicate batch jobs created: {created}"
    keys = {r.headers.get("idempotency-key") for r in sim.requests if r.route == CREATE_ROUTE}
    assert len(keys) == 1 and None not in keys
    assert (events_result.status, events_result.imports, events_result.errors) == (
        "FAILED",
        EVENTS_REQUESTS - EVENTS_ERRORS,
        EVENTS_ERRORS,
    )
    errors_path = Path(events_result.errors_location)
    assert errors_path.is_relative_to(data)
    assert [json.loads(x) for x in errors_path.read_text().splitlines()] == sim.expected_records(
        events_result.job_id, "errors"
    )
    assert events_result.records_collected == EVENTS_ERRORS == sum(events_result.error_codes.values())
    assert sim.count(route=ERRORS_ROUTE) < EVENTS_ERRORS // 10 + USERS_ERRORS // 20 + at_kill["error pages"]

    # Users, watching an existing job: errors and imports, each exactly once.
    assert (users_result.job_id, users_result.status) == (users_job_id, "FAILED")
    assert (users_result.imports, users_result.errors) == (USERS_IMPORTS, USERS_ERRORS)
    for which, location in (("errors", users_result.errors_location), ("imports", users_result.imports_location)):
        lines = Path(location).read_text().splitlines()
        assert [json.loads(x) for x in lines] == sim.expected_records(users_job_id, which)
    assert users_result.records_collected == USERS_IMPORTS + USERS_ERRORS

    # The operation.
    assert (op_result.id, op_result.state, op_result.estimate_pct_complete) == (op_id, "COMPLETED", 100)

    # The segment export: one operation created, the file exact, resumed by B with Range from A's part.
    assert len(sim.operations) == 2 and export_result.operation_id in sim.operations
    path = Path(export_result.location)
    assert path.parent == export_dir
    assert export_result.bytes == EXPORT_SIZE == path.stat().st_size
    assert export_result.sha256 == sim.file_sha256(export_result.operation_id) == file_sha256(path)
    served = sim.bytes_served(export_result.operation_id)
    assert served < EXPORT_SIZE + EXPORT_SIZE // 2, f"not resumed: {served} bytes served for {EXPORT_SIZE}"

    # The sync: the 4 bundles before `stop`, each stored once, the manifest right; the 5th not fetched.
    assert (sync_result.bundles, sync_result.cursor, sync_result.bytes) == (
        BUNDLES_WANTED,
        stop,
        BUNDLES_WANTED * BUNDLE_SIZE,
    )
    files = sorted(bundles_dest.glob("*.json.gz"))
    assert len(files) == BUNDLES_WANTED
    manifest = json.loads((bundles_dest / "manifest.json").read_text())
    assert sorted(manifest) == sorted(bundle_ids[:BUNDLES_WANTED])
    for bundle_id in bundle_ids[:BUNDLES_WANTED]:
        (file,) = [f for f in files if f.name.endswith(f"-{bundle_id}.json.gz")]
        assert manifest[bundle_id] == {"file": file.name, "bytes": BUNDLE_SIZE, "sha256": sim.bundle_sha256(bundle_id)}
        assert file_sha256(file) == sim.bundle_sha256(bundle_id)
        assert sim.bytes_served(bundle_id) < 2 * BUNDLE_SIZE
    assert sim.bytes_served(bundle_ids[-1]) == 0
    assert sim.legacy_429s == 0

    # Nothing partial anywhere; B resumed A's walk and downloads from the shared directory.
    assert not parts(tmp_path), parts(tmp_path)
    b_log = b.log()
    assert "resuming errors of events batch job" in b_log
    assert b_log.count("resuming download of") >= 2, "B did not resume the export and the bundle from A's parts"
    logs = a.log() + b_log
    assert API_KEY not in logs and "Signature=" not in logs
    print(f"failover test: {time.monotonic() - t_start:.1f}s in all")


# --- 2. the Temporal dev server restarts mid-wait ---------------------------------------------------------


@pytest.fixture
def own_dev_server(tmp_path):
    server = DevServer(tmp_path / "temporal.db", tmp_path / "temporal.log")
    yield server
    server.stop()


OUTAGE_SECONDS = 4.0
JOB_RETRY_AFTER = 8  # the batch job's Retry-After: its next check is a durable timer across the outage
OP_MAX_POLL = 8


async def waiting_on_timers(handles: list[WorkflowHandle], margin: float) -> bool:
    """Each workflow's wait activity is between attempts (a retry timer), its next check >= margin s away.

    Stopping the server then interrupts no activity attempt: an attempt whose completion is lost
    in a restart is only retried after its start-to-close timeout (30 s for a status check).
    """
    now = time.time()
    for handle in handles:
        pending = (await handle.describe()).raw_description.pending_activities
        if len(pending) != 1:
            return False
        pa = pending[0]
        if pa.state != PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED or pa.attempt < 2:
            return False
        if pa.scheduled_time.seconds + pa.scheduled_time.nanos / 1e9 - now < margin:  # the next attempt's time
            return False
    return True


async def test_dev_server_restart_mid_wait_worker_rides_it_out_and_workflows_finish_exactly(
    own_dev_server, sim, tmp_path
):
    t_start = time.monotonic()
    server = own_dev_server
    server.start()
    client = await server.ready()
    tq = f"restart-{os.urandom(5).hex()}"
    worker = WorkerProcess(
        tmp_path / "worker.log",
        worker_env(server.address, sim.base_url, tmp_path, tq),
    )
    try:
        await asyncio.to_thread(worker.start)
        job_id = sim.add_batch_job(
            kind="events",
            duration=3600,
            imports=700,
            errors=300,
            page_size=50,
            retry_after_while_processing=JOB_RETRY_AFTER,
        )
        op_id = sim.add_operation(duration=3600, size=4 << 20)
        batch = await client.start_workflow(
            "BatchImportWorkflow",
            {"kind": "events", "job_id": job_id},
            id=batch_workflow_id("events", job_id),
            task_queue=tq,
            result_type=BatchImportResult,
        )
        export = await client.start_workflow(
            "SegmentExportWorkflow",
            {"operation_id": op_id, "max_poll_interval": OP_MAX_POLL},
            id=segment_export_workflow_id(op_id),
            task_queue=tq,
            result_type=SegmentExportResult,
        )
        await poll(
            lambda: waiting_on_timers([batch, export], margin=2.0),
            timeout=30,
            what="both workflows to wait on a retry timer, the next check >= 2 s away",
            every=0.05,
        )
        checks_before = {r: sim.count(route=r) for r in (STATUS_ROUTE, OPERATION_ROUTE)}

        server.stop()  # SIGTERM, waited for
        t_down = time.monotonic()
        # The outage: the worker must neither exit nor need a restart. The job and the export finish meanwhile.
        finish_soon(sim, sim.jobs[job_id], 0)
        finish_soon(sim, sim.operations[op_id], 0)
        while time.monotonic() - t_down < OUTAGE_SECONDS:
            assert worker.proc.poll() is None, f"worker exited during the outage:\n{worker.log()[-3000:]}"
            await asyncio.sleep(0.1)
        server.start()
        await server.ready()
        t_up = time.monotonic()
        print(
            f"\ndev server down {t_up - t_down:.1f}s (SIGTERM, {OUTAGE_SECONDS:g}s outage, restarted on "
            f"{server.address} with the same {server.db.name}); checks before: {checks_before}"
        )
        assert worker.proc.poll() is None, f"worker exited during the outage:\n{worker.log()[-3000:]}"
        sim.reset_stats()
        back: dict[str, float] = {}
        for route in (STATUS_ROUTE, OPERATION_ROUTE):
            # The retry timers (<= 8 s) fire after the restart: the worker, still the same process, checks again.
            await wait_until(
                lambda route=route: sim.count(route=route) >= 1,
                timeout=OP_MAX_POLL + 12,
                what=f"the worker to call {route} again after the restart",
            )
            back[route] = round(time.monotonic() - t_up, 1)
        print(f"the same worker checked again after the restart (seconds): {back}")

        batch_result, export_result = await asyncio.wait_for(asyncio.gather(batch.result(), export.result()), 60)
        assert worker.proc.poll() is None and worker.starts == 1, "the worker exited"
        assert (batch_result.job_id, batch_result.status, batch_result.imports, batch_result.errors) == (
            job_id,
            "FAILED",
            700,
            300,
        )
        lines = Path(batch_result.errors_location).read_text().splitlines()
        assert [json.loads(x) for x in lines] == sim.expected_records(job_id, "errors")
        assert batch_result.records_collected == 300 == sum(batch_result.error_codes.values())
        path = Path(export_result.location)
        assert export_result.operation_id == op_id
        assert export_result.bytes == 4 << 20 == path.stat().st_size
        assert export_result.sha256 == sim.file_sha256(op_id) == file_sha256(path)
        assert not parts(tmp_path)
        assert API_KEY not in worker.log()
        print(
            f"restart test: {time.monotonic() - t_start:.1f}s in all; results "
            f"{time.monotonic() - t_up:.1f}s after the restart"
        )
    finally:
        worker.stop()
