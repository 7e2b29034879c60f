"""BatchImportWorkflow: create (or adopt) a batch import job, wait for it, collect its records.

One code path for `events` and `users`. The steps, as Fullstory's API has them:
1. create the job from `requests`/`requests_url` (Idempotency-Key from the workflow id), or adopt `job_id`;
2. wait for it: one status check per activity attempt, the retry policy is the loop;
3. collect `/errors` (when any failed) and, if asked, `/imports` into NDJSON files.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, model_validator
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
        LOCATION_HELP,
        MAX_BATCH_REQUESTS,
        BatchJobStatus,
        BatchKind,
        InputModel,
        PollInterval,
        PositiveDuration,
        ResultModel,
        idempotency_key,
    )
    from vocabulary.policies import HEARTBEAT_TIMEOUT, LONG_RETRY, poll_retry
    from vocabulary.slot_messages import GRANTED_SIGNAL
    from vocabulary.texts import (
        LIVE_STATUS_ROW,
        Row,
        at,
        clock,
        code,
        location,
        next_check,
        plain,
        shorten,
        span,
        status_checks_row,
    )
    from workflows.org_batch_limit import BATCH_SLOTS_PATCH, SlotHolder
    from workflows.steps import ProgressTracker, ProgressWorkflow, StepText, parse_input

CREATE_TIMEOUT = timedelta(minutes=3)  # uploads up to 50,000 items
WALK_TIMEOUT = timedelta(hours=6)


# --- The contract --------------------------------------------------------------------------------


class BatchImportInput(InputModel):
    """Input of `BatchImportWorkflow`: create a batch import job or watch an existing one."""

    kind: BatchKind = Field(description="Which batch API: `events` or `users`.")
    job_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Watch this existing job instead of creating one.",
    )
    requests: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BATCH_REQUESTS,
        description="Create a job from these items (1..50,000). For big batches prefer `requests_url`.",
    )
    shared: dict[str, Any] | None = Field(
        default=None, description="Events only: the `shared` object sent beside `requests`."
    )
    requests_url: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Create a job from a JSON file (a list of items, or {requests, shared}) readable by the worker: "
            f"{LOCATION_HELP}; keeps big batches out of workflow history."
        ),
    )
    destination: str | None = Field(
        default=None,
        description=f"Where error/import records are written as NDJSON: {LOCATION_HELP}; "
        "defaults to the worker's FULLSTORY_DATA_DIR.",
    )
    collect_imports: bool = Field(default=False, description="Also collect the imported items (`/imports`).")
    timeout: PositiveDuration = Field(
        default=timedelta(hours=24),
        description="Overall deadline for the job to finish, ISO 8601 (PT6H) or seconds.",
    )
    max_poll_interval: PollInterval = Field(
        default=timedelta(seconds=60),
        description="Longest wait between status checks when the server sends no Retry-After.",
    )
    expected_duration: PositiveDuration | None = Field(
        default=None, description="Set by a bulk import: how long its earlier batches took; checked then too."
    )

    @model_validator(mode="after")
    def _one_source(self) -> BatchImportInput:
        given = [n for n in ("job_id", "requests", "requests_url") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of job_id (watch an existing job), requests (create one) "
                f"or requests_url (create one from a file); got {given or 'none'}"
            )
        if self.shared is not None and (self.kind != "events" or self.job_id is not None):
            raise ValueError("shared is only allowed when creating an events batch")
        return self


HIDDEN_FIELDS = frozenset({"expected_duration"})


class BatchImportResult(ResultModel):
    """Result of `BatchImportWorkflow`. Records themselves live at the *_location files."""

    job_id: str
    kind: BatchKind
    status: BatchJobStatus
    imports: int
    errors: int
    created: datetime | None = None
    finished: datetime | None = None
    error_codes: dict[str, int] = Field(default_factory=dict)
    errors_location: str | None = None
    imports_location: str | None = None
    records_collected: int = 0


def batch_workflow_id(kind: str, job_id: str) -> str:
    """Deterministic id for watching a job: a second start joins the first."""
    return f"fullstory-batch-{kind}-{job_id}"


def workflow_id_for(args: BatchImportInput, unique: str) -> str:
    """Watching a job: its deterministic id. Creating one: a new id (`unique`), so each start creates."""
    if args.job_id:
        return batch_workflow_id(args.kind, args.job_id)
    return f"fullstory-batch-{args.kind}-new-{unique}"


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


def start_texts(args: BatchImportInput) -> tuple[str, str, list[Row]]:
    """(summary, headline, rows) for the UI's static texts, set by whoever starts the workflow."""
    kind = args.kind.capitalize()
    if args.job_id is not None:
        source = f"job {args.job_id}"
        job_row = ("Job", f"watch existing job {code(args.job_id)}")
    elif args.requests is not None:
        n = len(args.requests)
        source = f"{n:,} request{'s' if n != 1 else ''}"
        job_row = ("Job", f"create one from {source} given inline (contents not shown)")
    else:
        source = f"requests from {shorten(args.requests_url or '', 60)}"
        job_row = ("Job", f"create one from the requests in {location(args.requests_url)}")
    collected = "error records" + (" and imported items" if args.collect_imports else "")
    rows = [
        job_row,
        ("Shared", f"{len(args.shared)} field(s) sent with every request (values not shown)" if args.shared else ""),
        ("Records to", f"{location(args.destination)} as NDJSON ({collected})"),
        ("Deadline", f"{span(args.timeout)} after start"),
        status_checks_row(args.max_poll_interval),
        (
            "Steps",
            ("create the job (Idempotency-Key from the workflow id) → " if args.job_id is None else "")
            + f"wait until it finishes → collect the {collected}",
        ),
        LIVE_STATUS_ROW,
    ]
    dest = f" to {shorten(plain(location(args.destination, 200)), 60)}" if args.destination else ""
    return f"{kind} batch import, {source}{dest}", f"{kind} batch import", rows
