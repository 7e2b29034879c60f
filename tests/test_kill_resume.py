"""End to end: workers SIGKILLed again and again lose nothing and hand over in seconds (issue 12).

Real worker processes, the dev server and the simulator. Two workers run; the one holding the
download (or the page walk) is SIGKILLed 1-3 s after each attempt starts, ten times, and replaced
(so one always stands by). A new attempt resumes from the part on disk (its journal), not from the
last heartbeat: the bytes (pages) fetched twice stay under one MiB (one page) per kill. Then a
512 MiB download with the gzip check on a machine kept busy must not see a heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState, TimeoutType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from activities.legacy_export import file_sha256
from helpers import WorkerProcess, stop_process
from workflows.batch_job_input import BatchImportResult, batch_workflow_id
from workflows.segment_export import SegmentExportResult, segment_export_workflow_id

pytestmark = pytest.mark.e2e

KILLS = 10
KILL_AFTER = (1.0, 3.0)  # seconds after an attempt starts
STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
ERRORS_ROUTE = "/v2/{kind}/batch/{job_id}/errors"


def leftovers(root: Path) -> list[Path]:
    """Parts and journals (their names begin with a dot: rglob's * matches them)."""
    return sorted(p for p in root.rglob("*") if p.name.endswith((".part", ".journal", ".tmp"))) if root.exists() else []


async def started_attempt(handle: WorkflowHandle, activity_type: str, after: int):
    """The pending `activity_type` if an attempt later than `after` is running now, else None."""
    for pa in (await handle.describe()).raw_description.pending_activities:
        if pa.activity_type.name == activity_type and pa.state == STARTED and pa.attempt > after:
            return pa
    return None


async def kill_again_and_again(
    handle: WorkflowHandle, activity_type: str, workers: list[WorkerProcess], new_worker, seed: int, progress
) -> list[dict]:
    """Up to KILLS times: wait (<= 30 s) for a new attempt, SIGKILL its worker 1-3 s after it started,
    start a replacement in the background. Returns one record per kill (attempt, progress, failover)."""
    rng = random.Random(seed)
    kills: list[dict] = []
    replacements: list[asyncio.Task] = []
    last_attempt = 0
    t_end = time.monotonic() + 240
    for _ in range(KILLS):
        pa = None
        while pa is None and time.monotonic() < t_end:
            pa = await started_attempt(handle, activity_type, last_attempt)
            if pa is None:
                desc = await handle.describe()
                if desc.status != WorkflowExecutionStatus.RUNNING:  # finished before all the kills
                    break
                await asyncio.sleep(0.05)
        if pa is None:
            break
        if kills:
            kills[-1]["failover_s"] = round(pa.last_started_time.ToDatetime().timestamp() - kills[-1]["t"], 1)
        started = pa.last_started_time.ToDatetime().timestamp()
        await asyncio.sleep(max(0.0, started + rng.uniform(*KILL_AFTER) - time.time()))
        pid = int(pa.last_worker_identity.split("@", 1)[0])
        (holder,) = [w for w in workers if w.proc is not None and w.proc.pid == pid]
        if await started_attempt(handle, activity_type, pa.attempt - 1) is None:
            break  # that attempt already ended (the work finished)
        holder.kill()
        t_kill = time.time()
        kills.append(
            {"attempt": pa.attempt, "alive_s": round(t_kill - started, 1), "progress": progress(), "t": t_kill}
        )
        last_attempt = pa.attempt
        replacement = new_worker()
        workers.append(replacement)
        replacements.append(asyncio.create_task(asyncio.to_thread(replacement.start, 60)))
    await asyncio.gather(*replacements)
    return kills


def report(what: str, kills: list[dict]) -> list[float]:
    failovers = [k["failover_s"] for k in kills if "failover_s" in k]
    print(
        f"\n{what}: {len(kills)} kills; per kill (attempt, s alive, progress at the kill, s to the next "
        f"attempt): {[(k['attempt'], k['alive_s'], k['progress'], k.get('failover_s')) for k in kills]}"
    )
    if failovers:
        print(
            f"{what}: kill -> next attempt started: max {max(failovers)} s, "
            f"mean {sum(failovers) / len(failovers):.1f} s"
        )
    return failovers


async def two_workers(worker_factory) -> list[WorkerProcess]:
    workers = [worker_factory(), worker_factory()]
    await asyncio.gather(*(asyncio.to_thread(w.start, 60) for w in workers))
    return workers


DOWNLOAD_SIZE = 24 << 20


@pytest.mark.slow
async def test_a_throttled_download_killed_ten_times_refetches_at_most_a_mib_per_kill(
    dev_env, sim, worker_factory, tmp_path
):
    t0 = time.monotonic()
    sim.storage_bytes_per_second = 1 << 20
    op_id = sim.add_operation(duration=0, size=DOWNLOAD_SIZE)
    dest = tmp_path / "data" / "exports"  # inside FULLSTORY_DATA_DIR (allowed locations)
    workers = await two_workers(worker_factory)
    handle = await dev_env.client.start_workflow(
        "SegmentExportWorkflow",
        {"operation_id": op_id, "destination": str(dest)},
        id=segment_export_workflow_id(op_id),
        task_queue=worker_factory.task_queue,
        result_type=SegmentExportResult,
    )

    def on_disk() -> str:
        return f"{sum(p.stat().st_size for p in dest.rglob('*.part')) / (1 << 20):.1f} MiB" if dest.exists() else "-"

    kills = await kill_again_and_again(handle, "download_to_destination", workers, worker_factory, 12, on_disk)
    result = await asyncio.wait_for(handle.result(), 120)
    failovers = report("download", kills)

    served = sim.bytes_served(op_id)
    print(
        f"download: {served / (1 << 20):.1f} MiB served for {DOWNLOAD_SIZE >> 20} MiB "
        f"({served / DOWNLOAD_SIZE:.2f}x); {time.monotonic() - t0:.0f} s in all"
    )
    assert len(kills) == KILLS
    path = Path(result.location)
    assert result.bytes == DOWNLOAD_SIZE == path.stat().st_size
    assert result.sha256 == sim.file_sha256(op_id) == file_sha256(path)
    assert served <= DOWNLOAD_SIZE + (10 << 20), f"{served} bytes served for {DOWNLOAD_SIZE}"
    assert not leftovers(tmp_path), leftovers(tmp_path)
    logs = "".join(w.log() for w in workers)
    assert logs.count("resuming download of") >= KILLS
    assert max(failovers) < 12, failovers  # 6 s heartbeat timeout + <= 2 s retry gap, on a busy 2-core box


PAGES, PAGE_SIZE = 40, 25


@pytest.mark.slow
async def test_a_page_walk_killed_ten_times_fetches_each_page_about_once(dev_env, sim, worker_factory, tmp_path):
    t0 = time.monotonic()
    sim.page_delay = 0.6  # ~2-4 pages per attempt
    job_id = sim.add_batch_job(kind="events", duration=0, imports=100, errors=PAGES * PAGE_SIZE, page_size=PAGE_SIZE)
    workers = await two_workers(worker_factory)
    handle = await dev_env.client.start_workflow(
        "BatchImportWorkflow",
        {"kind": "events", "job_id": job_id, "destination": str(tmp_path / "data" / "records")},
        id=batch_workflow_id("events", job_id),
        task_queue=worker_factory.task_queue,
        result_type=BatchImportResult,
    )

    kills = await kill_again_and_again(
        handle, "collect_batch_records", workers, worker_factory, 7, lambda: f"{sim.count(route=ERRORS_ROUTE)} pages"
    )
    result = await asyncio.wait_for(handle.result(), 120)
    report("page walk", kills)

    pages = sim.count(route=ERRORS_ROUTE)
    print(f"page walk: {pages} page requests for {PAGES} pages; {time.monotonic() - t0:.0f} s in all")
    assert len(kills) == KILLS
    records = [json.loads(x) for x in Path(result.errors_location).read_text().splitlines()]
    assert records == sim.expected_records(job_id, "errors")  # every record once, in order
    assert result.records_collected == PAGES * PAGE_SIZE == sum(result.error_codes.values())
    assert pages <= PAGES + KILLS, pages
    assert not leftovers(tmp_path), leftovers(tmp_path)
    assert "".join(w.log() for w in workers).count("resuming errors of events batch job") >= KILLS // 2


BIG = 512 << 20
BUSY_SECONDS = 150  # the load's own bound; stopped by pid once the download is done


async def test_a_512_mib_download_with_the_gzip_check_on_a_busy_machine_sees_no_heartbeat_timeout(
    dev_env, sim, worker_factory, tmp_path
):
    t0 = time.monotonic()
    op_id = sim.add_operation(duration=0, size=BIG)
    sim.file_sha256(op_id)  # the simulator's generator, before the clock starts
    worker = worker_factory().start(timeout=60)
    busy = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end:\n    pass\n",
            ]
        )
        for _ in range(2)
    ]
    try:
        handle = await dev_env.client.start_workflow(
            "SegmentExportWorkflow",
            {"operation_id": op_id, "destination": str(tmp_path / "data" / "big"), "verify_gzip": True},
            id=segment_export_workflow_id(op_id),
            task_queue=worker_factory.task_queue,
            result_type=SegmentExportResult,
        )
        result = await asyncio.wait_for(handle.result(), BUSY_SECONDS - 10)
        still_busy = all(p.poll() is None for p in busy)
    finally:
        for p in busy:
            stop_process(p, grace=5)
    print(f"\n512 MiB with the gzip check beside two busy loops: {time.monotonic() - t0:.0f} s in all")
    assert still_busy, "the load ended before the download did"

    timeouts, attempts = [], []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            timeouts.append(event.activity_task_timed_out_event_attributes.failure.timeout_failure_info.timeout_type)
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attempts.append(event.activity_task_started_event_attributes.attempt)
    assert TimeoutType.TIMEOUT_TYPE_HEARTBEAT not in timeouts, timeouts
    assert not timeouts and set(attempts) == {1}, (timeouts, attempts)
    assert result.bytes == BIG and result.sha256 == sim.file_sha256(op_id)
    assert "resuming download of" not in worker.log()
