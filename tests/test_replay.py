"""Recorded histories replay against the current workflow code: a deploy mid-wait is safe.

The second half backs the worked example of docs/graceful-deploys.md: a new step in
BatchImportWorkflow, guarded by `workflow.patched`, replays every old history; the same step
without the guard does not; and the patch's later stages (deprecate_patch, removal) are checked
against a history recorded with the patch in place.
"""

from __future__ import annotations

import importlib
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker
from temporalio.workflow import NondeterminismError

from activities.batch_job import BatchActivities, BatchJob, BatchJobDetails, WaitForBatchJobParams
from helpers import REPO, patch_ids
from infra.data_converter import DATA_CONVERTER
from workflows.batch_job import BatchImportWorkflow
from workflows.registry import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def workflow_type(path: Path) -> str:
    first = json.loads(path.read_text())["events"][0]
    return first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def test_there_are_recorded_histories_for_every_workflow():
    recorded = {workflow_type(p) for p in HISTORIES}
    assert {w.__temporal_workflow_definition.name for w in WORKFLOWS} <= recorded


def workflow_patches() -> dict[str, str]:
    """Every patch id the workflows branch on: the `*_PATCH` constants of workflows/ (name -> id)."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "workflows").glob("*.py")):
        module = importlib.import_module(f"workflows.{path.stem}")
        found |= {k: v for k, v in vars(module).items() if k.endswith("_PATCH") and isinstance(v, str)}
    return found


def test_every_patch_has_a_recorded_history_that_took_its_new_path():
    """Old histories prove the old path still replays; a history with the patch's marker proves the new one
    does (record it with tests/record_histories.py, a new name, the day the patch is written)."""
    taken = set().union(*(patch_ids(WorkflowHistory.from_json(p.stem, p.read_text())) for p in HISTORIES))
    patches = workflow_patches()
    assert {"GRANT_AT_ONCE_PATCH", "TELL_PARENT_PATCH"} <= set(patches)  # the search finds them
    assert {k: v for k, v in patches.items() if v not in taken} == {}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@workflow.defn(name="BatchImportWorkflow")
class ChangedBatchImportWorkflow:
    """A careless change: sleeps before its first activity. Replay must catch it."""

    @workflow.run
    async def run(self, input: dict) -> dict:
        await workflow.sleep(1)
        return {}


async def test_replay_catches_an_incompatible_change():
    path = next(p for p in HISTORIES if workflow_type(p) == "BatchImportWorkflow")
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[ChangedBatchImportWorkflow],
        data_converter=DATA_CONVERTER,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


# --- The worked example of docs/graceful-deploys.md ------------------------------------------------
#
# The change: before waiting, BatchImportWorkflow records the Fullstory job (a new activity writing
# job.json beside the records). Every BatchImportWorkflow waiting today has already scheduled its
# wait, so to them the new step is a command their history never had.
#
# The variants below apply the doc's diff without copying workflows/batch_job.py (a copy would drift from
# it): each overrides the one place the wait is scheduled, `step(BatchActivities.wait_for_batch_job, ...)`, and runs
# the new step first. Everything else is the production workflow, registered under the same name.

PATCH_ID = "record-batch-job"
WAIT_FOR_BATCH_JOB = "wait_for_batch_job"  # the recorded name: activity names never change
RECORD_BATCH_JOB = "record_batch_job"
BATCH_HISTORIES = [p for p in HISTORIES if workflow_type(p) == "BatchImportWorkflow"]
# Core's words when the code schedules the new activity where the history scheduled the wait.
MISMATCH = (
    f"scheduled event '{WAIT_FOR_BATCH_JOB}' does not match activity type of activity command '{RECORD_BATCH_JOB}'"
)


class _RecordsTheJob(BatchImportWorkflow):
    def new_step_applies(self) -> bool:
        raise NotImplementedError

    async def step(self, activity: Any, params: Any, **options: Any) -> Any:
        if activity == BatchActivities.wait_for_batch_job and self.new_step_applies():
            assert isinstance(params, WaitForBatchJobParams)
            await workflow.execute_activity(
                RECORD_BATCH_JOB,
                {"kind": params.kind, "job_id": params.job_id, "workflow_id": workflow.info().workflow_id},
                start_to_close_timeout=timedelta(seconds=30),
                summary=f"Record batch job {params.job_id}",
            )
        return await super().step(activity, params, **options)


@workflow.defn(name="BatchImportWorkflow")
class StepWithoutPatch(_RecordsTheJob):
    """The careless deploy: the new step for everyone."""

    @workflow.run
    async def run(self, input: dict) -> Any:
        return await super().run(input)

    def new_step_applies(self) -> bool:
        return True


@workflow.defn(name="BatchImportWorkflow")
class StepUnderPatch(_RecordsTheJob):
    """Stage 1: the new step only where the history allows it (new runs, and runs past this point)."""

    @workflow.run
    async def run(self, input: dict) -> Any:
        return await super().run(input)

    def new_step_applies(self) -> bool:
        return workflow.patched(PATCH_ID)


@workflow.defn(name="BatchImportWorkflow")
class StepWithDeprecatedPatch(_RecordsTheJob):
    """Stage 2, once no run started before stage 1 is open or queried: old branch gone, marker kept."""

    @workflow.run
    async def run(self, input: dict) -> Any:
        return await super().run(input)

    def new_step_applies(self) -> bool:
        workflow.deprecate_patch(PATCH_ID)
        return True


async def replay(path_or_history: Path | WorkflowHistory, workflow_class: type) -> Exception | None:
    history = (
        path_or_history
        if isinstance(path_or_history, WorkflowHistory)
        else WorkflowHistory.from_json(path_or_history.stem, path_or_history.read_text())
    )
    replayer = Replayer(
        workflows=[workflow_class], data_converter=DATA_CONVERTER, workflow_runner=UnsandboxedWorkflowRunner()
    )
    return (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure


@pytest.mark.parametrize("path", BATCH_HISTORIES, ids=[p.stem for p in BATCH_HISTORIES])
async def test_new_step_under_patch_replays_every_old_history(path: Path):
    assert await replay(path, StepUnderPatch) is None


@pytest.mark.parametrize("path", BATCH_HISTORIES, ids=[p.stem for p in BATCH_HISTORIES])
async def test_the_same_step_without_the_patch_is_nondeterministic(path: Path):
    failure = await replay(path, StepWithoutPatch)
    assert isinstance(failure, NondeterminismError), failure
    assert MISMATCH in str(failure)


@pytest.mark.parametrize("path", BATCH_HISTORIES, ids=[p.stem for p in BATCH_HISTORIES])
async def test_deprecating_the_patch_too_early_breaks_old_histories(path: Path):
    failure = await replay(path, StepWithDeprecatedPatch)
    assert isinstance(failure, NondeterminismError) and MISMATCH in str(failure)


recorded_calls: list[str] = []


@activity.defn(name=WAIT_FOR_BATCH_JOB)
async def job_already_done(params: WaitForBatchJobParams) -> BatchJobDetails:
    recorded_calls.append(WAIT_FOR_BATCH_JOB)
    return BatchJobDetails(imports=3, errors=0, job=BatchJob(id=params.job_id, status="COMPLETED"))


@activity.defn(name=RECORD_BATCH_JOB)
async def record_batch_job(params: dict) -> None:
    recorded_calls.append(RECORD_BATCH_JOB)


async def run_once(env, workflow_class: type) -> WorkflowHistory:
    """One watched job, start to end, on the time-skipping server; returns its history."""
    task_queue = f"patch-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[workflow_class],
        activities=[job_already_done, record_batch_job],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await env.client.start_workflow(
            "BatchImportWorkflow",
            {"kind": "events", "job_id": "abc123="},
            id=f"patch-{uuid.uuid4().hex}",
            task_queue=task_queue,
        )
        await handle.result()
        return await handle.fetch_history()


def markers(history: WorkflowHistory) -> list[Any]:
    return [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]


async def test_patch_lifecycle_on_a_fresh_run(ts_env):
    recorded_calls.clear()
    patched = await run_once(ts_env, StepUnderPatch)
    # A new run takes the new path and says so in its history: a marker before the new step.
    assert recorded_calls == [RECORD_BATCH_JOB, WAIT_FOR_BATCH_JOB]
    assert [m.marker_recorded_event_attributes.marker_name for m in markers(patched)] == ["core_patch"]
    # ...and in a search attribute, which finds the runs still on the old path (see the doc).
    upserts = [
        e.upsert_workflow_search_attributes_event_attributes
        for e in patched.events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]
    assert len(upserts) == 1 and "TemporalChangeVersion" in upserts[0].search_attributes.indexed_fields
    # Rolling back to the code before the patch breaks runs that took the new path...
    assert isinstance(await replay(patched, BatchImportWorkflow), NondeterminismError)
    # ...while stage 2 (deprecate_patch) replays them, and records a marker of its own for new runs.
    assert await replay(patched, StepWithDeprecatedPatch) is None
    deprecated = await run_once(ts_env, StepWithDeprecatedPatch)
    assert len(markers(deprecated)) == 1
    # Stage 3 (patch call removed, the step unconditional) replays runs started under stage 2,
    # but not runs that took the patched() branch in stage 1: their marker is not a deprecated one.
    assert await replay(deprecated, StepWithoutPatch) is None
    failure = await replay(patched, StepWithoutPatch)
    assert isinstance(failure, NondeterminismError) and "Non-deprecated patch marker" in str(failure)
