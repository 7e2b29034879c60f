"""Bulk import benchmark: N users (gzip NDJSON) against the simulator, jobs of 10 s, 5 batch slots.

    .venv/bin/python bench/bench_bulk_import.py [N ...]     # default: 100000 1000000
    .venv/bin/python bench/bench_bulk_import.py --slots 20 --max-in-flight 10 1000000

Prints, per N: wall time against the ideal (ceil(N / 50,000) batches in waves of 5 x 10 s, plus the
staging time), staging items/s against `zcat FILE | wc -l` on the same file, the worker's peak RSS,
and the parent's history events. Asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path

from common import API_KEY, PeakRss, dev_server, mib, run, worker_process
from simulator import Simulator
from workflows.bulk_import_input import BulkImportResult

JOB_SECONDS = 10
SLOTS = 5
BATCH = 50_000


def write_source(path: Path, n: int) -> None:
    with gzip.open(path, "wt", compresslevel=1) as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "uid": f"user-{i}",
                        "display_name": f"User {i}",
                        "email": f"user-{i}@example.com",
                        "properties": {"plan": "pro", "seq": i},
                    }
                )
                + "\n"
            )


def zcat_wc(path: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(f"zcat {path} | wc -l", shell=True, check=True, capture_output=True)
    return time.monotonic() - t0


async def one(n: int, slots: int, in_flight: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        source = data / "users.ndjson.gz"
        write_source(source, n)
        zcat = zcat_wc(source)
        async with dev_server() as env:
            with Simulator(api_key=API_KEY) as sim:
                sim.batch_defaults.update(duration=JOB_SECONDS, errors=10)
                with worker_process(env, sim, data, FULLSTORY_MAX_BATCHES_IN_PROGRESS=str(slots)) as w:
                    assert w.proc is not None
                    with PeakRss(w.proc.pid) as rss:
                        t0 = time.monotonic()
                        wall0 = time.time()
                        handle = await env.client.start_workflow(
                            "BulkImportWorkflow",
                            {"kind": "users", "source": str(source), "max_in_flight": in_flight},
                            id=f"bench-bulk-{n}",
                            task_queue=w.task_queue,
                            result_type=BulkImportResult,
                        )
                        result = await handle.result()
                        wall = time.monotonic() - t0
                    history = await handle.fetch_history()
                    await batch_timeline(env.client, f"bench-bulk-{n}", wall0, sim)
                    parent_tail(history.events, wall0)
        scheduled = next(
            e
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name == "stage_bulk_source"
        )
        stage = next(  # the staging activity's own completion (not the location check before it)
            (
                e
                for e in history.events
                if e.HasField("activity_task_completed_event_attributes")
                and e.activity_task_completed_event_attributes.scheduled_event_id == scheduled.event_id
            ),
            None,
        )
        staging = (stage.event_time.ToDatetime() - scheduled.event_time.ToDatetime()).total_seconds() if stage else 0
        batches = math.ceil(n / BATCH)
        waves = math.ceil(batches / min(slots, in_flight))
        ideal = waves * JOB_SECONDS + staging
        print(
            f"N={n:,}, {slots} slots, max_in_flight {in_flight}: {result.batches} batches, "
            f"status {result.status}, errors {result.errors}"
        )
        print(
            f"  wall {wall:.1f}s vs ideal {ideal:.1f}s ({waves} waves x {JOB_SECONDS}s"
            f" + staging {staging:.1f}s); ratio {wall / ideal:.2f}"
        )
        print(f"  staging {n / max(staging, 1e-9):,.0f} items/s vs zcat|wc -l {n / zcat:,.0f} lines/s ({zcat:.2f}s)")
        print(
            f"  worker peak RSS {mib(rss.peak)}, CPU {rss.cpu_seconds:.1f}s; parent history {len(history.events)}"
            f" events; simulator peak in progress {sim.batch.peak_in_progress}"
        )


def _activity_times(events: list) -> dict[str, tuple[float, float]]:
    """Per activity type (first of each): (scheduled, completed) event times."""
    scheduled: dict[int, tuple[str, float]] = {}
    out: dict[str, tuple[float, float]] = {}
    for e in events:
        t = e.event_time.ToMicroseconds() / 1e6
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = (e.activity_task_scheduled_event_attributes.activity_type.name, t)
        elif e.HasField("activity_task_completed_event_attributes"):
            name, t0 = scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
            out.setdefault(name, (t0, t))
    return out


def parent_tail(events: list, t0: float) -> None:
    """The bulk import's own steps (s from start): staged, each child's close seen, merged, closed."""
    at = {name: (t0s - t0, t1 - t0) for name, (t0s, t1) in _activity_times(events).items()}
    ends = [
        e.event_time.ToMicroseconds() / 1e6 - t0
        for e in events
        if e.HasField("child_workflow_execution_completed_event_attributes")
    ]
    closed = events[-1].event_time.ToMicroseconds() / 1e6 - t0
    merges = [v for k, v in at.items() if k.startswith("merge")]
    print(
        f"  parent: staged {at.get('stage_bulk_source', (0, 0))[1]:.1f}, last child closed {max(ends, default=0):.1f}, "
        + ", ".join(f"{k} {a:.1f}-{b:.1f}" for k, (a, b) in at.items() if k.startswith("merge"))
        + f", closed {closed:.1f}   (merges: {len(merges)})"
    )


async def batch_timeline(client, parent_id: str, t0: float, sim: Simulator, first: int = 1000) -> None:
    """Per batch, seconds from the bulk import's start: child started, slot granted, job created, job
    finished at Fullstory, end seen, child closed. The gaps between them are ours; the job's are Fullstory's."""
    print("  batch  started  granted  created  fs-done  seen  closed   (s from start; ours = closed - fs-done)")
    jobs = {j.id: j for j in sim.batch.jobs.values()}
    for i in range(first):
        handle = client.get_workflow_handle(f"{parent_id}-batch-{i:05d}")
        try:
            events = (await handle.fetch_history()).events
        except Exception:
            break
        start = events[0].event_time.ToMicroseconds() / 1e6
        closed = events[-1].event_time.ToMicroseconds() / 1e6
        granted = next(
            (
                e.event_time.ToMicroseconds() / 1e6
                for e in events
                if e.HasField("workflow_execution_signaled_event_attributes")
            ),
            float("nan"),
        )
        acts = _activity_times(events)
        result = await handle.result()
        job = jobs.get(result["job_id"])
        done = job.finished - sim.clock_now() + time.time() if job else float("nan")  # simulator clock -> wall
        seen = acts.get("wait_for_batch_job", (float("nan"),) * 2)[1]
        created = acts.get("create_batch_job", (float("nan"),) * 2)[1]
        print(
            f"  {i:5d}  {start - t0:7.1f}  {granted - t0:7.1f}  {created - t0:7.1f}  {done - t0:7.1f}"
            f"  {seen - t0:5.1f}  {closed - t0:6.1f}   ours after Fullstory: {closed - done:4.1f}"
        )


async def main(sizes: list[int], slots: int, in_flight: int) -> None:
    for n in sizes:
        await one(n, slots, in_flight)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--slots", type=int, default=SLOTS, help="FULLSTORY_MAX_BATCHES_IN_PROGRESS")
    parser.add_argument("--max-in-flight", type=int, default=10)
    args = parser.parse_args()
    run(main(args.sizes, args.slots, args.max_in_flight))
