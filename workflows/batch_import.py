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

        if args.job_id is not None:
            job_id = args.job_id
        else:
            n = f"{len(args.requests)} requests" if args.requests else f"requests from {args.requests_url}"
            track("creating", f"creating a {kind} batch job from {n}")
            job = await self._call(
                CREATE_BATCH_JOB,
                CreateBatchJobParams(kind=kind, requests=args.requests, requests_url=args.requests_url,
                                     shared=args.shared, idempotency_key=idempotency_key(workflow.info().workflow_id)),
                BatchJob, deadline, f"Create {kind} batch job ({n})",
                f"creating the {kind} batch job did not succeed within {args.timeout}",
                start_to_close=CREATE_TIMEOUT,
            )
            job_id = job.id

        track("waiting", f"waiting for {kind} batch job {job_id} to finish (status checked every "
              f"<= {args.max_poll_interval.total_seconds():g}s or as the server's Retry-After asks; "
              f"deadline {deadline.isoformat()})", job_id=job_id, status="PROCESSING", waiting_until=deadline)
        status: BatchJobDetails = await self._call(
            WAIT_FOR_BATCH_JOB,
            WaitForBatchJobParams(kind=kind, job_id=job_id, max_poll_seconds=args.max_poll_interval.total_seconds()),
            BatchJobDetails, deadline, f"Wait for {kind} batch job {job_id} to finish",
            f"{kind} batch job {job_id} did not finish within {args.timeout}",
            retry=poll_retry(args.max_poll_interval),
        )
        job = status.job
        result = BatchImportResult(job_id=job_id, kind=kind, status=job.status, imports=status.imports,
                                   errors=status.errors, created=job.created, finished=job.finished)
        track("finished", f"{kind} batch job {job_id} {job.status}: {status.imports} imported, "
              f"{status.errors} failed", status=job.status, waiting_until=None, percent=100.0)

        if job.status == "FAILED" or status.errors > 0:
            errors = await self._collect(args, job_id, "errors", deadline)
            result.error_codes = errors.codes
            result.errors_location = errors.location
            result.records_collected += errors.records
        if args.collect_imports:
            imports = await self._collect(args, job_id, "imports", deadline)
            result.imports_location = imports.location
            result.records_collected += imports.records

        track("done", f"{kind} batch job {job_id} {job.status}: {result.imports} imported, {result.errors} failed, "
              f"{result.records_collected} records collected", records=result.records_collected)
        return result

    async def _collect(self, args: BatchImportInput, job_id: str, which: str, deadline: Any) -> CollectedRecords:
        self._tracker.set(f"collecting_{which}",
                          f"collecting the {which} of {args.kind} batch job {job_id} page by page to NDJSON")
        return await self._call(
            COLLECT_BATCH_RECORDS,
            CollectBatchRecordsParams(kind=args.kind, job_id=job_id, which=which, destination=args.destination),
            # Collecting gets its own time even when the wait used most of the deadline.
            CollectedRecords, max(deadline, workflow.now() + WALK_TIMEOUT), f"Collect {which} of {args.kind} batch job {job_id} to NDJSON",
            f"collecting the {which} of {args.kind} batch job {job_id} did not finish in time",
            start_to_close=WALK_TIMEOUT, heartbeat=WALK_HEARTBEAT_TIMEOUT,
        )

    async def _call(self, activity: str, params: Any, result_type: type, deadline: Any, summary: str,
                    timeout_message: str, **options: Any) -> Any:
        return await run_activity(self._tracker, activity, params, result_type, deadline=deadline, summary=summary,
                                  timeout_message=timeout_message, timeout_type=BATCH_JOB_TIMEOUT, **options)
