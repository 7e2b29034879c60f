"""Record workflow histories for the replay tests (run by hand, output checked in).

    .venv/bin/python tests/record_histories.py                  # only the histories with no file yet
    .venv/bin/python tests/record_histories.py --only NAME ...  # only these (new ones: no file yet)
    .venv/bin/python tests/record_histories.py --list           # every name, and whether it is recorded

A recorded file is never written again unless `--overwrite` is given: the point of the checked-in files
is that histories of running workflows written by older code still replay, so re-record only when a
workflow change is meant to be incompatible (and then version it with workflow.patched). A new patch
gets a new history that takes its new path (a recorder below, with the patch id it must show), so
replay proves both the old runs and the new ones.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.client import WorkflowHistory  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from helpers import API_KEY, VENV_BIN, TemporalClock, patch_ids, running_worker  # noqa: E402
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

Histories = dict[str, WorkflowHistory]  # by file name (without .json)


async def record(
    env: WorkflowEnvironment, sim: Simulator, name: str, workflow: str, inp: dict, data: Path, workflow_id: str = ""
) -> WorkflowHistory:
    """`workflow_id`: give the file's name to workflows whose commands depend on their id (child ids):
    the replay test replays each history under its file's name."""
    async with running_worker(env.client, sim.base_url, data) as tq:
        handle = await env.client.start_workflow(workflow, inp, id=workflow_id or f"replay-{name}", task_queue=tq)
        try:
            await handle.result()
        except Exception as e:  # failures are histories worth replaying too
            print(f"{name}: ended with {type(e).__name__}: {getattr(e, 'cause', e)}")
        return await handle.fetch_history()


