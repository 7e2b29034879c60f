"""The org-wide batch limit's activities: ask the slots workflow for a slot, and find holders that are gone.

Fullstory queues more than about 100 batch jobs in progress per org and answers every create with 429
at 200. `FULLSTORY_MAX_BATCHES_IN_PROGRESS` (default 90) is this deployment's share: one durable
`BatchSlotsWorkflow` per API key (and task queue) hands out that many slots (workflows/org_batch_limit.py); the messages
both sides send are vocabulary/slot_messages.py.

- `request_batch_slot`: signal-with-start `acquire` on the slots workflow (starting it if it does not run
  yet, with this worker's limit); the slot arrives later as a `batch_slot_granted` signal to the holder.
- `check_slot_holders`: which holders no longer run (terminated, timed out, cancelled, failed without
  releasing): the slots workflow reclaims their slots.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.signal_with_start import signal_with_start_per_key
from vocabulary.slot_messages import (
    ACQUIRE_SIGNAL,
    SLOTS_WORKFLOW,
    BatchSlotsInput,
    CheckHoldersParams,
    RequestSlotParams,
    SlotRef,
    SlotRequest,
    slots_summary,
    slots_workflow_id,
)

if TYPE_CHECKING:
    from activities.deps import ActivityDeps


class BatchSlotActivities:
    def __init__(self, deps: ActivityDeps) -> None:
        self.client = deps.client
        self.limit = deps.max_batches_in_progress
        self.reclaim_seconds = deps.batch_slot_reclaim_seconds

    @activity.defn(name="request_batch_slot")
    async def request_batch_slot(self, params: RequestSlotParams) -> str:
        """Signal-with-start `acquire`; returns the slots workflow's id (the holder releases there)."""
        request = SlotRequest(
            holder=params.holder,
            run_id=params.run_id,
            group=params.group,
            limit=self.limit,
            reclaim_seconds=self.reclaim_seconds,
        )
        return await signal_with_start_per_key(
            SLOTS_WORKFLOW,
            slots_workflow_id,
            self.client.key_fingerprint,
            BatchSlotsInput(limit=self.limit, reclaim_seconds=self.reclaim_seconds),
            ACQUIRE_SIGNAL,
            request,
            slots_summary(self.limit),
        )

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
