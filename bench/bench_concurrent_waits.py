"""N concurrent waiting imports on one worker: peak RSS, CPU, status calls per job, detection latency.

    .venv/bin/python bench/bench_concurrent_waits.py [--jobs 500] [--min-duration 60] [--max-duration 180] [--poll 60]

Jobs finish at spread-out times; "detection latency" is how long after a
job's finish its workflow closed (the status-check backoff is capped at --poll).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from common import API_KEY, PeakRss, Simulator, dev_server, mib, run, worker_process
from workflows.batch_job_input import BatchImportResult, batch_workflow_id


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--min-duration", type=float, default=60)
    parser.add_argument("--max-duration", type=float, default=180)
    parser.add_argument("--poll", type=float, default=60, help="max_poll_interval, seconds")
    args = parser.parse_args()
    rng = random.Random(7)
    async with dev_server() as env:
        with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
            with worker_process(env, sim, Path(tmp)) as w, PeakRss(w.proc.pid) as rss:
                t0 = time.time()
                jobs = {
                    sim.add_batch_job(
                        kind="events", duration=rng.uniform(args.min_duration, args.max_duration), imports=10, errors=1
                    ): None
                    for _ in range(args.jobs)
                }
                handles = await asyncio.gather(
                    *[
                        env.client.start_workflow(
                            "BatchImportWorkflow",
                            {"kind": "events", "job_id": j, "max_poll_interval": args.poll},
                            id=batch_workflow_id("events", j),
                            task_queue=w.task_queue,
                            result_type=BatchImportResult,
                        )
                        for j in jobs
                    ]
                )
                started = time.time() - t0
                latencies = []
                for h, j in zip(handles, jobs, strict=True):
                    await h.result()
                    desc = await h.describe()
                    job = sim.jobs[j]
                    latencies.append(desc.close_time.timestamp() - (job.created + job.duration))
                wall = time.time() - t0
    status_calls = sim.count(route="/v2/{kind}/batch/{job_id}")
    q = statistics.quantiles(latencies, n=20)
    print(
        f"jobs                   {args.jobs} (durations {args.min_duration:g}-{args.max_duration:g} s, "
        f"max_poll_interval {args.poll:g} s); all started in {started:.1f} s; wall {wall:.0f} s"
    )
    print(
        f"worker peak RSS        {mib(rss.peak)}; worker CPU {rss.cpu_seconds:.1f} s "
        f"({rss.cpu_seconds / wall * 100:.1f}% of one core)"
    )
    print(f"status calls per job   {status_calls / args.jobs:.1f}")
    print(
        f"detection latency      median {statistics.median(latencies):.1f} s, p95 {q[18]:.1f} s, "
        f"max {max(latencies):.1f} s"
    )


if __name__ == "__main__":
    run(main())
