"""Record workflow histories for the replay tests (run by hand, output checked in).

    .venv/bin/python tests/record_histories.py

Re-record only when a workflow change is meant to be incompatible (and then
version it with workflow.patched): the point of the checked-in files is that
histories of running workflows written by older code still replay.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from helpers import API_KEY, VENV_BIN, TemporalClock, running_worker  # noqa: E402
from infra.data_converter import DATA_CONVERTER  # noqa: E402
from simulator import Simulator  # noqa: E402

OUT = Path(__file__).resolve().parent / "histories"
# Two windows a run (continue-as-new); with SEGMENT_SYNC_FAILING_WINDOW failing, the sync stops there.
SEGMENT_SYNC = (
    "SegmentExportSyncWorkflow",
    {
        "segment_id": "everyone",
        "window": "PT1H",
        "start": "2026-11-01T00:00:00Z",
        "stop": "2026-11-01T04:00:00Z",
        "delay": "PT1H",
        "windows_per_run": 2,
        "window_attempts": 2,
    },
)
SEGMENT_SYNC_FAILING_WINDOW = "2026-11-01T01:00:00Z"


async def record(
    env: WorkflowEnvironment, sim: Simulator, name: str, workflow: str, inp: dict, data: Path, workflow_id: str = ""
) -> None:
    """`workflow_id`: give the file's name to workflows whose commands depend on their id (child ids):
    the replay test replays each history under its file's name."""
    async with running_worker(env.client, sim.base_url, data) as tq:
        handle = await env.client.start_workflow(workflow, inp, id=workflow_id or f"replay-{name}", task_queue=tq)
        try:
            await handle.result()
        except Exception as e:  # failures are histories worth replaying too
            print(f"{name}: ended with {type(e).__name__}: {getattr(e, 'cause', e)}")
        history = await handle.fetch_history()
    (OUT / f"{name}.json").write_text(history.to_json())
    print(f"{name}: {len(history.events)} events")


async def main() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(VENV_BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    )
    OUT.mkdir(exist_ok=True)
    try:
        with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            sim.clock = await TemporalClock.start(env)
            job = sim.add_batch_job(kind="events", duration=300, imports=10, errors=7, page_size=3)
            await record(
                env,
                sim,
                "batch_import_watch_failed",
                "BatchImportWorkflow",
                {"kind": "events", "job_id": job, "collect_imports": True},
                data,
            )
            sim.batch_defaults.update(duration=60, errors=0)
            await record(
                env,
                sim,
                "batch_import_create_completed",
                "BatchImportWorkflow",
                {"kind": "users", "requests": [{"uid": f"u{i}"} for i in range(5)]},
                data,
            )
            await record(
                env, sim, "batch_import_not_found", "BatchImportWorkflow", {"kind": "users", "job_id": "missing="}, data
            )
            op = sim.add_operation(duration=0, size=4096)
            await record(env, sim, "operation_completed", "OperationWorkflow", {"operation_id": op}, data)
            sim.export_defaults.update(duration=0, size=8192)
            await record(
                env,
                sim,
                "segment_export_create",
                "SegmentExportWorkflow",
                {
                    "segment_id": "everyone",
                    "time_range": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
                    "destination": str(data / "exports"),
                },
                data,
            )
            failed = sim.add_operation(duration=0, final_state="FAILED", error_details="too big")
            await record(env, sim, "segment_export_failed", "SegmentExportWorkflow", {"operation_id": failed}, data)
            sim.add_bundles(5, size=2048, start=1_700_000_000, span=600)
            await record(
                env,
                sim,
                "data_export_sync_continue_as_new",
                "DataExportSyncWorkflow",
                {"start": 1_700_000_000, "bundles_per_run": 3, "destination": str(data / "bundles")},
                data,
            )
            sim.export_defaults.update(duration=60, size=8192)
            for name in ("segment_export_sync_continue_as_new", "segment_export_sync_window_failed"):
                sim.fail_windows = [SEGMENT_SYNC_FAILING_WINDOW] if name.endswith("failed") else []
                await record(env, sim, name, *SEGMENT_SYNC, data, workflow_id=name)
            await record_bulk_import(env, sim, data)
            await record_download_tokens(env, sim, data)
    finally:
        await env.shutdown()


