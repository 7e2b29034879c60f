"""The messages of the org-wide batch limit: what a batch job, its activities and BatchSlotsWorkflow send.

The slots workflow (workflows/org_batch_limit.py) is started by an activity
(activities/org_batch_limit.py, signal-with-start `acquire`) and answers holders by signal, so both
sides type these: the workflow's name and input, the signals and their payloads, the activities' params.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from vocabulary.contract import InputModel
from vocabulary.policies import DEFAULT_BATCH_SLOT_RECLAIM_SECONDS, DEFAULT_MAX_BATCHES_IN_PROGRESS

SLOTS_WORKFLOW = "BatchSlotsWorkflow"
ACQUIRE_SIGNAL = "acquire"  # SlotRequest, to the slots workflow
RELEASE_SIGNAL = "release"  # SlotRef, to the slots workflow
GRANTED_SIGNAL = "batch_slot_granted"  # no payload, to the holder
HELD_SIGNAL = "batch_slot_held"  # the holder's workflow id, from the holder to its parent (a bulk import)


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


class BatchSlotsInput(InputModel):
    """Input of `BatchSlotsWorkflow` (started by `request_batch_slot`, never by hand)."""

    limit: int = Field(
        default=DEFAULT_MAX_BATCHES_IN_PROGRESS, ge=1, description="Slots: FULLSTORY_MAX_BATCHES_IN_PROGRESS."
    )
    reclaim_seconds: float = Field(
        default=DEFAULT_BATCH_SLOT_RECLAIM_SECONDS, ge=1, description="How often holders are checked while any wait."
    )
    holders: dict[str, SlotRequest] = Field(default_factory=dict, description="Carried over by continue-as-new.")
    waiting: list[SlotRequest] = Field(default_factory=list, description="Carried over by continue-as-new.")
    granted_total: int = Field(default=0, ge=0, description="Carried over by continue-as-new.")


def slots_summary(limit: int) -> str:
    """The slots workflow's one-line UI summary."""
    return f"Batch slots: at most {limit} batch jobs in progress for this API key"


def slots_workflow_id(task_queue: str, key_fingerprint: str) -> str:
    """One slots workflow per API key (by fingerprint, never the key) and task queue (its workers run it)."""
    return f"fullstory-batch-slots-{task_queue}-{key_fingerprint}"


def key_fingerprint(authorization: str) -> str:
    """A short, one-way fingerprint of an Authorization header value: names things per key, reveals nothing."""
    return hashlib.sha256(authorization.encode()).hexdigest()[:12]
