"""Worker Versioning: the settings, the behaviour of every workflow, and a rollout from build 1 to build 2.

The end-to-end test runs two real worker processes with different FULLSTORY_BUILD_IDs on one plain
`temporal server start-dev` (the session's dev server, no dynamic config): build 1 starts, becomes
the deployment's current version by itself (the bootstrap of a new deployment), and runs a batch
import and a following data export sync; build 2 starts and is made current with the API the
`temporal worker deployment set-current-version` command calls. Then, read from each execution's
versioning info and history: the waiting import (PINNED) finishes on build 1, a new import runs on
build 2, and the sync (AUTO_UPGRADE) moves to build 2 and downloads its next bundle there, with no
failed workflow task.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.enums.v1 import VersioningBehavior as VersioningBehaviorProto
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import VersioningBehavior
from temporalio.workflow import _Definition

from helpers import WorkerProcess
from infra.settings import Settings
from infra.versioning import deployment_config, workflow_code_hash
from workflows.batch_job_input import BatchImportResult, batch_workflow_id
from workflows.registry import JOBS, WORKFLOWS

PINNED = VersioningBehaviorProto.VERSIONING_BEHAVIOR_PINNED
AUTO_UPGRADE = VersioningBehaviorProto.VERSIONING_BEHAVIOR_AUTO_UPGRADE

# The behaviour of every workflow type (README "Deploys and Worker Versioning"): single jobs finish on
# the build that started them; what runs for days or forever moves to the current build.
EXPECTED = {
    "BatchImportWorkflow": VersioningBehavior.PINNED,
    "OperationWorkflow": VersioningBehavior.PINNED,
    "SegmentExportWorkflow": VersioningBehavior.PINNED,
    "BulkImportWorkflow": VersioningBehavior.AUTO_UPGRADE,
    "SegmentExportSyncWorkflow": VersioningBehavior.AUTO_UPGRADE,
    "DataExportSyncWorkflow": VersioningBehavior.AUTO_UPGRADE,
    "BatchSlotsWorkflow": VersioningBehavior.AUTO_UPGRADE,
    "DownloadTokensWorkflow": VersioningBehavior.AUTO_UPGRADE,
}


# --- offline -------------------------------------------------------------------------------------


def test_every_workflow_declares_its_versioning_behaviour():
    declared = {d.name: d.versioning_behavior for d in map(_Definition.must_from_class, WORKFLOWS)}
    assert declared == EXPECTED
    assert {job.name for job in JOBS} <= set(declared)


def test_unset_deployment_name_means_unversioned_workers(monkeypatch):
    for name in ("FULLSTORY_DEPLOYMENT_NAME", "FULLSTORY_BUILD_ID"):
        monkeypatch.delenv(name, raising=False)
    assert deployment_config(Settings()) is None
    assert deployment_config(Settings(fullstory_deployment_name="  ", fullstory_build_id="")) is None


def test_build_id_defaults_to_package_version_and_workflow_code_hash(monkeypatch, tmp_path):
    monkeypatch.delenv("FULLSTORY_BUILD_ID", raising=False)
    config = deployment_config(Settings(fullstory_deployment_name="fullstory-jobs"))
    assert config is not None and config.use_worker_versioning
    assert config.default_versioning_behavior == VersioningBehavior.PINNED
    assert config.version.deployment_name == "fullstory-jobs"
    version, _, code = config.version.build_id.rpartition("-")
    assert version and code == workflow_code_hash() and len(code) == 12
    explicit = deployment_config(Settings(fullstory_deployment_name="fullstory-jobs", fullstory_build_id="2026.12.1"))
    assert explicit is not None and explicit.version.build_id == "2026.12.1"

    # The hash follows the workflow code (workflows/, vocabulary/), and only it.
    repo = Path(__file__).resolve().parents[1]
    for package in ("workflows", "vocabulary", "activities"):
        (tmp_path / package).mkdir()
        for path in (repo / package).glob("*.py"):
            (tmp_path / package / path.name).write_bytes(path.read_bytes())
    assert workflow_code_hash(tmp_path) == workflow_code_hash()
    (tmp_path / "activities" / "client.py").write_text("# an activity change\n", "utf-8")
    assert workflow_code_hash(tmp_path) == workflow_code_hash()
    (tmp_path / "workflows" / "batch_job.py").write_text("# a workflow change\n", "utf-8")
    assert workflow_code_hash(tmp_path) != workflow_code_hash()


def test_a_deployment_name_with_a_dot_is_refused():
    with pytest.raises(ValueError, match="must not contain"):
        Settings(fullstory_deployment_name="fullstory.jobs")


# --- end to end ----------------------------------------------------------------------------------


async def poll(predicate, timeout: float, what: str, every: float = 0.25):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
        except Exception as e:  # e.g. the deployment or version not registered yet
            last_error = e
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last error: {last_error})")
        await asyncio.sleep(every)


async def current_build(client: Client, deployment: str) -> str | None:
    described = await client.workflow_service.describe_worker_deployment(
        DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
    )
    routing = described.worker_deployment_info.routing_config
    return routing.current_deployment_version.build_id if routing.HasField("current_deployment_version") else None


async def set_current(client: Client, deployment: str, build_id: str) -> bool:
    """`temporal worker deployment set-current-version --deployment-name D --build-id B`, through the API."""
    await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace, deployment_name=deployment, build_id=build_id, identity="test-rollout"
        )
    )
    return True


async def versioning(handle: WorkflowHandle) -> tuple[int, str]:
    """(behaviour, build id) of the run, from its versioning info."""
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.behavior, info.deployment_version.build_id


async def task_builds(handle: WorkflowHandle) -> list[str]:
    """The build id of every completed workflow task of the run, in order; fails on a failed workflow task."""
    builds = []
    async for event in handle.fetch_history_events():
        assert event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, event
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            builds.append(event.workflow_task_completed_event_attributes.deployment_version.build_id)
    return builds


async def activity_identities(handle: WorkflowHandle) -> dict[str, set[str]]:
    """{activity type: identities of the workers that started it} from the run's history."""
    types: dict[int, str] = {}
    out: dict[str, set[str]] = {}
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            types[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            out.setdefault(types[attrs.scheduled_event_id], set()).add(attrs.identity)
    return out


async def stored_bundles(handle: WorkflowHandle) -> int:
    """Bundle downloads completed in the run's history."""
    scheduled: set[int] = set()
    done = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == "store_export_bundle":
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done += event.activity_task_completed_event_attributes.scheduled_event_id in scheduled
    return done


@pytest.mark.e2e
async def test_pinned_import_finishes_on_build_1_new_starts_and_the_sync_move_to_build_2(
    dev_env, sim, worker_factory, tmp_path
):
    client = dev_env.client
    deployment = f"fullstory-jobs-{uuid.uuid4().hex[:8]}"
    env = {"FULLSTORY_DEPLOYMENT_NAME": deployment, "FULLSTORY_EXPORT_DOWNLOADS_PER_MINUTE": "600"}
    sim.batch_defaults.update(retry_after_while_processing=1)

    # Build 1: a new deployment, so its first version becomes current by itself.
    a = worker_factory(**env, FULLSTORY_BUILD_ID="build-1").start()
    assert await poll(lambda: current_build(client, deployment), 30, "build 1 current") == "build-1"

    slow_job = sim.add_batch_job(kind="events", duration=25, imports=5, errors=3)
    first = await client.start_workflow(
        "BatchImportWorkflow",
        {"kind": "events", "job_id": slow_job, "destination": str(tmp_path / "out")},
        id=batch_workflow_id("events", slow_job),
        task_queue=worker_factory.task_queue,
        result_type=BatchImportResult,
    )
    sim.add_bundles(1, size=64 << 10, start=1_700_000_000)
    sync = await client.start_workflow(
        "DataExportSyncWorkflow",
        {"start": 1_600_000_000, "destination": str(tmp_path / "bundles"), "follow": True, "poll_interval": 1},
        id=f"fullstory-data-export-sync-{deployment}",
        task_queue=worker_factory.task_queue,
    )
    await poll(lambda: stored_bundles(sync), 30, "the first bundle stored on build 1")

    async def waiting() -> bool:
        pending = (await first.describe()).raw_description.pending_activities
        return any(p.activity_type.name == "wait_for_batch_job" for p in pending)

    await poll(waiting, 30, "the first import waiting on its job")
    assert await versioning(first) == (PINNED, "build-1")
    assert await versioning(sync) == (AUTO_UPGRADE, "build-1")

    # Build 2 starts beside it and is made current (it must poll both task queues first).
    b = worker_factory(**env, FULLSTORY_BUILD_ID="build-2").start()
    await poll(lambda: set_current(client, deployment, "build-2"), 30, "build 2 made current")
    assert await current_build(client, deployment) == "build-2"
    assert (await first.describe()).status == WorkflowExecutionStatus.RUNNING, "the import ended before the switch"

    # A new start runs on build 2, end to end.
    quick_job = sim.add_batch_job(kind="events", duration=1, imports=2, errors=1)
    second = await client.start_workflow(
        "BatchImportWorkflow",
        {"kind": "events", "job_id": quick_job, "destination": str(tmp_path / "out")},
        id=batch_workflow_id("events", quick_job),
        task_queue=worker_factory.task_queue,
        result_type=BatchImportResult,
    )
    assert (await asyncio.wait_for(second.result(), 60)).job_id == quick_job
    assert await versioning(second) == (PINNED, "build-2")
    assert set(await task_builds(second)) == {"build-2"}

    # The following sync moves to build 2 at its next workflow task (its poll timer) and stores the
    # next bundle there, with no failed workflow task.
    sim.add_bundles(1, size=64 << 10, start=1_700_003_600)
    await poll(lambda: on_build(sync, "build-2"), 30, "the sync on build 2", every=0.5)
    await poll(lambda: at_least(stored_bundles(sync), 2), 60, "the second bundle stored on build 2", every=0.5)
    assert await versioning(sync) == (AUTO_UPGRADE, "build-2")
    builds = await task_builds(sync)
    assert builds[0] == "build-1" and builds[-1] == "build-2", builds
    assert builds == sorted(builds), f"back and forth between builds: {builds}"

    # The waiting import finished on build 1: every workflow task and every activity.
    result = await asyncio.wait_for(first.result(), 90)
    assert result.job_id == slow_job and result.errors == 3 and result.records_collected >= 3
    assert await versioning(first) == (PINNED, "build-1")
    assert set(await task_builds(first)) == {"build-1"}
    ids_a, ids_b = identity_of(a), identity_of(b)
    first_activities = await activity_identities(first)
    second_activities = await activity_identities(second)
    assert first_activities and all(ids == {ids_a} for ids in first_activities.values()), (first_activities, ids_a)
    assert second_activities and all(ids == {ids_b} for ids in second_activities.values()), second_activities
    sync_downloads = await activity_identities(sync)
    assert sync_downloads["store_export_bundle"] == {ids_a, ids_b}, sync_downloads
    print(
        f"\nfirst import (started on build 1): tasks on {sorted(set(await task_builds(first)))}, "
        f"activities by {first_activities}\n"
        f"second import (started after the switch): tasks on {sorted(set(await task_builds(second)))}\n"
        f"sync: workflow tasks by build {builds}"
    )
    await sync.terminate("test over")


async def at_least(value: Awaitable[int], n: int) -> bool:
    return (await value) >= n


async def on_build(handle: WorkflowHandle, build_id: str) -> bool:
    return (await versioning(handle))[1] == build_id


def identity_of(worker: WorkerProcess) -> str:
    """temporalio's default worker identity (the client's): pid@host."""
    assert worker.proc is not None
    return f"{worker.proc.pid}@{socket.gethostname()}"
