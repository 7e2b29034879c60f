"""Recorded histories replay against the current workflow code: a deploy mid-wait is safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def workflow_type(path: Path) -> str:
    first = json.loads(path.read_text())["events"][0]
    return first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def test_there_are_recorded_histories_for_every_workflow():
    recorded = {workflow_type(p) for p in HISTORIES}
    assert {w.__temporal_workflow_definition.name for w in WORKFLOWS} <= recorded


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
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
    replayer = Replayer(workflows=[ChangedBatchImportWorkflow], data_converter=pydantic_data_converter,
                        workflow_runner=UnsandboxedWorkflowRunner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
