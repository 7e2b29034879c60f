"""OperationWorkflow: wait for any Fullstory operation to finish.

The wait is one activity whose retries are the loop (durable timers that
honour Retry-After); it returns early only when the state changes or the
estimate moves by 25 points, so `progress` and the UI show the percentage
while history stays bounded. FAILED ends the workflow with `errorDetails`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.activity_types import (
        OPERATION_FAILED,
        OPERATION_TIMEOUT,
        WAIT_FOR_OPERATION,
        OperationSnapshot,
        WaitForOperationParams,
    )
    from workflows.common import ProgressWorkflow, parse_input, poll_retry, run_activity
    from workflows.models import Operation, OperationInput

from temporalio.exceptions import ApplicationError


async def wait_for_operation_to_end(
    tracker: ProgressTracker, operation_id: str, deadline: datetime, timeout: timedelta, max_poll_interval: timedelta,
) -> Operation:
    """Shared by OperationWorkflow and SegmentExportWorkflow: returns the COMPLETED operation or raises."""
    known_state: str | None = None
    known_pct: float | None = None
    checks = 0
    while True:
        pct_text = f", {known_pct:g}% complete" if known_pct is not None else ""
        tracker.set("waiting", f"waiting for operation {operation_id} ({known_state or 'state unknown'}{pct_text}); "
                    f"checked every <= {max_poll_interval.total_seconds():g}s or as Retry-After asks; "
                    f"deadline {deadline.isoformat()}", job_id=operation_id, status=known_state,
                    percent=known_pct, attempts=checks, waiting_until=deadline)
        snapshot: OperationSnapshot = await run_activity(
            tracker, WAIT_FOR_OPERATION,
            WaitForOperationParams(operation_id=operation_id, known_state=known_state, known_pct=known_pct,
                                   checks_before=checks, max_poll_seconds=max_poll_interval.total_seconds()),
            OperationSnapshot, deadline=deadline,
            summary=f"Wait for operation {operation_id} ({known_state or 'starting'}{pct_text})",
            timeout_message=f"operation {operation_id} did not finish within {timeout}",
            timeout_type=OPERATION_TIMEOUT, retry=poll_retry(max_poll_interval),
        )
        op = Operation.model_validate(snapshot.operation)
        checks = snapshot.checks
        known_state, known_pct = op.state, op.estimate_pct_complete
        if op.state == "FAILED":
            detail = op.error_details or "no errorDetails given"
            tracker.set("failed", f"operation {operation_id} FAILED: {detail}", status="FAILED")
            raise ApplicationError(f"operation {operation_id} FAILED: {detail}",
                                   {"operation": snapshot.operation}, type=OPERATION_FAILED, non_retryable=True)
        if op.state == "COMPLETED":
            tracker.set("completed", f"operation {operation_id} COMPLETED", status="COMPLETED", percent=100.0,
                        attempts=checks, waiting_until=None)
            return op


@workflow.defn(name="OperationWorkflow")
class OperationWorkflow(ProgressWorkflow):
    @workflow.run
    async def run(self, input: dict[str, Any]) -> Operation:
        args = parse_input(OperationInput, input)
        deadline = workflow.now() + args.timeout
        return await wait_for_operation_to_end(self._tracker, args.operation_id, deadline, args.timeout,
                                               args.max_poll_interval)