async def record_single_workflows(env: WorkflowEnvironment, sim: Simulator, data: Path) -> Histories:
    """One run of each workflow, one after another on the same simulator (each sets what the next finds)."""
    histories: Histories = {}

    async def rec(name: str, workflow: str, inp: dict, workflow_id: str = "") -> None:
        histories[name] = await record(env, sim, name, workflow, inp, data, workflow_id)

    job = sim.add_batch_job(kind="events", duration=300, imports=10, errors=7, page_size=3)
    await rec(
        "batch_import_watch_failed", "BatchImportWorkflow", {"kind": "events", "job_id": job, "collect_imports": True}
    )
    sim.batch_defaults.update(duration=60, errors=0)
    await rec(
        "batch_import_create_completed",
        "BatchImportWorkflow",
        {"kind": "users", "requests": [{"uid": f"u{i}"} for i in range(5)]},
    )
    await rec("batch_import_not_found", "BatchImportWorkflow", {"kind": "users", "job_id": "missing="})
    op = sim.add_operation(duration=0, size=4096)
    await rec("operation_completed", "OperationWorkflow", {"operation_id": op})
    sim.export_defaults.update(duration=0, size=8192)
    await rec(
        "segment_export_create",
        "SegmentExportWorkflow",
        {
            "segment_id": "everyone",
            "time_range": {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"},
            "destination": str(data / "exports"),
        },
    )
    failed = sim.add_operation(duration=0, final_state="FAILED", error_details="too big")
    await rec("segment_export_failed", "SegmentExportWorkflow", {"operation_id": failed})
    sim.add_bundles(5, size=2048, start=1_700_000_000, span=600)
    await rec(
        "data_export_sync_continue_as_new",
        "DataExportSyncWorkflow",
        {"start": 1_700_000_000, "bundles_per_run": 3, "destination": str(data / "bundles")},
    )
    sim.export_defaults.update(duration=60, size=8192)
    for name in ("segment_export_sync_continue_as_new", "segment_export_sync_window_failed"):
        sim.fail_windows = [SEGMENT_SYNC_FAILING_WINDOW] if name.endswith("failed") else []
        await rec(name, *SEGMENT_SYNC, workflow_id=name)
    return histories


async def record_bulk_run(
    env: WorkflowEnvironment,
    sim: Simulator,
    data: Path,
    names: tuple[str, str, str],
    users: int,
    batch_size: int,
    max_in_flight: int,
    **settings: object,
) -> Histories:
    """A bulk import of `users` users from a file (`settings`: the worker's fullstory_* ones), recorded as
    `names`: the bulk import, its first batch, and the slots workflow (its last run, once it ended idle)."""
    from vocabulary.slot_messages import key_fingerprint, slots_workflow_id

    name, first_batch, slots_name = names
    source = data / f"{name}.ndjson"
    source.write_text("".join(f'{{"uid": "u{i}"}}\n' for i in range(users)))
    inp = {"kind": "users", "source": str(source), "batch_size": batch_size, "max_in_flight": max_in_flight}
    async with running_worker(env.client, sim.base_url, data, API_KEY, **settings) as tq:
        handle = await env.client.start_workflow("BulkImportWorkflow", inp, id=name, task_queue=tq)
        await handle.result()
        histories = {name: await handle.fetch_history()}
        histories[first_batch] = await env.client.get_workflow_handle(f"{name}-batch-00000").fetch_history()
        slots = env.client.get_workflow_handle(slots_workflow_id(tq, key_fingerprint(f"Basic {API_KEY}")))
        await slots.result()  # idle once the last batch released its slot: it ends
        histories[slots_name] = await slots.fetch_history()
    return histories


async def record_bulk_import(env: WorkflowEnvironment, sim: Simulator, data: Path) -> Histories:
    """A bulk import of 7 users in 3 batches (children hold batch slots), and the slots workflow it used."""
    sim.batch_defaults.clear()
    sim.batch_defaults.update(duration=60, errors=1)
    names = ("bulk_import_completed", "batch_import_with_slot", "batch_slots_idle_end")
    return await record_bulk_run(env, sim, data, names, 7, batch_size=3, max_in_flight=2)


async def record_download_tokens(env: WorkflowEnvironment, sim: Simulator, data: Path) -> Histories:
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
    return histories


async def record_slot_patches(env: WorkflowEnvironment, sim: Simulator, data: Path) -> Histories:
    """The paths behind the 2026-12 patches of the org batch limit: a bulk import of 6 batches started
    together with 6 slots free. Each child tells its parent it holds a slot (`batch-slot-held`), and the
    slots workflow grants the requests that reach it while it signals other grants at once (`grant-at-once`)."""
    sim.batch_defaults.clear()
    sim.batch_defaults.update(duration=60, errors=0)
    names = ("bulk_import_slots_held", "batch_import_tells_parent", "batch_slots_grant_at_once")
    return await record_bulk_run(
        env, sim, data, names, 12, batch_size=2, max_in_flight=6, fullstory_max_batches_in_progress=6
    )


async def record_unscheduled_placeholder(env: WorkflowEnvironment, sim: Simulator, data: Path) -> Histories:
    """A bulk import not started by a schedule whose source holds `{date}`: InvalidInput at once
    (the path of patch `unscheduled-placeholders`; before it, the run looked for the file so named)."""
    name = "bulk_import_unscheduled_placeholder"
    inp = {"kind": "users", "source": str(data / "users-{date}.ndjson")}
    return {name: await record(env, sim, name, "BulkImportWorkflow", inp, data, workflow_id=name)}


async def record_bulk_merge_as_batches_end(env: WorkflowEnvironment, sim: Simulator, data: Path) -> Histories:
    """The paths behind the bulk import's 2026-12 patches: 3 batches one at a time, each merged as it ends
    (`bulk-merge-as-batches-end`), the later ones told how long the earlier jobs took (`bulk-expected-duration`)."""
    sim.batch_defaults.clear()
    sim.batch_defaults.update(duration=60, errors=1)
    names = ("bulk_import_merged_as_batches_end", "batch_import_first_of_three", "batch_slots_one_at_a_time")
    return await record_bulk_run(env, sim, data, names, 6, batch_size=2, max_in_flight=1)


class Recorder(NamedTuple):
    """`record` returns the histories `names`; each run gets a fresh time-skipping server and simulator.
    `takes`: a history's name -> the patch whose new path it is recorded for (no file is written without it)."""

    names: tuple[str, ...]
    record: Callable[[WorkflowEnvironment, Simulator, Path], Awaitable[Histories]]
    takes: dict[str, str] = {}


RECORDERS = [
    Recorder(
        (
            "batch_import_watch_failed",
            "batch_import_create_completed",
            "batch_import_not_found",
            "operation_completed",
            "segment_export_create",
            "segment_export_failed",
            "data_export_sync_continue_as_new",
            "segment_export_sync_continue_as_new",
            "segment_export_sync_window_failed",
        ),
        record_single_workflows,
    ),
    Recorder(("bulk_import_completed", "batch_import_with_slot", "batch_slots_idle_end"), record_bulk_import),
    Recorder(("data_export_sync_download_tokens", "download_tokens_idle_end"), record_download_tokens),
    Recorder(
        ("bulk_import_slots_held", "batch_import_tells_parent", "batch_slots_grant_at_once"),
        record_slot_patches,
        # Import-free copies of workflows/org_batch_limit.py's TELL_PARENT_PATCH and GRANT_AT_ONCE_PATCH.
        {"batch_import_tells_parent": "batch-slot-held", "batch_slots_grant_at_once": "grant-at-once"},
    ),
    Recorder(
        ("bulk_import_merged_as_batches_end", "batch_import_first_of_three", "batch_slots_one_at_a_time"),
        record_bulk_merge_as_batches_end,
        # Import-free copy of workflows/bulk_import.py's MERGE_AS_BATCHES_END_PATCH; the same history also
        # takes EXPECTED_DURATION_PATCH (test_replay checks every patch has a history that takes it).
        {"bulk_import_merged_as_batches_end": "bulk-merge-as-batches-end"},
    ),
    Recorder(
        ("bulk_import_unscheduled_placeholder",),
        record_unscheduled_placeholder,
        {"bulk_import_unscheduled_placeholder": "unscheduled-placeholders"},  # workflows/steps.py
    ),
]
NAMES = [name for r in RECORDERS for name in r.names]


async def run(recorder: Recorder, wanted: set[str], overwrite: bool, out: Path) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(VENV_BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    )
    try:
        with Simulator(api_key=API_KEY) as sim, tempfile.TemporaryDirectory() as tmp:
            sim.clock = await TemporalClock.start(env)
            histories = await recorder.record(env, sim, Path(tmp))
    finally:
        await env.shutdown()
    assert set(histories) == set(recorder.names), (sorted(histories), recorder.names)
    for name, patch in recorder.takes.items():
        if patch not in patch_ids(histories[name]):
            # Where the path depends on timing (grant-at-once: a request racing the grants), run it again.
            raise SystemExit(f"{name}: the run did not take the path of patch {patch!r}: nothing written, run again")
    for name, history in histories.items():
        path = out / f"{name}.json"
        if name not in wanted:
            continue  # recorded along with a wanted one: the file stays as it is
        if path.exists() and not overwrite:
            raise SystemExit(f"{path.name} exists: not overwritten")  # checked before recording; raced
        path.write_text(history.to_json())
        print(f"{name}: {len(history.events)} events -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=NAMES, help="record only these histories")
    parser.add_argument("--overwrite", action="store_true", help="re-record files that exist (incompatible changes)")
    parser.add_argument("--list", action="store_true", help="list every history's name and whether it is recorded")
    parser.add_argument("--out", type=Path, default=OUT, help="another folder (a trial run): default tests/histories")
    args = parser.parse_args()
    out: Path = args.out
    if args.list:
        for name in NAMES:
            print(f"{name}{'' if (out / f'{name}.json').exists() else '  (not recorded yet)'}")
        return
    wanted = set(args.only) if args.only else {n for n in NAMES if args.overwrite or not (out / f"{n}.json").exists()}
    existing = sorted(n for n in wanted if (out / f"{n}.json").exists())
    if existing and not args.overwrite:
        parser.error(
            f"already recorded (old runs must keep replaying): {', '.join(existing)}; --overwrite to re-record"
        )
    if not wanted:
        print("every history is recorded: nothing to do (--list names them)")
        return
    out.mkdir(parents=True, exist_ok=True)
    for recorder in RECORDERS:
        if wanted & set(recorder.names):
            asyncio.run(run(recorder, wanted, args.overwrite, out))


if __name__ == "__main__":
    main()
