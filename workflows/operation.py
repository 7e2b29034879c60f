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
    from workflows.common import ProgressTracker, ProgressWorkflow, parse_input, poll_retry, run_activity
    from workflows.models import Operation, OperationInput
    from workflows.ui_text import at, bar, clock, code, escape, next_check, span

from temporalio.exceptions import ApplicationError

# The wait activity returns (waking the workflow, refreshing these texts) when the estimate moves this much.
REPORT_PCT_STEP: float = WaitForOperationParams.model_fields["report_pct_step"].default


def _progress_text(state: str | None, pct: float | None, seen_at: datetime | None) -> str:
    if state is None or seen_at is None:
        return "not known yet: the first status check is under way"
    step = f"updated here when the state changes or the estimate moves {REPORT_PCT_STEP:g} points"
    if pct is None:
        return f"{state}, no estimate from Fullstory yet (as of {clock(seen_at)}; {step})"
    return f"{bar(pct)} {state} (Fullstory's estimate as of {clock(seen_at)}; {step})"


async def wait_for_operation_to_end(
    tracker: ProgressTracker, operation_id: str, deadline: datetime, timeout: timedelta, max_poll_interval: timedelta,
    *, what: str = "operation", then: str = "",
) -> Operation:
    """Shared by OperationWorkflow and SegmentExportWorkflow: returns the COMPLETED operation or raises."""
    known_state: str | None = None
    known_pct: float | None = None
    seen_at: datetime | None = None
    checks = 0
    while True:
        pct_text = f" {known_pct:g}%" if known_pct is not None else ""
        tracker.set("waiting", f"Waiting for {what} {code(operation_id)} to finish", [
            ("Progress", _progress_text(known_state, known_pct, seen_at)),
            ("Next check", next_check(max_poll_interval)),
            ("Deadline", f"{at(deadline)} ({span(timeout)} after start)"),
            ("Then", then),
        ], job_id=operation_id, status=known_state, percent=known_pct, attempts=checks, waiting_until=deadline)
        snapshot: OperationSnapshot = await run_activity(
            tracker, WAIT_FOR_OPERATION,
            WaitForOperationParams(operation_id=operation_id, known_state=known_state, known_pct=known_pct,
                                   checks_before=checks, max_poll_seconds=max_poll_interval.total_seconds()),
            OperationSnapshot, deadline=deadline,
            summary=(f"Last seen {known_state}{pct_text} · " if known_state else "First check · ")
            + f"checks ≤ {span(max_poll_interval)} apart until it ends or moves {REPORT_PCT_STEP:g} points",
            timeout_message=f"operation {operation_id} did not finish within {timeout}",
            timeout_type=OPERATION_TIMEOUT, retry=poll_retry(max_poll_interval),
        )
        op = Operation.model_validate(snapshot.operation)
        checks = snapshot.checks
        known_state, known_pct, seen_at = op.state, op.estimate_pct_complete, workflow.now()
        if op.state == "FAILED":
            detail = op.error_details or "no errorDetails given"
            tracker.set("failed", f"Failed: {what} {code(operation_id)} FAILED", [
                ("Fullstory says", escape(detail)), ("Checks", f"{checks:,}")], status="FAILED", waiting_until=None)
            raise ApplicationError(f"operation {operation_id} FAILED: {detail}",
                                   {"operation": snapshot.operation}, type=OPERATION_FAILED, non_retryable=True)
        if op.state == "COMPLETED":
            tracker.set("completed", f"{what.capitalize()} {code(operation_id)} COMPLETED", [
                ("Progress", bar(100.0)), ("Checks", f"{checks:,}"), ("Then", then)],
                status="COMPLETED", percent=100.0, attempts=checks, waiting_until=None)
            return op


@workflow.defn(name="OperationWorkflow")
class OperationWorkflow(ProgressWorkflow):
    @workflow.run
    async def run(self, input: dict[str, Any]) -> Operation:
        args = parse_input(OperationInput, input)
        deadline = workflow.now() + args.timeout
        return await wait_for_operation_to_end(self._tracker, args.operation_id, deadline, args.timeout,
                                               args.max_poll_interval, then="return the final operation")
