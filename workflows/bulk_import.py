"""BulkImportWorkflow: millions of users or events from one file or object, in batches, under the org limit.

1. Stage: one activity streams the source once into chunks of `batch_size` items, validating every
   item (a bad line fails the import before any batch is created), under the destination where every
   worker can read them (activities/bulk_import.py).
2. Run: each chunk is a child `BatchImportWorkflow` with a deterministic id (`<parent id>-batch-NNNNN`):
   its Idempotency-Key comes from that id, so a chunk is never created twice, whatever crashes. At most
   `max_in_flight` children run at once; each holds one of the org's batch slots while its job is in
   progress (workflows/org_batch_limit.py), so all imports together stay under FULLSTORY_MAX_BATCHES_IN_PROGRESS.
3. Merge: one activity writes one NDJSON of every error record (with its `batch` and source `line`),
   the imports when asked, and `batches.ndjson`. Records never pass through workflow history.

Every `BATCHES_PER_RUN` children (or when Temporal suggests it) the run lets its children finish and
continues as new with its counts, so the history stays bounded for any number of batches.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, VersioningBehavior
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.bulk_import import (
        BulkActivities,
        MergeBulkBatchParams,
        MergeBulkRecordsParams,
        MergedRecords,
        StageBulkSourceParams,
        StagedSource,
        child_workflow_id,
        chunk_name,
    )
    from vocabulary import errors
    from vocabulary.policies import HEARTBEAT_TIMEOUT, LONG_RETRY
    from vocabulary.slot_messages import HELD_SIGNAL
    from vocabulary.texts import shorten
    from workflows.batch_job import BatchImportInput, BatchImportResult, BatchImportWorkflow
    from workflows.bulk_import_input import BulkImportInput, BulkImportResult, BulkProgress
    from workflows.bulk_narration import BulkNarration
    from workflows.steps import ProgressWorkflow, StepText, parse_input, remaining

# 2026-12: each batch's records are merged (with batch and line) as it ends, while the others run; the
# final merge then copies them (before: all of them at the end, ~0.2 s a batch after the last one ended).
MERGE_AS_BATCHES_END_PATCH = "bulk-merge-as-batches-end"
# 2026-12: a batch is told how long the earlier ones took at Fullstory (its wait checks just after that).
EXPECTED_DURATION_PATCH = "bulk-expected-duration"
DURATIONS_KEPT = 10
BATCH_MERGE_TIMEOUT = timedelta(minutes=30)
BATCH_MERGE_RETRY = RetryPolicy(  # a batch merge that fails is done again by the final merge
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=2), maximum_attempts=3
)
BATCHES_PER_RUN = 200  # children per run before continue-as-new (about 1,000 history events)
STAGE_TIMEOUT = timedelta(hours=6)  # one attempt at streaming the whole source
MERGE_TIMEOUT = timedelta(hours=6)


# --- The workflow --------------------------------------------------------------------------------


@workflow.defn(name="BulkImportWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class BulkImportWorkflow(ProgressWorkflow):
    timeout_error = errors.BATCH_JOB_TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.holding: set[str] = set()  # children (workflow ids) that told us they hold an org batch slot
        self.slots_changed = False
        self.merging: list[asyncio.Future[Any]] = []  # batch merges started as their batches ended

    @workflow.signal(name=HELD_SIGNAL)
    def batch_slot_held(self, child_id: str) -> None:
        self.holding.add(child_id)
        self.slots_changed = True

    @workflow.run
    async def run(self, input: dict[str, Any]) -> BulkImportResult:
        args = parse_input(BulkImportInput, input)
        me = workflow.info().workflow_id
        state = args.progress_so_far or BulkProgress(deadline=workflow.now() + args.timeout)
        say = BulkNarration(self._tracker, args, state, BATCHES_PER_RUN)
        if state.staged is None:
            state.staged = await self.stage(args, state, say, me)
        staged = state.staged
        await self.run_children(args, staged, state, say, me)
        if self.merging:  # done before the final merge (which would do them again) or a new run
            await asyncio.gather(*self.merging, return_exceptions=True)
        if state.next_batch < staged.batches:
            say.continuing()
            workflow.continue_as_new(
                args.model_copy(update={"progress_so_far": state.model_copy(update={"runs": state.runs + 1})})
            )
        say.merging()
        merged = await self.merge(args, staged, state, me)
        result = outcome(args, staged, state, merged)
        say.done(result)
        return result

    async def stage(self, args: BulkImportInput, state: BulkProgress, say: BulkNarration, me: str) -> StagedSource:
        """Phase 1: the source, read once and checked whole, in chunks under the destination."""
        await self.check_locations(source=args.source, destination=args.destination)
        say.staging()
        return await self.step(
            BulkActivities.stage_bulk_source,
            StageBulkSourceParams(
                kind=args.kind,
                source=args.source,
                shared=args.shared,
                batch_size=args.batch_size,
                destination=args.destination,
                name=me,
            ),
            deadline=state.deadline,
            start_to_close=STAGE_TIMEOUT,
            heartbeat=HEARTBEAT_TIMEOUT,
            retry=LONG_RETRY,
            text=say.stage_step(),
        )

    async def run_children(
        self, args: BulkImportInput, staged: StagedSource, state: BulkProgress, say: BulkNarration, me: str
    ) -> None:
        """Phase 2: one child batch import per chunk, at most `max_in_flight` at once, until all are done or
        this run has started `BATCHES_PER_RUN` (then it drains its children, to continue as new)."""
        running: dict[int, workflow.ChildWorkflowHandle[Any, BatchImportResult]] = {}
        started = 0
        while state.next_batch < staged.batches or running:
            draining = started >= BATCHES_PER_RUN or workflow.info().is_continue_as_new_suggested()
            while not draining and len(running) < args.max_in_flight and state.next_batch < staged.batches:
                index = state.next_batch
                running[index] = await workflow.start_child_workflow(
                    BatchImportWorkflow.run,
                    self.child_input(args, staged, state, index),
                    id=child_workflow_id(me, index),
                    static_summary=shorten(
                        f"Batch {index + 1:,}/{staged.batches:,} of bulk {args.kind} import {me}", 200
                    ),
                )
                state.next_batch += 1
                started += 1
                draining = started >= BATCHES_PER_RUN
            if not running:
                break
            say.running(len(running), self.held(running, me))
            # Wakes when a child ends, or when one tells it holds a slot (the UI then shows it apart).
            await workflow.wait_condition(lambda: self.slots_changed or any(h.done() for h in running.values()))
            self.slots_changed = False
            for index in [i for i, handle in running.items() if handle.done()]:
                self.holding.discard(child_workflow_id(me, index))
                result = self.count(state, running.pop(index))
                if result is not None and (result.errors_location or result.imports_location):
                    self.merge_as_it_ends(args, staged, index, result)
            say.running(len(running), self.held(running, me))

    def merge_as_it_ends(self, args: BulkImportInput, staged: StagedSource, index: int, result: Any) -> None:
        """Batch `index`'s records, with batch and line, merged now (not awaited here) rather than at the end."""
        if not workflow.patched(MERGE_AS_BATCHES_END_PATCH):
            return
        params = MergeBulkBatchParams(
            kind=args.kind,
            index=index,
            job_id=result.job_id,
            errors_location=result.errors_location,
            imports_location=result.imports_location,
            chunks_location=staged.chunks_location,
            destination=args.destination,
            name=workflow.info().workflow_id,
        )
        self.merging.append(
            workflow.start_activity_method(
                BulkActivities.merge_bulk_batch,
                params,
                summary=f"Merge the records of batch {index + 1:,} (with batch and line) as it ended",
                start_to_close_timeout=BATCH_MERGE_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=BATCH_MERGE_RETRY,
            )
        )

    def held(self, running: dict[int, Any], me: str) -> int:
        """How many of the running children hold an org batch slot (the others wait for one)."""
        return sum(child_workflow_id(me, index) in self.holding for index in running)

    async def merge(self, args: BulkImportInput, staged: StagedSource, state: BulkProgress, me: str) -> MergedRecords:
        """Phase 3: every batch's records into one NDJSON each (with batch and source line), and batches.ndjson."""
        return await self.step(
            BulkActivities.merge_bulk_records,
            MergeBulkRecordsParams(
                kind=args.kind,
                parent_workflow_id=me,
                batches=staged.batches,
                chunks_location=staged.chunks_location,
                destination=args.destination,
                name=me,
                collect_imports=args.collect_imports,
            ),
            deadline=max(state.deadline, workflow.now() + MERGE_TIMEOUT),
            start_to_close=MERGE_TIMEOUT,
            heartbeat=HEARTBEAT_TIMEOUT,
            retry=LONG_RETRY,
            text=StepText(
                f"Merge the records of {staged.batches:,} batches into one NDJSON (with batch and line)",
                "merging the batches' records did not finish in time",
            ),
        )

    def child_input(self, args: BulkImportInput, staged: StagedSource, state: BulkProgress, index: int) -> Any:
        expected = None
        if state.durations and workflow.patched(EXPECTED_DURATION_PATCH):
            expected = timedelta(seconds=sorted(state.durations)[len(state.durations) // 2])  # the median
        return BatchImportInput(
            expected_duration=expected,
            kind=args.kind,
            requests_url=f"{staged.chunks_location}/{chunk_name(index)}",
            destination=staged.batches_destination,
            collect_imports=args.collect_imports,
            timeout=remaining(state.deadline),
        )

    def count(
        self, state: BulkProgress, handle: workflow.ChildWorkflowHandle[Any, BatchImportResult]
    ) -> BatchImportResult | None:
        """A finished batch in the counts; its result (None when its workflow failed)."""
        try:
            result = handle.result()
        except ChildWorkflowError as e:
            state.done += 1
            state.failed += 1
            workflow.logger.warning("batch %s failed: %s", handle.id, getattr(e.cause, "message", e))
            return None
        state.done += 1
        if result.status != "COMPLETED":
            state.failed += 1
        state.imports += result.imports
        state.errors += result.errors
        for c, n in result.error_codes.items():
            state.error_codes[c] = state.error_codes.get(c, 0) + n
        state.records_collected += result.records_collected
        if result.created is not None and result.finished is not None and result.finished > result.created:
            state.durations = [*state.durations, (result.finished - result.created).total_seconds()][-DURATIONS_KEPT:]
        return result


def outcome(
    args: BulkImportInput, staged: StagedSource, state: BulkProgress, merged: MergedRecords
) -> BulkImportResult:
    """The result: COMPLETED only when every batch completed with no error."""
    ok = state.failed == 0 and state.errors == 0 and state.done == staged.batches
    return BulkImportResult(
        kind=args.kind,
        status="COMPLETED" if ok else "FAILED",
        batches=staged.batches,
        items=staged.items,
        imports=state.imports,
        errors=state.errors,
        failed_batches=state.failed,
        error_codes=state.error_codes,
        errors_location=merged.errors_location,
        imports_location=merged.imports_location,
        batches_location=merged.batches_location,
        records_collected=merged.errors + merged.imports,
    )