async def record_bulk_import(env: WorkflowEnvironment, sim: Simulator, data: Path) -> None:
    """A bulk import of 7 users in 3 batches (children hold batch slots), and the slots workflow it used."""
    from vocabulary.slot_messages import key_fingerprint, slots_workflow_id

    source = data / "bulk-users.ndjson"
    source.write_text("".join(f'{{"uid": "u{i}"}}\n' for i in range(7)))
    sim.batch_defaults.clear()
    sim.batch_defaults.update(duration=60, errors=1)
    name = "bulk_import_completed"
    async with running_worker(env.client, sim.base_url, data) as tq:
        handle = await env.client.start_workflow(
            "BulkImportWorkflow",
            {"kind": "users", "source": str(source), "batch_size": 3, "max_in_flight": 2},
            id=name,
            task_queue=tq,
        )
        await handle.result()
        histories = {name: await handle.fetch_history()}
        child = env.client.get_workflow_handle(f"{name}-batch-00000")
        histories["batch_import_with_slot"] = await child.fetch_history()
        slots = env.client.get_workflow_handle(slots_workflow_id(tq, key_fingerprint(f"Basic {API_KEY}")))
        histories["batch_slots_idle_end"] = await slots.fetch_history()
    for file, history in histories.items():
        (OUT / f"{file}.json").write_text(history.to_json())
        print(f"{file}: {len(history.events)} events")


async def record_download_tokens(env: WorkflowEnvironment, sim: Simulator, data: Path) -> None:
    """A legacy sync of 3 bundles, each download taking a token, and the token bucket until its idle end."""
    from datetime import timedelta

    from temporalio.client import WorkflowExecutionStatus

    from vocabulary.slot_messages import key_fingerprint
    from vocabulary.token_messages import tokens_workflow_id

    sim.add_bundles(3, size=2048, start=1_700_000_000, span=600)
    name = "data_export_sync_download_tokens"
    async with running_worker(env.client, sim.base_url, data, fullstory_export_downloads_per_minute=2) as tq:
        handle = await env.client.start_workflow(
            "DataExportSyncWorkflow",
            {"start": 1_700_000_000, "destination": str(data / "bundles-tokens")},
            id=name,
            task_queue=tq,
        )
        await handle.result()
        histories = {name: await handle.fetch_history()}
        tokens = env.client.get_workflow_handle(tokens_workflow_id(tq, key_fingerprint(f"Basic {API_KEY}")))
        await env.sleep(timedelta(minutes=3))  # idle and full for IDLE_LINGER: it ends by itself
        assert (await tokens.describe()).status == WorkflowExecutionStatus.COMPLETED
        histories["download_tokens_idle_end"] = await tokens.fetch_history()
    for file, history in histories.items():
        (OUT / f"{file}.json").write_text(history.to_json())
        print(f"{file}: {len(history.events)} events")


if __name__ == "__main__":
    if sys.argv[1:] == ["tokens"]:  # only the download limit's histories (the others stay as recorded)

        async def tokens_only() -> None:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=str(VENV_BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
            )
            try:
                with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
                    sim.clock = await TemporalClock.start(env)
                    await record_download_tokens(env, sim, Path(tmp))
            finally:
                await env.shutdown()

        asyncio.run(tokens_only())
    elif sys.argv[1:] == ["bulk"]:  # only the bulk import's histories (the others stay as recorded)

        async def bulk_only() -> None:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=str(VENV_BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
            )
            try:
                with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
                    sim.clock = await TemporalClock.start(env)
                    await record_bulk_import(env, sim, Path(tmp))
            finally:
                await env.shutdown()

        asyncio.run(bulk_only())
    else:
        asyncio.run(main())
