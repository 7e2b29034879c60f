"""Kill-resume: what a worker SIGKILLed every few seconds costs a download (prints, asserts nothing).

    .venv/bin/python bench/bench_kill_resume.py [--before /tmp/before] [--size 64] [--rate 4] [--every 5]
    .venv/bin/python bench/bench_kill_resume.py --reread-only [--reread-sizes 64,1024]

1. Re-read: what a new attempt pays to rebuild the sha256 and the gzip check from a kept part
   (`download_sink.Sink` over a part of N MiB, page cache warm, as after a kill on the same machine).
2. Kill loop: one `--size` MiB segment export served at `--rate` MiB/s, two workers; the one holding
   the download is SIGKILLed `--every` s after each attempt starts and replaced, until it completes
   (at most MAX_KILLS kills, WALL_CAP s). Printed: bytes served / file size, wall time, and the
   failover time from each kill to the next attempt's first byte served. `--before DIR` runs the same
   loop against the workers of another checkout (e.g. `git worktree add --detach /tmp/before <commit>`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowExecutionStatus

from common import API_KEY, REPO, Simulator, dev_server, mib, run

MAX_KILLS, WALL_CAP = 30, 300.0
STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


# --- 1. re-read cost -----------------------------------------------------------------------------


def reread(sizes_mib: list[int]) -> None:
    from activities.download_sink import Sink
    from simulator.files import GzipFile

    print(f"{'part':>9} {'gzip check':>10} {'re-read s':>10} {'MiB/s':>8}")
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:  # the same disk as the data dir
        for size_mib in sizes_mib:
            size = size_mib << 20
            part = Path(tmp) / f"reread-{size_mib}.part"
            with part.open("wb") as fh:
                GzipFile(size).write(lambda b: fh.write(b), 0, size)
            for verify in (True, False):
                with part.open("rb") as fh:  # warm the page cache, as after a kill on the same machine
                    while fh.read(8 << 20):
                        pass
                t0 = time.perf_counter()
                sink = Sink(part, size, verify)
                seconds = time.perf_counter() - t0
                sink.close()
                sink.journal.remove()
                print(f"{size_mib:>5} MiB {'on' if verify else 'off':>10} {seconds:>10.2f} {size_mib / seconds:>8.0f}")
            part.unlink()


# --- 2. kill loop ----------------------------------------------------------------------------------


class Worker:
    """`python <code>/worker.py` of a checkout, stopped by its own pid."""

    def __init__(self, code: Path, env: dict[str, str], log: Path) -> None:
        self.code, self.env, self.log = code, env, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Worker:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.code / "worker.py")],
                cwd=self.code,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while "worker ready" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


async def kill_loop(env, code: Path, label: str, size: int, rate: int, every: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-kill-{label}-", dir="/tmp"))
    task_queue = f"bench-kill-{uuid.uuid4().hex[:8]}"
    wenv = {
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "FULLSTORY_API_KEY": API_KEY,
        "FULLSTORY_TASK_QUEUE": task_queue,
        "FULLSTORY_DATA_DIR": str(tmp / "data"),
        "LOG_LEVEL": "WARNING",
    }
    workers: list[Worker] = []
    with Simulator(api_key=API_KEY) as sim:
        wenv.update(FULLSTORY_BASE_URL=sim.base_url, FULLSTORY_EXPORT_BASE_URL=sim.base_url)
        op_id = sim.add_operation(duration=0, size=size)
        sim.file_sha256(op_id)
        sim.storage_bytes_per_second = rate
        sent: list[float] = []  # when each piece of the body went out
        download = sim.exports.download_for(op_id)
        count = download.count_bytes
        download.count_bytes = lambda n: (sent.append(time.time()), count(n))[1]

        def new_worker() -> Worker:
            w = Worker(code, wenv, tmp / f"worker-{len(workers)}.log")
            workers.append(w)
            return w

        try:
            await asyncio.gather(*(asyncio.to_thread(new_worker().start) for _ in range(2)))
            t0 = time.time()
            handle = await env.client.start_workflow(
                "SegmentExportWorkflow",
                {"operation_id": op_id},
                id=f"bench-kill-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
            )
            kills: list[float] = []
            last, rng, pending = 0, random.Random(5), []
            while len(kills) < MAX_KILLS and time.time() - t0 < WALL_CAP:
                desc = await handle.describe()
                if desc.status != WorkflowExecutionStatus.RUNNING:
                    break
                pa = next(
                    (
                        p
                        for p in desc.raw_description.pending_activities
                        if p.activity_type.name == "download_to_destination" and p.state == STARTED and p.attempt > last
                    ),
                    None,
                )
                if pa is None:
                    await asyncio.sleep(0.05)
                    continue
                started = pa.last_started_time.ToDatetime().timestamp()
                await asyncio.sleep(max(0.0, started + every + rng.uniform(-0.2, 0.2) - time.time()))
                pid = int(pa.last_worker_identity.split("@", 1)[0])
                holder = [w for w in workers if w.proc is not None and w.proc.pid == pid]
                if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING or not holder:
                    break
                holder[0].kill()
                kills.append(time.time())
                last = pa.attempt
                pending.append(asyncio.create_task(asyncio.to_thread(new_worker().start)))
            finished = (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
            if not finished:
                await handle.terminate("bench wall cap")
            wall = time.time() - t0
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for w in workers:
                w.stop()
        failovers = []
        for k in kills:
            after = [t for t in sent if t >= k + 0.3]  # the dead connection's last sends are done by then
            if after:
                failovers.append(min(after) - k)
        served = download.bytes_served
    return {
        "label": label,
        "finished": finished,
        "wall": wall,
        "served": served,
        "size": size,
        "kills": len(kills),
        "failovers": failovers,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="a checkout of the code before the change (its worker.py)")
    parser.add_argument("--size", type=int, default=64, help="MiB")
    parser.add_argument("--rate", type=float, default=4, help="MiB/s served")
    parser.add_argument("--every", type=float, default=5.0, help="s after an attempt starts that its worker dies")
    parser.add_argument("--reread-sizes", default="64,1024")
    parser.add_argument("--reread-only", action="store_true")
    parser.add_argument("--no-reread", action="store_true")
    args = parser.parse_args()
    if not args.no_reread:
        reread([int(s) for s in args.reread_sizes.split(",")])
    if args.reread_only:
        return
    rows = []
    async with dev_server() as env:
        for label, code in [("after", REPO)] + ([("before", args.before.resolve())] if args.before else []):
            rows.append(await kill_loop(env, code, label, args.size << 20, int(args.rate * (1 << 20)), args.every))
    print(f"\n{args.size} MiB at {args.rate:g} MiB/s, the holder SIGKILLed {args.every:g} s into each attempt:")
    print(
        f"{'code':>7} {'done':>5} {'kills':>5} {'served':>10} {'served/size':>11} {'wall s':>7} "
        f"{'failover s (kill -> next first byte): mean / max':>48}"
    )
    for r in rows:
        f = r["failovers"]
        fo = f"{sum(f) / len(f):.1f} / {max(f):.1f}  ({', '.join(f'{x:.0f}' for x in f)})" if f else "-"
        print(
            f"{r['label']:>7} {str(r['finished']):>5} {r['kills']:>5} {mib(r['served']):>10} "
            f"{r['served'] / r['size']:>11.2f} {r['wall']:>7.0f} {fo:>48}"
        )


if __name__ == "__main__":
    run(main())
