"""Segment-export download vs curl on the same loopback URL, and the worker's peak RSS.

    .venv/bin/python bench/bench_download.py [--sizes 64,512]   # MiB, compressed

For each size: `curl -o` of a fresh signed URL; then SegmentExportWorkflow
(adopting a finished operation) on a worker subprocess, with the gzip check
(default) and without it (length + sha256 only). The download time is the
download activity's scheduled->completed span from workflow history. The
file is gzip of NDJSON event rows (~7-8:1), like a real export, so the gzip
check costs what it would in production. Also: the gzip checker alone on
the downloaded file, to show the check is overlapped with the download.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from common import API_KEY, PeakRss, Simulator, dev_server, mib, run, worker_process
from workflows.segment_export import SegmentExportResult


def activity_seconds(history, name: str) -> float:
    scheduled = completed = None
    for e in history.events:
        if (
            e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name == name
        ):
            scheduled = e.event_time.ToDatetime()
        if e.HasField("activity_task_completed_event_attributes") and scheduled is not None:
            completed = e.event_time.ToDatetime()
    return (completed - scheduled).total_seconds()


def curl_seconds(sim: Simulator, export_id: str, out: Path) -> float:
    location = httpx.get(
        f"{sim.base_url}/search/v1/exports/{export_id}/results", headers={"Authorization": f"Basic {API_KEY}"}
    ).json()["location"]
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", str(out), location], check=True)
    return time.perf_counter() - t0


def checker_alone_seconds(path: Path) -> tuple[float, str]:
    from activities.gzip_check import GzipChecker  # the same checker the activity runs

    checker = GzipChecker()
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            checker.feed(chunk)
    checker.finish()
    return time.perf_counter() - t0, checker.library


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,512", help="MiB, comma separated")
    args = parser.parse_args()
    rows = []
    async with dev_server() as env:
        with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            with worker_process(env, sim, data) as w:
                for size_mib in (int(s) for s in args.sizes.split(",")):
                    size = size_mib << 20
                    for verify in (True, False):
                        op_id = sim.add_operation(duration=0, size=size)
                        sim.file_sha256(op_id)  # warm the simulator's generator outside the timing
                        curl_s = curl_seconds(sim, sim.export_id(op_id), data / "curl.out")
                        with PeakRss(w.proc.pid) as rss:
                            handle = await env.client.start_workflow(
                                "SegmentExportWorkflow",
                                {"operation_id": op_id, "verify_gzip": verify, "destination": str(data / "out")},
                                id=f"bench-{uuid.uuid4().hex[:8]}",
                                task_queue=w.task_queue,
                                result_type=SegmentExportResult,
                            )
                            result = await handle.result()
                        ours = activity_seconds(await handle.fetch_history(), "download_to_destination")
                        check_s, lib = checker_alone_seconds(Path(result.location)) if verify else (None, None)
                        rows.append((size_mib, verify, curl_s, ours, check_s, lib, rss.peak))
                        Path(result.location).unlink()
                        (data / "curl.out").unlink()
    print(
        f"{'size':>8} {'gzip check':>10} {'curl s':>8} {'ours s':>8} {'ours/curl':>9} {'checker alone s':>16} "
        f"{'ours/max(curl,checker)':>22} {'worker peak RSS':>16}"
    )
    for size_mib, verify, curl_s, ours, check_s, lib, peak in rows:
        slower = max(curl_s, check_s) if check_s else curl_s
        print(
            f"{size_mib:>5} MiB {('on (' + lib + ')') if verify else 'off':>10} {curl_s:>8.2f} {ours:>8.2f} "
            f"{ours / curl_s:>9.2f} {(f'{check_s:.2f}' if check_s else '-'):>16} {ours / slower:>22.2f} "
            f"{mib(peak):>16}"
        )
    print("(ours = the download activity's scheduled->completed time, including the results call and the rename)")


if __name__ == "__main__":
    run(main())
