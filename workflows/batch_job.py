"""BatchImportWorkflow: create (or adopt) a batch import job, wait for it, collect its records.

One code path for `events` and `users`. The steps, as Fullstory's API has them:
1. create the job from `requests`/`requests_url` (Idempotency-Key from the workflow id), or adopt `job_id`;
2. wait for it: one status check per activity attempt, the retry policy is the loop;
3. collect `/errors` (when any failed) and, if asked, `/imports` into NDJSON files.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from activities.batch_job import (
        BatchActivities,
        BatchJobDetails,
        CollectBatchRecordsParams,
        CreateBatchJobParams,
        WaitForBatchJobParams,
    )
    from vocabulary import errors
    from vocabulary.contract import (
        idempotency_key,
    )
    from vocabulary.policies import HEARTBEAT_TIMEOUT, LONG_RETRY, poll_retry
    from vocabulary.slot_messages import GRANTED_SIGNAL
    from vocabulary.texts import (
        Row,
        at,
        clock,
        code,
        location,
        next_check,
        span,
    )
    from workflows.batch_job_input import BatchImportInput, BatchImportResult
    from workflows.org_batch_limit import BATCH_SLOTS_PATCH, SlotHolder
    from workflows.steps import ProgressTracker, ProgressWorkflow, StepText, parse_input

CREATE_TIMEOUT = timedelta(minutes=3)  # uploads up to 50,000 items
WALK_TIMEOUT = timedelta(hours=6)


# --- The workflow --------------------------------------------------------------------------------


@workflow.defn(name="BatchImportWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class BatchImportWorkflow(ProgressWorkflow):
    timeout_error = errors.BATCH_JOB_TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.slot = SlotHolder()  # one of the org's batch slots (workflows/org_batch_limit.py)

    @workflow.signal(name=GRANTED_SIGNAL)
    def batch_slot_granted(self) -> None:
        self.slot.granted()

    @workflow.run
    async def run(self, input: dict[str, Any]) -> BatchImportResult:
        args = parse_input(BatchImportInput, input)
        deadline = workflow.now() + args.timeout
        say = BatchNarration(self._tracker, args, deadline)
        await self.check_locations(destination=args.destination, requests_url=args.requests_url)

        try:
            job_id = args.job_id if args.job_id is not None else await self.create(args, deadline, say)
            say.waiting(job_id)
            status = await self.step(
                BatchActivities.wait_for_batch_job,
                WaitForBatchJobParams(
                    kind=args.kind,
                    job_id=job_id,
                    max_poll_seconds=args.max_poll_interval.total_seconds(),
                    expected_seconds=args.expected_duration.total_seconds() if args.expected_duration else None,
                ),
                deadline=deadline,
                retry=poll_retry(args.max_poll_interval),
                text=say.wait_step(job_id),
            )
        finally:
            await self.slot.release()  # the job finished or failed: the next batch may start
        result = result_of(job_id, args, status)
        say.finished(result)

        if result.status == "FAILED" or result.errors > 0:
            await self.collect(args, result, "errors", deadline, say)
        if args.collect_imports:
            await self.collect(args, result, "imports", deadline, say)

        say.done(result)
        return result

    async def create(self, args: BatchImportInput, deadline: datetime, say: BatchNarration) -> str:
        """Take one of the org's batch slots, then create the job; its id."""
        if workflow.patched(BATCH_SLOTS_PATCH):
            say.waiting_for_slot()
            await self.slot.acquire(self, deadline)
        say.creating()
        job = await self.step(
            BatchActivities.create_batch_job,
            CreateBatchJobParams(
                kind=args.kind,
                requests=args.requests,
                requests_url=args.requests_url,
                shared=args.shared,
                idempotency_key=idempotency_key(workflow.info().workflow_id),
            ),
            deadline=deadline,
            start_to_close=CREATE_TIMEOUT,
            heartbeat=HEARTBEAT_TIMEOUT,
            text=say.create_step(),
        )
        return job.id

    async def collect(
        self,
        args: BatchImportInput,
        result: BatchImportResult,
        which: Literal["errors", "imports"],
        deadline: datetime,
        say: BatchNarration,
    ) -> None:
        """Collect the job's `/errors` or `/imports` to an NDJSON file; `result` counts them and says where."""
        say.collecting(result, which)
        records = await self.step(
            BatchActivities.collect_batch_records,
            CollectBatchRecordsParams(kind=args.kind, job_id=result.job_id, which=which, destination=args.destination),
            # Collecting gets its own time even when the wait used most of the deadline.
            deadline=max(deadline, workflow.now() + WALK_TIMEOUT),
            start_to_close=WALK_TIMEOUT,
            heartbeat=HEARTBEAT_TIMEOUT,
            retry=LONG_RETRY,
            text=say.collect_step(result.job_id, which),
        )
        if which == "errors":
            result.error_codes, result.errors_location = records.codes, records.location
        else:
            result.imports_location = records.location
        result.records_collected += records.records


