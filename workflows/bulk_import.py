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

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator
from temporalio import workflow
from temporalio.common import VersioningBehavior
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.bulk_import import (
        BulkActivities,
        MergeBulkRecordsParams,
        MergedRecords,
        StageBulkSourceParams,
        StagedSource,
        child_workflow_id,
        chunk_name,
    )
    from vocabulary import errors
    from vocabulary.contract import (
        LOCATION_HELP,
        MAX_BATCH_REQUESTS,
        BatchKind,
        InputModel,
        PositiveDuration,
        ResultModel,
    )
    from vocabulary.policies import HEARTBEAT_TIMEOUT, LONG_RETRY
    from vocabulary.slot_messages import HELD_SIGNAL
    from vocabulary.texts import LIVE_STATUS_ROW, Row, at, code, location, plain, shorten, span
    from workflows.batch_job import BatchImportInput, BatchImportResult, BatchImportWorkflow
    from workflows.steps import ProgressTracker, ProgressWorkflow, StepText, parse_input, remaining

BATCHES_PER_RUN = 200  # children per run before continue-as-new (about 1,000 history events)
STAGE_TIMEOUT = timedelta(hours=6)  # one attempt at streaming the whole source
MERGE_TIMEOUT = timedelta(hours=6)


# --- The contract --------------------------------------------------------------------------------


class BulkProgress(BaseModel):
    """What a run carries into the next (continue-as-new): where it is, and the counts so far."""

    deadline: datetime
    staged: StagedSource | None = None
    next_batch: int = 0
    done: int = 0  # batches finished, whatever the outcome
    failed: int = 0  # of those: the job FAILED (some items failed) or the batch's workflow failed
    imports: int = 0
    errors: int = 0
    error_codes: dict[str, int] = Field(default_factory=dict)
    records_collected: int = 0
    runs: int = 1


class BulkImportInput(InputModel):
    """Input of `BulkImportWorkflow`: import every item of one file or object, in batches."""

    kind: BatchKind = Field(description="Which batch API: `events` or `users`.")
    source: str = Field(
        min_length=1,
        description=f"Where the items are: {LOCATION_HELP}; NDJSON (one item a line) or a JSON array, "
        "optionally gzip-compressed (.gz or by its first bytes).",
    )
    shared: dict[str, Any] | None = Field(
        default=None, description="Events only: the `shared` object sent with every batch."
    )
    batch_size: int = Field(
        default=MAX_BATCH_REQUESTS, ge=1, le=MAX_BATCH_REQUESTS, description="Items per batch (1..50,000)."
    )
    max_in_flight: int = Field(
        default=10, ge=1, le=1000, description="This import's batches in progress at once (the org limit applies too)."
    )
    destination: str | None = Field(
        default=None,
        description=f"Where the chunks, the merged error report and the batch results go: {LOCATION_HELP}; "
        "defaults to the worker's FULLSTORY_DATA_DIR.",
    )
    collect_imports: bool = Field(default=False, description="Also collect (and merge) the imported items.")
    timeout: PositiveDuration = Field(
        default=timedelta(hours=72), description="Overall deadline, ISO 8601 (P3D) or seconds; default 72 h."
    )
    progress_so_far: BulkProgress | None = Field(default=None, description="Set by continue-as-new; never by hand.")

    @model_validator(mode="after")
    def _shared_events_only(self) -> BulkImportInput:
        if self.shared is not None and self.kind != "events":
            raise ValueError("shared is only allowed for events")
        return self


HIDDEN_FIELDS = frozenset({"progress_so_far"})


class BulkImportResult(ResultModel):
    """Result of `BulkImportWorkflow`. The records themselves are in the *_location files."""

    kind: BatchKind
    status: str = Field(description="COMPLETED when every batch completed with no errors, else FAILED.")
    batches: int
    items: int
    imports: int
    errors: int
    failed_batches: int = 0
    error_codes: dict[str, int] = Field(default_factory=dict)
    errors_location: str | None = None
    imports_location: str | None = None
    batches_location: str | None = None
    records_collected: int = 0


def workflow_id_for(args: BulkImportInput, unique: str) -> str:
    return f"fullstory-bulk-{args.kind}-{unique}"


# --- The workflow --------------------------------------------------------------------------------


