"""The org-wide batch limit's activities: ask the slots workflow for a slot, and find holders that are gone.

Fullstory queues more than about 100 batch jobs in progress per org and answers every create with 429
at 200. `FULLSTORY_MAX_BATCHES_IN_PROGRESS` (default 90) is this deployment's share: one durable
`BatchSlotsWorkflow` per API key (and task queue) hands out that many slots (workflows/org_batch_limit.py).

- `request_batch_slot`: signal-with-start `acquire` on the slots workflow (starting it if it does not run
  yet, with this worker's limit); the slot arrives later as a `batch_slot_granted` signal to the holder.
- `check_slot_holders`: which holders no longer run (terminated, timed out, cancelled, failed without
  releasing): the slots workflow reclaims their slots.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

if TYPE_CHECKING:
    from activities.deps import ActivityDeps

SLOTS_WORKFLOW = "BatchSlotsWorkflow"
GRANTED_SIGNAL = "batch_slot_granted"


class SlotRequest(BaseModel):
    """One workflow asking for one slot (a workflow holds at most one)."""

    holder: str  # the holder's workflow id
    run_id: str
    group: str  # fairness: slots are shared out between groups (a bulk import's children are one group)
    limit: int | None = None  # the requesting worker's FULLSTORY_MAX_BATCHES_IN_PROGRESS (the latest wins)
    reclaim_seconds: float | None = None


class SlotRef(BaseModel):
    holder: str
    run_id: str


class RequestSlotParams(BaseModel):
    holder: str
    run_id: str
    group: str


class CheckHoldersParams(BaseModel):
    holders: list[SlotRef]


def slots_workflow_id(task_queue: str, authorization: str) -> str:
    """One slots workflow per API key (by fingerprint, never the key) and task queue (its workers run it)."""
    fingerprint = hashlib.sha256(authorization.encode()).hexdigest()[:12]
    return f"fullstory-batch-slots-{task_queue}-{fingerprint}"


class BatchSlotActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.client = deps.client
        self.limit = deps.max_batches_in_progress
        self.reclaim_seconds = deps.batch_slot_reclaim_seconds

    @activity.defn(name="request_batch_slot")
    async def request_batch_slot(self, params: RequestSlotParams) -> str:
        """Signal-with-start `acquire`; returns the slots workflow's id (the holder releases there)."""
        from workflows.org_batch_limit import BatchSlotsInput, start_texts

        task_queue = activity.info().task_queue
        slots_id = slots_workflow_id(task_queue, self.client._authorization)
        first = BatchSlotsInput(limit=self.limit, reclaim_seconds=self.reclaim_seconds)
        summary, headline, _ = start_texts(first)
        request = SlotRequest(
            holder=params.holder,
            run_id=params.run_id,
            group=params.group,
            limit=self.limit,
            reclaim_seconds=self.reclaim_seconds,
        )
        await activity.client().start_workflow(
            SLOTS_WORKFLOW,
            first,
            id=slots_id,
            task_queue=task_queue,
            start_signal="acquire",
            start_signal_args=[request],
            static_summary=summary,
        )
        return slots_id

    @activity.defn(name="check_slot_holders")
    async def check_slot_holders(self, params: CheckHoldersParams) -> list[str]:
        """The holders (workflow ids) whose run no longer runs: their slots are to be reclaimed."""
        client = activity.client()
        gate = asyncio.Semaphore(16)

        async def gone(ref: SlotRef) -> bool:
            async with gate:
                try:
                    described = await client.get_workflow_handle(ref.holder, run_id=ref.run_id).describe()
                except RPCError as e:
                    if e.status == RPCStatusCode.NOT_FOUND:
                        return True
                    raise
                return described.status != WorkflowExecutionStatus.RUNNING

        flags = await asyncio.gather(*(gone(ref) for ref in params.holders))
        return [ref.holder for ref, flag in zip(params.holders, flags, strict=True) if flag]
