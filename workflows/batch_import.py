"""BatchImportWorkflow: create (or adopt) a batch import job, wait for it, collect its records.

One code path for `events` and `users`. Steps:
1. create the job from `requests`/`requests_url` (Idempotency-Key from the workflow id), or adopt `job_id`;
2. wait for it: one status check per activity attempt, the retry policy is the loop;
3. collect `/errors` (when any failed) and, if asked, `/imports` into NDJSON files.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.activity_types import (
        BATCH_JOB_TIMEOUT,
        COLLECT_BATCH_RECORDS,
        CREATE_BATCH_JOB,
        WAIT_FOR_BATCH_JOB,
        BatchJob,
        BatchJobDetails,
        CollectBatchRecordsParams,
        CollectedRecords,
        CreateBatchJobParams,
        WaitForBatchJobParams,
    )
    from workflows.common import ProgressWorkflow, parse_input, poll_retry, run_activity
    from workflows.models import BatchImportInput, BatchImportResult, idempotency_key
    from workflows.ui_text import at, clock, code, location, next_check, span

CREATE_TIMEOUT = timedelta(minutes=3)  # uploads up to 50,000 items
# A page walk: heartbeats every ~2 s; a dead worker's walk moves on within the heartbeat timeout.
WALK_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
WALK_TIMEOUT = timedelta(hours=6)


@workflow.defn(name="BatchImportWorkflow")
class BatchImportWorkflow(ProgressWorkflow):
    @workflow.run
    async def run(self, input: dict[str, Any]) -> BatchImportResult:
        args = parse_input(BatchImportInput, input)
        deadline = workflow.now() + args.timeout
        track = self._tracker.set
        kind = args.kind

        collected = "error records (if any)" + (" and the imported items" if args.collect_imports else "")
        then = f"collect the {collected} to NDJSON under {location(args.destination)}"
        deadline_row = ("Deadline", f"{at(deadline)} ({span(args.timeout)} after start)")

        if args.job_id is not None:
            job_id = args.job_id
        else:
            n = f"{len(args.requests)} requests" if args.requests else f"requests from {args.requests_url}"
            n_md = f"{len(args.requests)} requests" if args.requests else f"the requests in {location(args.requests_url)}"
            track("creating", f"Creating a {kind} batch job from {n_md}", [
                ("Idempotency", "the key comes from the workflow id: a retried create never makes a second job"),
                deadline_row, ("Then", f"wait for the job, then {then}")])
            job = await self._call(
                CREATE_BATCH_JOB,
                CreateBatchJobParams(kind=kind, requests=args.requests, requests_url=args.requests_url,
                                     shared=args.shared, idempotency_key=idempotency_key(workflow.info().workflow_id)),
                BatchJob, deadline, f"Create {kind} batch job from {n}",
                f"creating the {kind} batch job did not succeed within {args.timeout}",
                start_to_close=CREATE_TIMEOUT,
            )
            job_id = job.id

        track("waiting", f"Waiting for {kind} batch job {code(job_id)} to finish", [
            ("Status", "PROCESSING (Fullstory's batch API gives no percent, only counts at the end)"),
            ("Next check", next_check(args.max_poll_interval)),
            ("Waiting since", clock(workflow.now())),
            deadline_row,
            ("Then", then),
        ], job_id=job_id, status="PROCESSING", waiting_until=deadline)
        status: BatchJobDetails = await self._call(
            WAIT_FOR_BATCH_JOB,
            WaitForBatchJobParams(kind=kind, job_id=job_id, max_poll_seconds=args.max_poll_interval.total_seconds()),
            BatchJobDetails, deadline,
            f"Wait for {kind} batch job {job_id}: checks ≤ {span(args.max_poll_interval)} apart (or per Retry-After)",
            f"{kind} batch job {job_id} did not finish within {args.timeout}",
            retry=poll_retry(args.max_poll_interval),
        )
        job = status.job
        result = BatchImportResult(job_id=job_id, kind=kind, status=job.status, imports=status.imports,
                                   errors=status.errors, created=job.created, finished=job.finished)
        counts = f"{job.status}: {status.imports:,} imported, {status.errors:,} failed"
        track("finished", f"{kind.capitalize()} batch job {code(job_id)} {counts}",
              status=job.status, waiting_until=None, percent=100.0)

        if job.status == "FAILED" or status.errors > 0:
            errors = await self._collect(args, job_id, "errors", deadline, counts)
            result.error_codes = errors.codes
            result.errors_location = errors.location
            result.records_collected += errors.records
        if args.collect_imports:
            imports = await self._collect(args, job_id, "imports", deadline, counts)
            result.imports_location = imports.location
            result.records_collected += imports.records

        top = sorted(result.error_codes.items(), key=lambda kv: -kv[1])[:5]
        track("done", f"Done: {kind} batch job {code(job_id)} {counts}", [
            ("Error codes", ", ".join(f"{code(c, 40)} × {n:,}" for c, n in top)
             + (f" and {len(result.error_codes) - len(top)} more" if len(result.error_codes) > len(top) else "")),
            ("Errors at", code(result.errors_location, 120) if result.errors_location else ""),
            ("Imports at", code(result.imports_location, 120) if result.imports_location else ""),
            ("Records collected", f"{result.records_collected:,}"),
        ], records=result.records_collected)
        return result

    async def _collect(self, args: BatchImportInput, job_id: str, which: str, deadline: Any,
                       counts: str) -> CollectedRecords:
        self._tracker.set(f"collecting_{which}",
                          f"Collecting the {which} of {args.kind} batch job {code(job_id)} to NDJSON", [
                              ("Job", counts),
                              ("Progress", ("page by page; the records and bytes written so far are the "
                                            "*Last Heartbeat Details* on the *Pending Activities* tab")),
                              ("To", (f"`{which}.ndjson` under {location(args.destination)}, "
                                      "visible under that name only when complete")),
                          ])
        return await self._call(
            COLLECT_BATCH_RECORDS,
            CollectBatchRecordsParams(kind=args.kind, job_id=job_id, which=which, destination=args.destination),
            # Collecting gets its own time even when the wait used most of the deadline.
            CollectedRecords, max(deadline, workflow.now() + WALK_TIMEOUT),
            f"Collect the {which} of {args.kind} batch job {job_id} to NDJSON (resumes from its heartbeat)",
            f"collecting the {which} of {args.kind} batch job {job_id} did not finish in time",
            start_to_close=WALK_TIMEOUT, heartbeat=WALK_HEARTBEAT_TIMEOUT,
        )

    async def _call(self, activity: str, params: Any, result_type: type, deadline: Any, summary: str,
                    timeout_message: str, **options: Any) -> Any:
        return await run_activity(self._tracker, activity, params, result_type, deadline=deadline, summary=summary,
                                  timeout_message=timeout_message, timeout_type=BATCH_JOB_TIMEOUT, **options)
