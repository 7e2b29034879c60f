"""End to end, slow: a 12-window backfill loaded through a SIGKILL mid-load and a dev-server restart, into
DuckDB, and into Parquet on `s3://` (the moto server) read back with DuckDB.

Real worker processes (`python worker.py`), our own `temporal server start-dev` with a SQLite file, the
simulator over a socket, a real DuckDB file or real Parquet objects. After the run: each window's rows equal
the lines of its file, no event is there twice (by its id), and the destination's own `_fullstory_loads`
lists exactly the 12 windows, each with its file's sha256.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from temporalio.api.enums.v1 import PendingActivityState

from helpers import API_KEY, DevServer, WorkerProcess, wait_until, worker_env
from vocabulary.texts import stamp
from workflows.segment_sync_input import SegmentExportSyncResult

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WINDOWS = 12
ROWS = 20_000  # per window: a load takes about a second, long enough to be killed in
STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


async def a_load_is_running(client, sync_id: str, start: datetime) -> bool:
    for i in range(WINDOWS):
        handle = client.get_workflow_handle(f"{sync_id}-{stamp(start + timedelta(hours=i))}")
        try:
            pending = (await handle.describe()).raw_description.pending_activities
        except Exception:
            continue
        if any(pa.activity_type.name == "load_file" and pa.state == STARTED for pa in pending):
            return True
    return False


def read_back(target: str, data: Path, s3) -> tuple[dict[str, int], tuple[int, int], list[tuple[str, str, int]]]:
    """(rows per window, (rows, distinct event ids), the loads records) as the destination holds them."""
    if target == "duckdb":
        db = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
        events, loads = "fullstory.events", "fullstory._fullstory_loads"
    else:
        fs, bucket = s3
        db = duckdb.connect()
        db.register_filesystem(fs)
        lake = f"s3://{bucket}/lake/fullstory"
        events = f"read_parquet('{lake}/events/*/*.parquet', hive_partitioning = true)"
        loads = f"read_parquet('{lake}/_fullstory_loads/*/*.parquet')"
    with db:
        per_window = dict(db.execute(f"select _fullstory_window, count(*) from {events} group by 1").fetchall())
        totals = db.execute(f"select count(*), count(distinct event_id) from {events}").fetchone()
        records = db.execute(f"select window_id, sha256, rows from {loads} order by 1").fetchall()
    return per_window, totals, records


@pytest.mark.parametrize("target", ["duckdb", "parquet-s3"])
async def test_backfill_through_a_sigkill_mid_load_and_a_server_restart(sim, tmp_path, s3_bucket, target):
    fs, bucket = s3_bucket
    load = {"destination": "duckdb"}
    if target == "parquet-s3":
        load = {"destination": "parquet", "location": f"s3://{bucket}/lake"}
    server = DevServer(tmp_path / "temporal.db", tmp_path / "temporal.log")
    server.start()
    workers: list[WorkerProcess] = []
    try:
        client = await server.ready()
        tq = f"load-{os.urandom(5).hex()}"
        data = tmp_path / "data"  # worker_env's FULLSTORY_DATA_DIR

        def worker() -> WorkerProcess:
            allowed = f"{tmp_path},s3://{bucket}"
            env = worker_env(server.address, sim.base_url, tmp_path, tq, FULLSTORY_ALLOWED_LOCATIONS=allowed)
            w = WorkerProcess(tmp_path / f"worker-{len(workers)}.log", env)
            workers.append(w)
            return w

        first = worker()
        await asyncio.to_thread(first.start)
        sim.export_defaults.update(duration=1, table_rows=ROWS)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = now - timedelta(hours=WINDOWS + 2)
        sync_id = f"load-sync-{os.urandom(4).hex()}"
        await client.start_workflow(
            "SegmentExportSyncWorkflow",
            {
                "segment_id": "everyone",
                "window": "PT1H",
                "start": start.isoformat(),
                "stop": (start + timedelta(hours=WINDOWS)).isoformat(),
                "delay": "PT0S",
                "max_in_flight": 3,
                "load": load,
            },
            id=sync_id,
            task_queue=tq,
            result_type=SegmentExportSyncResult,
        )
        # 1. SIGKILL the worker while a window's rows are going into DuckDB; a second worker takes over.
        deadline = time.monotonic() + 60
        while not await a_load_is_running(client, sync_id, start):
            assert time.monotonic() < deadline, "no load started within 60 s"
            await asyncio.sleep(0.05)
        first.kill()
        await asyncio.to_thread(worker().start)

        # 2. Halfway, the dev server restarts (SIGTERM, down 3 s, the same SQLite file); the worker rides it out.
        manifest = data / "everyone" / "TYPE_EVENT" / "manifest.ndjson"
        await wait_until(
            lambda: manifest.exists() and len(manifest.read_text().splitlines()) >= WINDOWS // 2,
            timeout=120,
            what="half the windows loaded",
        )
        server.stop()
        await asyncio.sleep(3)
        server.start()
        client = await server.ready()
        result = await asyncio.wait_for(client.get_workflow_handle(sync_id).result(), 240)
        result = SegmentExportSyncResult.model_validate(result) if isinstance(result, dict) else result
    finally:
        for w in workers:
            w.stop()
        server.stop()

    assert result.windows == WINDOWS and result.rows_loaded == WINDOWS * ROWS
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert len(lines) == WINDOWS
    per_window, (total, distinct), loads = read_back(target, data, s3_bucket)
    assert total == distinct == WINDOWS * ROWS  # no event twice
    assert len(per_window) == WINDOWS and len(loads) == WINDOWS
    by_sha = {sha: (window, rows) for window, sha, rows in loads}
    for line in lines:  # each window: its file's lines, loaded from exactly that file
        path = data / "everyone" / "TYPE_EVENT" / line["file"]
        file_lines = len(gzip.decompress(path.read_bytes()).splitlines())
        window, rows = by_sha[line["sha256"]]
        assert rows == per_window[window] == file_lines == line["rows"] == ROWS
    assert all(API_KEY not in w.log() for w in workers)
    print(f"\n{target}: {total} rows in {WINDOWS} windows through a SIGKILL mid-load and a server restart")
