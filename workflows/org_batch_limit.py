"""BatchSlotsWorkflow: the org-wide limit on batch jobs in progress, held across every workflow and worker.

A durable semaphore: one workflow per API key and task queue (fixed id, activities/org_batch_limit.py),
started on demand by the first `acquire` (signal-with-start), running for as long as there is anything
to hold. Why a workflow driven by signals: its state (holders, the queue) is durable in Temporal (it
survives worker and server restarts with no store of our own); signals need no worker of the
requester to stay up; and a holder is a workflow id, so the semaphore can ask Temporal whether a
holder still runs.

- `acquire` (SlotRequest): queue the requester; a free slot is granted by signalling
  `batch_slot_granted` to the holder. Repeating it is harmless (a holder is re-sent its grant).
- `release` (SlotRef): the holder's job finished or failed (it releases in a `finally`).
- Fair: a free slot goes to the waiting group (a bulk import's children are one group, a single
  import its own) that holds the fewest slots, first come first served between equals; so a big
  import never starves a small one started later.
- No leaked slots: while anyone waits, every `reclaim_seconds` an activity asks Temporal which
  holders no longer run (terminated, timed out, cancelled) and their slots are freed.
- Bounded: continues as new (holders and queue carried over) when its history grows; idle (nothing
  held, nobody waiting) it ends at once, and the next `acquire` starts it again.
- The UI: current details list the slots in use, the queue and the limit; so does the `progress` query.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from activities.org_batch_limit import BatchSlotActivities
    from vocabulary import errors
    from vocabulary.contract import ResultModel
    from vocabulary.policies import CALL_TIMEOUT
    from vocabulary.slot_messages import (
        ACQUIRE_SIGNAL,
        GRANTED_SIGNAL,
        HELD_SIGNAL,
        RELEASE_SIGNAL,
        SLOTS_WORKFLOW,
        BatchSlotsInput,
        CheckHoldersParams,
        RequestSlotParams,
        SlotRef,
        SlotRequest,
        slots_summary,
    )
    from vocabulary.texts import Row, code, span
    from workflows.steps import ProgressTracker, ProgressWorkflow, StepText, parse_input, remaining

MAX_HISTORY = 4_000  # events before it continues as new
REREQUEST_EVERY = timedelta(minutes=5)  # a waiting holder asks again (its grant may have been lost)
BATCH_SLOTS_PATCH = "batch-slots"  # 2026-11: BatchImportWorkflow runs started before it hold no slot
GRANT_AT_ONCE_PATCH = "grant-at-once"  # 2026-12: requests that arrive while grants are signalled
TELL_PARENT_PATCH = "batch-slot-held"  # 2026-12: a holder tells its parent (a bulk import) it holds a slot


class BatchSlotsResult(ResultModel):
    granted_total: int


HIDDEN_FIELDS = frozenset({"holders", "waiting", "granted_total"})


def workflow_id_for(args: BatchSlotsInput, unique: str) -> str:
    return f"fullstory-batch-slots-{unique}"  # the real id is derived from the API key (activities/org_batch_limit.py)


@workflow.defn(name=SLOTS_WORKFLOW, versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class BatchSlotsWorkflow(ProgressWorkflow):
    timeout_error = errors.BATCH_JOB_TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.limit = 0  # 0: not set yet (by an `acquire` or the input)
        self.reclaim = timedelta(0)
        self.regrant: list[SlotRequest] = []
        self.holders: dict[str, SlotRequest] = {}
        self.waiting: list[SlotRequest] = []
        self.granted_total = 0
        self.changed = False

    @workflow.signal(name=ACQUIRE_SIGNAL)
    def acquire(self, request: SlotRequest) -> None:
        if request.limit:
            self.limit = request.limit
        if request.reclaim_seconds:
            self.reclaim = timedelta(seconds=request.reclaim_seconds)
        held = self.holders.get(request.holder)
        if held is not None and held.run_id != request.run_id:
            del self.holders[request.holder]  # an earlier run of that id: its slot is free
        self.waiting = [w for w in self.waiting if w.holder != request.holder or w.run_id == request.run_id]
        if request.holder in self.holders or any(w.holder == request.holder for w in self.waiting):
            if request.holder in self.holders:
                self.regrant.append(self.holders[request.holder])
        else:
            self.waiting.append(request)
        self.changed = True

    @workflow.signal(name=RELEASE_SIGNAL)
    def release(self, ref: SlotRef) -> None:
        held = self.holders.get(ref.holder)
        if held is not None and held.run_id == ref.run_id:
            del self.holders[ref.holder]
        self.waiting = [w for w in self.waiting if not (w.holder == ref.holder and w.run_id == ref.run_id)]
        self.changed = True

    @workflow.run
    async def run(self, input: dict[str, Any]) -> BatchSlotsResult:
        args = parse_input(BatchSlotsInput, input)
        # Signals that arrived with the start (signal-with-start) ran before run(): keep what they set.
        self.limit = self.limit or args.limit
        self.reclaim = self.reclaim or timedelta(seconds=args.reclaim_seconds)
        self.holders = {**args.holders, **self.holders}
        known = set(self.holders) | {w.holder for w in args.waiting}
        self.waiting = [*args.waiting, *(w for w in self.waiting if w.holder not in known)]
        self.granted_total += args.granted_total
        say = SlotsNarration(self._tracker)
        next_reclaim = workflow.now() + self.reclaim
        while True:
            await self.grant()
            say.now(self)
            if workflow.info().get_current_history_length() > MAX_HISTORY or (
                workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    BatchSlotsInput(
                        limit=self.limit,
                        reclaim_seconds=self.reclaim.total_seconds(),
                        holders=self.holders,
                        waiting=self.waiting,
                        granted_total=self.granted_total,
                    )
                )
            # A request (or release) that came in while the grants were being signalled is granted now,
            # not at the next change or reclaim (before this patch it waited: up to a whole wave).
            if not self.grantable() or not workflow.patched(GRANT_AT_ONCE_PATCH):
                self.changed = False
            if not self.holders and not self.waiting:
                # Idle: end (nothing to keep); the next `acquire` starts it again with signal-with-start.
                # A signal that arrives meanwhile makes the server refuse the completion and replay it.
                await workflow.wait_condition(workflow.all_handlers_finished)
                return BatchSlotsResult(granted_total=self.granted_total)
            if not self.waiting:  # nobody waits: a leaked slot costs nothing yet
                await workflow.wait_condition(lambda: self.changed)
                next_reclaim = workflow.now() + self.reclaim
                continue
            if await self.wait(remaining(next_reclaim)):
                continue
            await self.reclaim_gone(say)
            next_reclaim = workflow.now() + self.reclaim

    def grantable(self) -> bool:
        """Whether a grant is due: a waiter and a free slot, or a holder to be sent its grant again."""
        return bool(self.regrant) or (bool(self.waiting) and len(self.holders) < self.limit)

    async def wait(self, timeout: timedelta) -> bool:
        """True when a signal changed something, False when `timeout` passed."""
        try:
            await workflow.wait_condition(lambda: self.changed, timeout=timeout)
            return True
        except TimeoutError:
            return False

    def pick(self) -> SlotRequest:
        """The next waiter: from the group holding the fewest slots; first come first served between equals."""
        held: dict[str, int] = {}
        for h in self.holders.values():
            held[h.group] = held.get(h.group, 0) + 1
        return min(enumerate(self.waiting), key=lambda iw: (held.get(iw[1].group, 0), iw[0]))[1]

    async def grant(self) -> None:
        granted: list[SlotRequest] = []
        while self.waiting and len(self.holders) < self.limit:
            request = self.pick()
            self.waiting.remove(request)
            self.holders[request.holder] = request
            granted.append(request)
            self.granted_total += 1
        granted += self.regrant
        self.regrant = []
        if granted:
            await asyncio.gather(*(self.signal_grant(r) for r in granted))

    async def signal_grant(self, request: SlotRequest) -> None:
        try:
            await workflow.get_external_workflow_handle(request.holder, run_id=request.run_id).signal(GRANTED_SIGNAL)
        except Exception:  # the holder no longer runs: its slot is free again
            held = self.holders.get(request.holder)
            if held is not None and held.run_id == request.run_id:
                del self.holders[request.holder]
                self.changed = True

    async def reclaim_gone(self, say: SlotsNarration) -> None:
        refs = [SlotRef(holder=h.holder, run_id=h.run_id) for h in self.holders.values()]
        if not refs:
            return
        gone = await self.step(
            BatchSlotActivities.check_slot_holders,
            CheckHoldersParams(holders=refs),
            deadline=workflow.now() + CALL_TIMEOUT * 4,
            text=StepText(
                f"Check which of {len(refs)} slot holders still run (reclaim the others' slots)",
                "checking the slot holders did not succeed in time",
            ),
        )
        for holder in gone:
            self.holders.pop(holder, None)
        if gone:
            say.reclaimed(gone)


class SlotsNarration:
    def __init__(self, tracker: ProgressTracker) -> None:
        self.track = tracker.set
        self.last_reclaimed: list[str] = []

    def now(self, slots: BatchSlotsWorkflow) -> None:
        holders = list(slots.holders.values())
        rows: list[Row] = [
            ("Limit", f"{slots.limit} (FULLSTORY_MAX_BATCHES_IN_PROGRESS; Fullstory queues beyond ~100)"),
            ("Held by", ", ".join(code(h.holder, 60) for h in holders[:10]) + (" ..." if len(holders) > 10 else "")),
            (
                "Waiting",
                f"{len(slots.waiting)}: " + ", ".join(code(w.holder, 60) for w in slots.waiting[:5])
                if slots.waiting
                else "nobody",
            ),
            ("Reclaim", f"every {span(slots.reclaim)} while anyone waits, the slots of holders that no longer run"),
            ("Reclaimed last", ", ".join(code(h, 60) for h in self.last_reclaimed[:5])),
            ("Granted so far", f"{slots.granted_total:,}"),
        ]
        self.track(
            "holding" if holders else "idle",
            f"{len(holders)}/{slots.limit} batch slots in use, {len(slots.waiting)} waiting",
            rows,
            records=len(holders),
        )

    def reclaimed(self, gone: list[str]) -> None:
        self.last_reclaimed = gone


def start_texts(args: BatchSlotsInput) -> tuple[str, str, list[Row]]:
    return (
        slots_summary(args.limit),
        "Org-wide batch slots (FULLSTORY_MAX_BATCHES_IN_PROGRESS)",
        [("Limit", str(args.limit)), ("Reclaim", f"every {span(timedelta(seconds=args.reclaim_seconds))}")],
    )


# --- The holder's side (BatchImportWorkflow) --------------------------------------------------------


class SlotHolder:
    """A batch job's slot, held from before its create until it finished (or the workflow ends).

    Use in a workflow that defines a `batch_slot_granted` signal calling `granted()`.
    """

    def __init__(self) -> None:
        self.slots_id: str | None = None
        self.is_granted = False
        self.released = False
        self.telling: asyncio.Future[None] | None = None

    def granted(self) -> None:
        self.is_granted = True

    async def acquire(self, owner: ProgressWorkflow, deadline: datetime) -> None:
        info = workflow.info()
        group = info.parent.workflow_id if info.parent is not None else info.workflow_id
        params = RequestSlotParams(holder=info.workflow_id, run_id=info.run_id, group=group)
        text = StepText(
            "Ask for a batch slot (FULLSTORY_MAX_BATCHES_IN_PROGRESS, held across all workflows)",
            "asking for a batch slot did not succeed in time",
        )
        while not self.is_granted:
            self.slots_id = await owner.step(
                BatchSlotActivities.request_batch_slot, params, deadline=deadline, text=text
            )
            try:
                await workflow.wait_condition(
                    lambda: self.is_granted, timeout=min(REREQUEST_EVERY, remaining(deadline))
                )
            except TimeoutError:
                if workflow.now() >= deadline:
                    await self.release()
                    raise owner.timeout_error("no batch slot became free before the deadline") from None
        # Told alongside the create (same workflow task), not before it: the create waits for nothing of ours.
        self.telling = asyncio.ensure_future(self.tell_parent())

    async def tell_parent(self) -> None:
        """A bulk import shows its batches holding a slot apart from those waiting for one."""
        parent = workflow.info().parent
        if parent is None or not workflow.patched(TELL_PARENT_PATCH):
            return
        try:
            await workflow.get_external_workflow_handle(parent.workflow_id, run_id=parent.run_id).signal(
                HELD_SIGNAL, workflow.info().workflow_id
            )
        except Exception:  # the parent is gone: nobody to tell
            workflow.logger.info("batch slot held: parent %s not running", parent.workflow_id)

    async def release(self) -> None:
        if self.telling is not None:
            await self.telling
        if self.slots_id is None or self.released:
            return
        self.released = True
        info = workflow.info()
        try:
            await workflow.get_external_workflow_handle(self.slots_id).signal(
                RELEASE_SIGNAL, SlotRef(holder=info.workflow_id, run_id=info.run_id)
            )
        except Exception:  # the slots workflow is gone: nothing to release
            workflow.logger.info("batch slot release: slots workflow %s not running", self.slots_id)
