"""DataExportSyncWorkflow on the time-skipping server: rate limited, continue-as-new, follow, bad input."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from helpers import TemporalClock, running_worker, server_time
from workflows.data_export_sync import DataExportSyncResult

GET_ROUTE = "/api/v1/export/get"


@pytest_asyncio.fixture(autouse=True)
async def _simulator_on_server_time(ts_env, sim):
    """Jobs, operations and rate limits in the simulator run on the time-skipping server's clock."""
    sim.clock = await TemporalClock.start(ts_env)


async def run_chain(client, wf_id: str, first_run_id: str) -> list[int]:
    """History length of each run of a continue-as-new chain."""
    sizes, run_id = [], first_run_id
    while run_id:
        history = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        sizes.append(len(history.events))
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else None
        )
    return sizes


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.json.gz"))


@pytest.mark.e2e  # ~5 s: 30 simulated minutes of rate-limited downloads; `make test-fast` skips it
async def test_sixty_bundles_at_two_a_minute_continue_as_new_and_end_at_the_last_stop(ts_env, sim, tmp_path):
    """The download-token bucket paces at 2/minute on workflow timers (skipped here), so Fullstory never says 429."""
    sim.legacy_burst, sim.legacy_per_minute = 2, 2
    ids = sim.add_bundles(60, size=4096, start=1_700_000_000, span=3600)
    dest = tmp_path / "bundles"
    wf_id = f"sync-{uuid.uuid4().hex}"
    async with running_worker(ts_env.client, sim.base_url, tmp_path, fullstory_export_downloads_per_minute=2) as tq:
        handle = await ts_env.client.start_workflow(
            "DataExportSyncWorkflow",
            {"start": 1_699_000_000, "destination": str(dest), "bundles_per_run": 25},
            id=wf_id,
            task_queue=tq,
            result_type=DataExportSyncResult,
        )
        t0 = await server_time(ts_env)
        result = await handle.result()
    assert result.cursor == 1_700_000_000 + 60 * 3600 and result.bundles == 60
    assert result.bytes == 60 * 4096
    files = stored_files(dest)
    assert len(files) == 60
    for i, bundle_id in enumerate(ids):
        name = f"{1_700_000_000 + i * 3600}-{1_700_000_000 + (i + 1) * 3600}-{bundle_id}.json.gz"
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == sim.bundle_sha256(bundle_id)
    assert sim.count(route=GET_ROUTE) == 60 and sim.legacy_429s == 0  # each bundle downloaded once, never refused
    assert await server_time(ts_env) - t0 >= 29.5 * 60  # 60 downloads at 2/minute, one at a time (burst 1)
    sizes = await run_chain(ts_env.client, wf_id, handle.first_execution_run_id)
    # 13 events a bundle (the token request's marker, its grant, the download, their workflow tasks), 25 a run.
    assert len(sizes) >= 3 and max(sizes) < 25 * 14 + 30, sizes


async def test_stop_finishes_at_the_cursor(ts_env, sim, tmp_path):
    sim.add_bundles(10, size=1024, start=1_700_000_000, span=600)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        result = await (
            await ts_env.client.start_workflow(
                "DataExportSyncWorkflow",
                {"start": 1_700_000_000, "stop": 1_700_000_000 + 4 * 600, "destination": str(tmp_path / "d")},
                id=f"s-{uuid.uuid4().hex}",
                task_queue=tq,
                result_type=DataExportSyncResult,
            )
        ).result()
    assert (result.cursor, result.bundles) == (1_700_000_000 + 4 * 600, 4)
    assert len(stored_files(tmp_path / "d")) == 4


async def test_follow_picks_up_a_bundle_that_appears_later(ts_env, sim, tmp_path):
    now = int(await server_time(ts_env))
    sim.add_bundles(2, size=1024, start=now - 7200, span=3600)
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "DataExportSyncWorkflow",
            {"start": now - 7200, "follow": True, "poll_interval": "PT1H", "destination": str(tmp_path / "f")},
            id=f"f-{uuid.uuid4().hex}",
            task_queue=tq,
        )
        result = asyncio.create_task(handle.result())  # time skips only while a result is awaited
        while len(stored_files(tmp_path / "f")) < 2:
            await asyncio.sleep(0.05)
        late = sim.add_bundles(1, size=2048, start=now, span=3600, available_at=now + 1800)
        while len(stored_files(tmp_path / "f")) < 3:
            await asyncio.sleep(0.05)
        progress = await handle.query("progress")
        # The latest run (it may have continued as new), not the first one.
        await ts_env.client.get_workflow_handle(handle.id).terminate("test done")
        with pytest.raises(WorkflowFailureError):
            await result
    assert any(late[0] in p.name for p in stored_files(tmp_path / "f"))
    assert progress["cursor"] >= now


async def test_already_stored_bundle_is_skipped_not_downloaded_again(ts_env, sim, tmp_path):
    ids = sim.add_bundles(3, size=1024, start=1_700_000_000, span=600)
    dest = tmp_path / "again"
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        for _ in range(2):
            result = await (
                await ts_env.client.start_workflow(
                    "DataExportSyncWorkflow",
                    {"start": 1_700_000_000, "destination": str(dest)},
                    id=f"a-{uuid.uuid4().hex}",
                    task_queue=tq,
                    result_type=DataExportSyncResult,
                )
            ).result()
            assert result.bundles == 3
    assert sim.count(route=GET_ROUTE) == 3
    manifest = json.loads((dest / "manifest.json").read_text())
    assert set(manifest) == set(ids)


@pytest.mark.parametrize(
    "bad,hint",
    [
        ({"start": -1}, "start"),
        ({"start": 1_700_000_000, "stop": 1_600_000_000}, "stop must be after start"),
        ({"start": 1_700_000_000, "follow": True, "stop": 1_800_000_000}, "follow"),
        ({"start": 1_700_000_000, "poll_interval": 0}, "poll_interval"),
    ],
)
async def test_bad_input_fails_before_any_download(ts_env, sim, tmp_path, bad, hint):
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "DataExportSyncWorkflow", bad, id=f"b-{uuid.uuid4().hex}", task_queue=tq
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    err = info.value.cause
    assert isinstance(err, ApplicationError) and err.type == "InvalidInput" and hint in err.message
    assert sim.requests == []


async def test_unwritable_destination_fails_before_any_download(ts_env, sim, tmp_path):
    sim.add_bundles(2, size=1024)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    async with running_worker(ts_env.client, sim.base_url, tmp_path) as tq:
        handle = await ts_env.client.start_workflow(
            "DataExportSyncWorkflow",
            {"start": 0, "destination": str(blocker / "sub")},
            id=f"u-{uuid.uuid4().hex}",
            task_queue=tq,
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    err = info.value.cause
    assert err.type == "DestinationNotWritable"
    assert sim.count(route=GET_ROUTE) == 0