@workflow.defn(name="BulkImportWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class BulkImportWorkflow(ProgressWorkflow):
    timeout_error = errors.BATCH_JOB_TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.holding: set[str] = set()  # children (workflow ids) that told us they hold an org batch slot
        self.slots_changed = False

    @workflow.signal(name=HELD_SIGNAL)
    def batch_slot_held(self, child_id: str) -> None:
        self.holding.add(child_id)
        self.slots_changed = True

    @workflow.run
    async def run(self, input: dict[str, Any]) -> BulkImportResult:
        args = parse_input(BulkImportInput, input)
        me = workflow.info().workflow_id
        state = args.progress_so_far or BulkProgress(deadline=workflow.now() + args.timeout)
        say = BulkNarration(self._tracker, args, state)
        if state.staged is None:
            state.staged = await self.stage(args, state, say, me)
        staged = state.staged
        await self.run_children(args, staged, state, say, me)
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
                self.count(state, running.pop(index))
            say.running(len(running), self.held(running, me))

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
        return BatchImportInput(
            kind=args.kind,
            requests_url=f"{staged.chunks_location}/{chunk_name(index)}",
            destination=staged.batches_destination,
            collect_imports=args.collect_imports,
            timeout=remaining(state.deadline),
        )

    def count(self, state: BulkProgress, handle: workflow.ChildWorkflowHandle[Any, BatchImportResult]) -> None:
        try:
            result = handle.result()
        except ChildWorkflowError as e:
            state.done += 1
            state.failed += 1
            workflow.logger.warning("batch %s failed: %s", handle.id, getattr(e.cause, "message", e))
            return
        state.done += 1
        if result.status != "COMPLETED":
            state.failed += 1
        state.imports += result.imports
        state.errors += result.errors
        for c, n in result.error_codes.items():
            state.error_codes[c] = state.error_codes.get(c, 0) + n
        state.records_collected += result.records_collected


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


# --- What the UI says ----------------------------------------------------------------------------


class BulkNarration:
    def __init__(self, tracker: ProgressTracker, args: BulkImportInput, state: BulkProgress) -> None:
        self.track, self.args, self.state = tracker.set, args, state
        self.deadline_row: Row = ("Deadline", at(state.deadline))

    def staging(self) -> None:
        self.track(
            "staging",
            f"Staging the {self.args.kind} in {location(self.args.source)} in chunks of {self.args.batch_size:,}",
            [
                ("How", "the source is read once, every item checked; no batch is created before it all is"),
                ("Chunks to", location(self.args.destination)),
                self.deadline_row,
            ],
        )

    def stage_step(self) -> StepText:
        return StepText(
            f"Stage {self.args.source} in chunks of {self.args.batch_size:,} (items so far: the heartbeat)",
            f"staging {self.args.source} did not finish in time",
        )

    def running(self, in_flight: int, holding: int) -> None:
        s, staged = self.state, self.state.staged
        assert staged is not None
        finished = s.done
        top = sorted(s.error_codes.items(), key=lambda kv: -kv[1])[:5]
        waiting = in_flight - holding
        self.track(
            "running",
            f"Bulk {self.args.kind} import: {finished:,} of {staged.batches:,} batches finished, "
            f"{holding} running at Fullstory, {waiting} waiting for a batch slot",
            [
                ("Staged", f"{staged.batches:,} batches, {staged.items:,} items"),
                ("Running at Fullstory", f"{holding} (each holds an org batch slot)"),
                (
                    "Waiting for a slot",
                    f"{waiting} (FULLSTORY_MAX_BATCHES_IN_PROGRESS, shared by every import of this API key)",
                ),
                ("Started", f"{in_flight} at once at most {self.args.max_in_flight} (max_in_flight)"),
                ("Finished", f"{s.done:,} ({s.failed:,} with failed items or failed)"),
                ("Items so far", f"{s.imports:,} imported, {s.errors:,} failed"),
                ("Error codes", ", ".join(f"{code(c, 40)} × {n:,}" for c, n in top)),
                ("Waiting for", "the next batch to finish" if in_flight else "nothing"),
                ("Run", f"{s.runs} (continues as new every {BATCHES_PER_RUN} batches)"),
                self.deadline_row,
            ],
            records=s.imports + s.errors,
            percent=round(100.0 * finished / max(staged.batches, 1), 1),
            holding_slot=holding,
            waiting_for_slot=waiting,
        )

    def continuing(self) -> None:
        self.track("continuing", "Continuing as new with the counts so far (keeps history bounded)")

    def merging(self) -> None:
        self.track(
            "merging",
            "Merging every batch's error records into one NDJSON (each with its batch and source line)",
            [("To", location(self.args.destination))],
        )

    def done(self, result: BulkImportResult) -> None:
        self.track(
            "done",
            f"Done: bulk {self.args.kind} import {result.status}: {result.batches:,} batches, "
            f"{result.imports:,} imported, {result.errors:,} failed",
            [
                ("Errors at", code(result.errors_location, 120) if result.errors_location else ""),
                ("Batches at", code(result.batches_location, 120) if result.batches_location else ""),
                ("Imports at", code(result.imports_location, 120) if result.imports_location else ""),
            ],
            records=result.records_collected,
            percent=100.0,
            status=result.status,
        )


def start_texts(args: BulkImportInput) -> tuple[str, str, list[Row]]:
    kind = args.kind.capitalize()
    rows: list[Row] = [
        ("Source", location(args.source)),
        ("Batches", f"{args.batch_size:,} items each, at most {args.max_in_flight} in progress"),
        ("Shared", f"{len(args.shared)} field(s) sent with every batch (values not shown)" if args.shared else ""),
        ("Reports to", f"{location(args.destination)}: errors.ndjson (with batch and line), batches.ndjson"),
        ("Deadline", f"{span(args.timeout)} after start"),
        ("Steps", "stage the source in chunks → one child batch import per chunk → merge the error records"),
        LIVE_STATUS_ROW,
    ]
    src = shorten(plain(location(args.source, 200)), 80)
    return f"{kind} bulk import from {src}", f"{kind} bulk import", rows
