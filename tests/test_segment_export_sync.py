"""SegmentExportSyncWorkflow: windows, cursor, manifest, follow, pause/resume, a failing window.

Time-skipping server for the follow sync (3 simulated days) and the failing window; the dev server
(real time, in-process worker) for pause/resume through the CLI. The simulator's export files depend
on the requested timeRange (their first row names it), so a wrong or overlapping window shows.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

import cli
from helpers import TemporalClock, running_worker, server_time, wait_until
from simulator import Simulator
from workflows.segment_sync_input import SegmentExportSyncInput, SegmentExportSyncResult, segment_sync_workflow_id
from workflows.segment_windows import window_filename

HOUR = 3600


def aligned(ts: float, step: int = HOUR) -> datetime:
    return datetime.fromtimestamp((int(ts) // step + 1) * step, tz=UTC)


def manifest_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_files(sim: Simulator, folder: Path, start: datetime, n: int, window: timedelta) -> list[dict]:
    """Every window's file once, its first row naming exactly its window, the manifest listing exactly them."""
    lines = manifest_lines(folder / "manifest.ndjson")
    assert [line["window_start"] for line in lines] == [
        (start + i * window).isoformat().replace("+00:00", "Z") for i in range(n)
    ]
    names = sorted(p.name for p in folder.iterdir() if p.name != "manifest.ndjson")
    assert names == [window_filename(start + i * window, start + (i + 1) * window, "FORMAT_NDJSON") for i in range(n)]
    for line in lines:
        data = (folder / line["file"]).read_bytes()
        assert len(data) == line["bytes"] and hashlib.sha256(data).hexdigest() == line["sha256"]
        assert line["sha256"] == sim.file_sha256(line["operation_id"])
        head = json.loads(gzip.decompress(data).split(b"\n", 1)[0])
        assert head["ExportTimeRange"] == {"start": line["window_start"], "end": line["window_end"]}
    return lines


def creates_by_window(sim: Simulator) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for _, time_range, at in sim.exports.created:
        out.setdefault(time_range["start"], []).append(at)
    return out


def test_input_rules():
    ok = {"segment_id": "everyone", "start": "2026-11-01T00:00:00Z", "window": "PT1H"}
    assert SegmentExportSyncInput.model_validate(ok).delay == timedelta(hours=24)
    for bad in (
        {"window": "PT30M"},
        {"window": "P2D"},
        {"start": "2026-11-01T00:30:00Z"},
        {"start": "2026-11-01T00:00:00"},
        {"stop": "2026-11-01T00:00:00Z"},
        {"delay": "P8D"},
        {"max_in_flight": 0},
        {"nonsense": 1},
    ):
        with pytest.raises(ValueError):
            SegmentExportSyncInput.model_validate({**ok, **bad})
    a = SegmentExportSyncInput.model_validate(ok)
    assert segment_sync_workflow_id(a) == segment_sync_workflow_id(SegmentExportSyncInput.model_validate(ok))
    assert segment_sync_workflow_id(a) != segment_sync_workflow_id(a.model_copy(update={"destination": "/x"}))


@pytest.mark.e2e  # ~25 s: 72 child workflows
async def test_follow_hourly_windows_for_three_days(ts_env, sim, tmp_path):
    sim.clock = await TemporalClock.start(ts_env)
    sim.export_defaults.update(duration=0, size=32 << 10)
    start = aligned(await server_time(ts_env))
    stop = start + timedelta(days=3)
    dest = tmp_path / "out"
    args = {
        "segment_id": "everyone",
        "window": "PT1H",
        "start": start.isoformat(),
        "stop": stop.isoformat(),
        "follow": True,
        "delay": "PT3H",
        "max_in_flight": 3,
        "windows_per_run": 24,
        "destination": str(dest),
    }
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        wid = f"sync-{uuid.uuid4().hex[:8]}"
        handle = await ts_env.client.start_workflow(
            "SegmentExportSyncWorkflow", args, id=wid, task_queue=tq, result_type=SegmentExportSyncResult
        )
        result = await handle.result()
        lengths, run_id = [], handle.result_run_id
        while run_id and len(lengths) < 50:  # the chain of runs, by continue-as-new
            events = (await ts_env.client.get_workflow_handle(wid, run_id=run_id).fetch_history()).events
            lengths.append(len(events))
            last = events[-1]
            run_id = (
                last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                if last.HasField("workflow_execution_continued_as_new_event_attributes")
                else None
            )
    assert result.cursor == stop and result.windows == 72
    assert len(lengths) >= 3 and max(lengths) < 600, lengths  # continue-as-new keeps each run's history bounded
    creates = creates_by_window(sim)
    assert len(creates) == 72 and all(len(v) == 1 for v in creates.values())  # each window exported once
    for w_start, (at,) in creates.items():  # never before its end + delay
        assert at >= datetime.fromisoformat(w_start).timestamp() + HOUR + 3 * HOUR
    check_files(sim, dest / "everyone" / "TYPE_EVENT", start, 72, timedelta(hours=1))


