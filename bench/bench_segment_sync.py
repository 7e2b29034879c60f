"""Segment export sync: a backfill of N daily windows at max_in_flight 1, 2 and 4, vs N x one window's export.

.venv/bin/python bench/bench_segment_sync.py [--windows 30] [--mib 16] [--export-seconds 2] [--in-flight 1,2,4]

Each window's export takes `--export-seconds` at the simulator (Fullstory's processing) and then a
download of `--mib`; the figures: wall time against N x the single-window export time, bytes the
simulator served against bytes stored (no window fetched twice), and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import API_KEY, PeakRss, Simulator, dev_server, mib, run, worker_process
from workflows.segment_export import SegmentExportResult
from workflows.segment_sync_input import SegmentExportSyncResult


def served(sim: Simulator, ops: list[str]) -> int:
    return sum(sim.bytes_served(op) for op in ops)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--export-seconds", type=float, default=2.0)
    parser.add_argument("--in-flight", default="1,2,4")
    args = parser.parse_args()
    size = args.mib << 20
    start = datetime.fromtimestamp((int(time.time()) // 86400 - args.windows - 2) * 86400, tz=UTC)
    async with dev_server() as env:
        with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
            sim.export_defaults.update(duration=args.export_seconds, size=size)
            with worker_process(env, sim, Path(tmp)) as w, PeakRss(w.proc.pid) as rss:
                t0 = time.perf_counter()
                one = await (
                    await env.client.start_workflow(
                        "SegmentExportWorkflow",
                        {
                            "segment_id": "everyone",
                            "time_range": {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()},
                            "destination": f"{tmp}/single",
                            "max_poll_interval": 1,
                        },
                        id=f"bench-one-{uuid.uuid4().hex[:8]}",
                        task_queue=w.task_queue,
                        result_type=SegmentExportResult,
                    )
                ).result()
                single_s = time.perf_counter() - t0
            print(
                f"windows                {args.windows} daily x {args.mib} MiB, export takes {args.export_seconds:g} s"
            )
            print(
                f"one window's export    {single_s:.2f} s (create, wait, download {mib(one.bytes)}); "
                f"peak RSS {mib(rss.peak)}"
            )
            print(f"N x one window         {args.windows * single_s:.1f} s")
            for n in (int(x) for x in args.in_flight.split(",")):
                before = len(sim.exports.created)
                with worker_process(env, sim, Path(tmp)) as w, PeakRss(w.proc.pid) as rss:
                    t0 = time.perf_counter()
                    result = await (
                        await env.client.start_workflow(
                            "SegmentExportSyncWorkflow",
                            {
                                "segment_id": "everyone",
                                "window": "P1D",
                                "start": start.isoformat(),
                                "stop": (start + timedelta(days=args.windows)).isoformat(),
                                "delay": "PT1H",
                                "max_in_flight": n,
                                "destination": f"{tmp}/sync-{n}",
                            },
                            id=f"bench-sync-{uuid.uuid4().hex[:8]}",
                            task_queue=w.task_queue,
                            result_type=SegmentExportSyncResult,
                        )
                    ).result()
                    wall = time.perf_counter() - t0
                ops = [op for op, _, _ in sim.exports.created[before:]]
                print(
                    f"max_in_flight {n}        {wall:6.1f} s = {wall / (args.windows * single_s):.2f} x (N x one); "
                    f"served {mib(served(sim, ops))} / stored {mib(result.bytes)} "
                    f"({len(ops)} exports for {result.windows} windows); worker peak RSS {mib(rss.peak)}, "
                    f"CPU {rss.cpu_seconds:.1f} s"
                )


if __name__ == "__main__":
    run(main())
