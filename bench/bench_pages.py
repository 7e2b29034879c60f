"""Collecting 100,000 error records over 1,000 pages: records/s and history events.

.venv/bin/python bench/bench_pages.py [--records 100000] [--page-size 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import API_KEY, PeakRss, Simulator, dev_server, mib, run, worker_process
from workflows.batch_job_input import BatchImportResult, batch_workflow_id


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    async with dev_server() as env:
        with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
            job = sim.add_batch_job(kind="events", duration=0, imports=0, errors=args.records, page_size=args.page_size)
            with worker_process(env, sim, Path(tmp)) as w, PeakRss(w.proc.pid) as rss:
                t0 = time.perf_counter()
                handle = await env.client.start_workflow(
                    "BatchImportWorkflow",
                    {"kind": "events", "job_id": job},
                    id=batch_workflow_id("events", job),
                    task_queue=w.task_queue,
                    result_type=BatchImportResult,
                )
                result = await handle.result()
                wall = time.perf_counter() - t0
            history = await handle.fetch_history()
            pages = sim.count(route="/v2/{kind}/batch/{job_id}/errors")
            size = Path(result.errors_location).stat().st_size
    print(f"records collected      {result.records_collected:,} over {pages:,} pages ({mib(size)} NDJSON)")
    print(f"wall (start->result)   {wall:.2f} s")
    print(f"records/s              {result.records_collected / wall:,.0f}")
    print(f"history events         {len(history.events)}")
    print(f"worker peak RSS        {mib(rss.peak)}; worker CPU {rss.cpu_seconds:.1f} s")


if __name__ == "__main__":
    run(main())
