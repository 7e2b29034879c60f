"""Legacy sync: 10 bundles x 50 MiB with the rate limit lifted, vs curl fetching the same bundles in sequence.

.venv/bin/python bench/bench_sync.py [--bundles 10] [--mib 50]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from common import API_KEY, PeakRss, Simulator, dev_server, mib, run, worker_process
from workflows.data_export_sync import DataExportSyncResult


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundles", type=int, default=10)
    parser.add_argument("--mib", type=int, default=50)
    args = parser.parse_args()
    size = args.mib << 20
    async with dev_server() as env:
        with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
            sim.legacy_burst, sim.legacy_per_minute = 10_000, 1_000_000  # lifted for the benchmark
            ids = sim.add_bundles(args.bundles, size=size, start=1_700_000_000, span=3600)
            for i in ids:
                sim.bundle_sha256(i)  # warm the generator outside the timings
            t0 = time.perf_counter()
            for i in ids:
                subprocess.run(
                    [
                        "curl",
                        "-sS",
                        "-o",
                        f"{tmp}/curl.gz",
                        "-H",
                        f"Authorization: Basic {API_KEY}",
                        f"{sim.base_url}/api/v1/export/get?id={i}",
                    ],
                    check=True,
                )
            curl_s = time.perf_counter() - t0
            with (
                worker_process(env, sim, Path(tmp), FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE="100000") as w,
                PeakRss(w.proc.pid) as rss,
            ):
                t0 = time.perf_counter()
                result = await (
                    await env.client.start_workflow(
                        "DataExportSyncWorkflow",
                        {"start": 1_600_000_000, "destination": f"{tmp}/bundles"},
                        id=f"bench-sync-{uuid.uuid4().hex[:8]}",
                        task_queue=w.task_queue,
                        result_type=DataExportSyncResult,
                    )
                ).result()
                ours_s = time.perf_counter() - t0
    total = args.bundles * size
    print(f"bundles                {result.bundles} x {args.mib} MiB (gzip NDJSON-like rows), rate limit lifted")
    print(f"curl in sequence       {curl_s:.2f} s  ({total / curl_s / 1e6:.0f} MB/s)")
    print(
        f"DataExportSyncWorkflow {ours_s:.2f} s  ({total / ours_s / 1e6:.0f} MB/s; gzip verified, sha256, "
        f"manifest, list calls, one activity per bundle)"
    )
    print(f"ratio ours/curl        {ours_s / curl_s:.2f}")
    print(f"worker peak RSS        {mib(rss.peak)}")


if __name__ == "__main__":
    run(main())