async def test_a_window_that_keeps_failing_stops_the_sync_at_it(ts_env, sim, tmp_path):
    sim.clock = await TemporalClock.start(ts_env)
    sim.export_defaults.update(duration=60, size=32 << 10)
    now = await server_time(ts_env)
    start = aligned(now - 20 * HOUR)
    bad = start + timedelta(hours=2)
    sim.fail_windows = [bad.isoformat()]
    dest = tmp_path / "out"
    args = {
        "segment_id": "everyone",
        "window": "PT1H",
        "start": start.isoformat(),
        "stop": (start + timedelta(hours=5)).isoformat(),
        "delay": "PT1H",
        "max_in_flight": 1,
        "window_attempts": 2,
        "destination": str(dest),
    }
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "SegmentExportSyncWorkflow", args, id=f"sync-{uuid.uuid4().hex[:8]}", task_queue=tq
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        progress = await handle.query("progress")
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "SegmentExportWindowFailed"
    bad_iso = bad.isoformat().replace("+00:00", "Z")
    assert bad_iso in cause.message and "failed 2 time(s)" in cause.message
    assert cause.details[0] == {"window_start": bad_iso, "cursor": bad_iso}  # the cursor stays before it
    assert progress["cursor_iso"] == bad_iso and progress["phase"] == "failed"
    creates = creates_by_window(sim)
    assert len(creates[bad_iso]) == 2  # retried a bounded number of times
    assert len(creates) == 3  # nothing after it started: no gap is ever skipped
    check_files(sim, dest / "everyone" / "TYPE_EVENT", start, 2, timedelta(hours=1))


def run_cli(*argv: str) -> int:
    return cli.main(list(argv))


@pytest.mark.e2e  # real time on the dev server: ~15 s
async def test_pause_mid_backfill_then_resume_from_the_cursor(dev_env, sim, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    sim.export_defaults.update(duration=2, size=32 << 10)  # real seconds
    start = aligned(datetime.now(UTC).timestamp() - 8 * 86400, 86400)
    args = {
        "segment_id": "everyone",
        "window": "P1D",
        "start": start.isoformat(),
        "stop": (start + timedelta(days=6)).isoformat(),
        "delay": "PT1H",
        "max_in_flight": 2,
        "destination": str(tmp_path / "out"),
    }
    async with running_worker(dev_env.client, sim.base_url, tmp_path) as tq:
        wid = f"sync-{uuid.uuid4().hex[:8]}"
        handle = await dev_env.client.start_workflow(
            "SegmentExportSyncWorkflow", args, id=wid, task_queue=tq, result_type=SegmentExportSyncResult
        )
        await wait_until(lambda: len(sim.exports.created) >= 2, 30, "two windows in flight")
        assert await asyncio.to_thread(run_cli, "pause", wid) == 0
        paused = json.loads(capsys.readouterr().out)
        assert paused["paused"] is True

        async def drained() -> dict:
            for _ in range(300):
                p = await handle.query("progress")
                if p["phase"] == "paused" and not p["windows_in_flight"]:
                    return p
                await asyncio.sleep(0.1)
            raise AssertionError("windows in flight did not finish while paused")

        progress = await drained()
        created = len(sim.exports.created)
        assert created == 2 and progress["windows_done"] == 2  # the two in flight finished; no new one
        await asyncio.sleep(3)
        assert len(sim.exports.created) == created  # no new export while paused
        assert "starting no new one" in progress["detail"]
        assert await asyncio.to_thread(run_cli, "resume", wid) == 0
        assert json.loads(capsys.readouterr().out)["paused"] is False
        result = await asyncio.wait_for(handle.result(), 120)
    assert result.windows == 6 and result.cursor == start + timedelta(days=6)
    creates = creates_by_window(sim)
    assert len(creates) == 6 and all(len(v) == 1 for v in creates.values())
    check_files(sim, tmp_path / "out" / "everyone" / "TYPE_EVENT", start, 6, timedelta(days=1))