def result_of(job_id: str, args: BatchImportInput, status: BatchJobDetails) -> BatchImportResult:
    job = status.job
    return BatchImportResult(
        job_id=job_id,
        kind=args.kind,
        status=job.status,
        imports=status.imports,
        errors=status.errors,
        created=job.created,
        finished=job.finished,
    )


# --- What the UI says ----------------------------------------------------------------------------


class BatchNarration:
    """The UI's current details and each step's summary and timeout text, for one run."""

    def __init__(self, tracker: ProgressTracker, args: BatchImportInput, deadline: datetime) -> None:
        self.track, self.args, self.deadline = tracker.set, args, deadline
        self.kind = args.kind
        collected = "error records (if any)" + (" and the imported items" if args.collect_imports else "")
        self.then = f"collect the {collected} to NDJSON under {location(args.destination)}"
        self.deadline_row: Row = ("Deadline", f"{at(deadline)} ({span(args.timeout)} after start)")
        self.counts = ""

    def waiting_for_slot(self) -> None:
        self.track(
            "waiting_for_slot",
            "Waiting for a batch slot: at most FULLSTORY_MAX_BATCHES_IN_PROGRESS batch jobs run at once",
            [
                ("Why", "Fullstory queues more than ~100 batch jobs in progress per org and refuses creates at 200"),
                ("Slots", "held across all workflows and workers: see the `BatchSlotsWorkflow` of this task queue"),
                self.deadline_row,
                ("Then", f"create the job, wait for it, then {self.then}"),
            ],
        )

    def creating(self) -> None:
        args = self.args
        n_md = f"{len(args.requests)} requests" if args.requests else f"the requests in {location(args.requests_url)}"
        self.track(
            "creating",
            f"Creating a {self.kind} batch job from {n_md}",
            [
                ("Idempotency", "the key comes from the workflow id: a retried create never makes a second job"),
                self.deadline_row,
                ("Then", f"wait for the job, then {self.then}"),
            ],
        )

    def create_step(self) -> StepText:
        args = self.args
        n = f"{len(args.requests)} requests" if args.requests else f"requests from {args.requests_url}"
        return StepText(
            f"Create {self.kind} batch job from {n}",
            f"creating the {self.kind} batch job did not succeed within {args.timeout}",
        )

    def waiting(self, job_id: str) -> None:
        self.track(
            "waiting",
            f"Waiting for {self.kind} batch job {code(job_id)} to finish",
            [
                ("Status", "PROCESSING (Fullstory's batch API gives no percent, only counts at the end)"),
                ("Next check", next_check(self.args.max_poll_interval)),
                ("Waiting since", clock(workflow.now())),
                self.deadline_row,
                ("Then", self.then),
            ],
            job_id=job_id,
            status="PROCESSING",
            waiting_until=self.deadline,
        )

    def wait_step(self, job_id: str) -> StepText:
        return StepText(
            f"Wait for {self.kind} batch job {job_id}: checks ≤ {span(self.args.max_poll_interval)} "
            "apart (or per Retry-After)",
            f"{self.kind} batch job {job_id} did not finish within {self.args.timeout}",
        )

    def finished(self, result: BatchImportResult) -> None:
        self.counts = f"{result.status}: {result.imports:,} imported, {result.errors:,} failed"
        self.track(
            "finished",
            f"{self.kind.capitalize()} batch job {code(result.job_id)} {self.counts}",
            status=result.status,
            waiting_until=None,
            percent=100.0,
        )

    def collecting(self, result: BatchImportResult, which: str) -> None:
        to = f"`{which}.ndjson` under {location(self.args.destination)}, visible under that name only when complete"
        self.track(
            f"collecting_{which}",
            f"Collecting the {which} of {self.kind} batch job {code(result.job_id)} to NDJSON",
            [
                ("Job", self.counts),
                (
                    "Progress",
                    (
                        "page by page; the records and bytes written so far are the "
                        "*Last Heartbeat Details* on the *Pending Activities* tab"
                    ),
                ),
                ("To", to),
            ],
        )

    def collect_step(self, job_id: str, which: str) -> StepText:
        return StepText(
            f"Collect the {which} of {self.kind} batch job {job_id} to NDJSON (resumes from its heartbeat)",
            f"collecting the {which} of {self.kind} batch job {job_id} did not finish in time",
        )

    def done(self, result: BatchImportResult) -> None:
        top = sorted(result.error_codes.items(), key=lambda kv: -kv[1])[:5]
        more = len(result.error_codes) - len(top)
        codes = ", ".join(f"{code(c, 40)} × {n:,}" for c, n in top) + (f" and {more} more" if more > 0 else "")
        self.track(
            "done",
            f"Done: {self.kind} batch job {code(result.job_id)} {self.counts}",
            [
                ("Error codes", codes),
                ("Errors at", code(result.errors_location, 120) if result.errors_location else ""),
                ("Imports at", code(result.imports_location, 120) if result.imports_location else ""),
                ("Records collected", f"{result.records_collected:,}"),
            ],
            records=result.records_collected,
        )
