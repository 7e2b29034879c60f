"""OperationWorkflow: wait for any Fullstory operation to finish.

The steps: wait (one activity whose retries are the loop: durable timers that honour
Retry-After) until the operation ends. The activity returns early only when the state changes
or the estimate moves by 25 points, so `progress` and the UI show the percentage while history
stays bounded. FAILED ends the workflow with `errorDetails`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from activities.operations import Operation, OperationActivities, OperationSnapshot, WaitForOperationParams
    from vocabulary import errors
    from vocabulary.contract import InputModel, PollInterval, PositiveDuration
    from vocabulary.policies import poll_retry
    from vocabulary.texts import LIVE_STATUS_ROW, Row, at, bar, clock, code, escape, next_check, span, status_checks_row
    from workflows.steps import ProgressTracker, ProgressWorkflow, StepText, parse_input

# The wait activity returns (waking the workflow, refreshing these texts) when the estimate moves this much.
REPORT_PCT_STEP: float = WaitForOperationParams.model_fields["report_pct_step"].default


# --- The contract (the result is Fullstory's own Operation, in snake_case) ------------------------


class OperationInput(InputModel):
    """Input of `OperationWorkflow`: wait for any Fullstory operation to finish."""

    operation_id: str = Field(
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="The operation to wait for (from a Fullstory API that started one).",
    )
    timeout: PositiveDuration = Field(default=timedelta(hours=24), description="Overall deadline, ISO 8601 or seconds.")
    max_poll_interval: PollInterval = Field(
        default=timedelta(seconds=60),
        description="Longest wait between status checks when the server sends no Retry-After (1 s to 6 h).",
    )


def operation_workflow_id(operation_id: str) -> str:
    return f"fullstory-operation-{operation_id}"


def workflow_id_for(args: OperationInput, unique: str) -> str:
    return operation_workflow_id(args.operation_id)


# --- The workflow, and the wait it shares with SegmentExportWorkflow ------------------------------


@workflow.defn(name="OperationWorkflow", versioning_behavior=VersioningBehavior.PINNED)
class OperationWorkflow(ProgressWorkflow):
    timeout_error = errors.OPERATION_TIMEOUT

    @workflow.run
    async def run(self, input: dict[str, Any]) -> Operation:
        args = parse_input(OperationInput, input)
        deadline = workflow.now() + args.timeout
        return await wait_for_operation_to_end(
            self, args.operation_id, deadline, args.timeout, args.max_poll_interval, then="return the final operation"
        )


async def wait_for_operation_to_end(
    wf: ProgressWorkflow,
    operation_id: str,
    deadline: datetime,
    timeout: timedelta,
    max_poll_interval: timedelta,
    *,
    what: str = "operation",
    then: str = "",
) -> Operation:
    """Returns the COMPLETED operation, or fails the workflow with OperationFailed (or its timeout)."""
    say = OperationNarration(wf.tracker, operation_id, deadline, timeout, max_poll_interval, what=what, then=then)
    snapshot: OperationSnapshot | None = None
    while True:
        say.waiting(snapshot)
        snapshot = await wf.step(
            OperationActivities.wait_for_operation,
            WaitForOperationParams(
                operation_id=operation_id,
                known_state=say.state,
                known_pct=say.pct,
                checks_before=say.checks,
                max_poll_seconds=max_poll_interval.total_seconds(),
            ),
            deadline=deadline,
            retry=poll_retry(max_poll_interval),
            text=say.wait_step(),
        )
        op = say.seen(snapshot)
        if op.state == "FAILED":
            say.failed(op)
            raise errors.OPERATION_FAILED(
                f"operation {operation_id} FAILED: {op.error_details or 'no errorDetails given'}",
                {"operation": snapshot.operation},
            )
        if op.state == "COMPLETED":
            say.completed()
            return op


# --- What the UI says ----------------------------------------------------------------------------


class OperationNarration:
    """The wait's current details and step summary; remembers what the last check saw."""

    def __init__(
        self,
        tracker: ProgressTracker,
        operation_id: str,
        deadline: datetime,
        timeout: timedelta,
        max_poll_interval: timedelta,
        *,
        what: str,
        then: str,
    ) -> None:
        self.track, self.operation_id, self.what, self.then = tracker.set, operation_id, what, then
        self.deadline, self.timeout, self.max_poll_interval = deadline, timeout, max_poll_interval
        self.state: str | None = None
        self.pct: float | None = None
        self.seen_at: datetime | None = None
        self.checks = 0

    def seen(self, snapshot: OperationSnapshot) -> Operation:
        op = Operation.model_validate(snapshot.operation)
        self.checks, self.state, self.pct, self.seen_at = (
            snapshot.checks,
            op.state,
            op.estimate_pct_complete,
            workflow.now(),
        )
        return op

    def progress_text(self) -> str:
        if self.state is None or self.seen_at is None:
            return "not known yet: the first status check is under way"
        step = f"updated here when the state changes or the estimate moves {REPORT_PCT_STEP:g} points"
        if self.pct is None:
            return f"{self.state}, no estimate from Fullstory yet (as of {clock(self.seen_at)}; {step})"
        return f"{bar(self.pct)} {self.state} (Fullstory's estimate as of {clock(self.seen_at)}; {step})"

    def waiting(self, snapshot: OperationSnapshot | None) -> None:
        self.track(
            "waiting",
            f"Waiting for {self.what} {code(self.operation_id)} to finish",
            [
                ("Progress", self.progress_text()),
                ("Next check", next_check(self.max_poll_interval)),
                ("Deadline", f"{at(self.deadline)} ({span(self.timeout)} after start)"),
                ("Then", self.then),
            ],
            job_id=self.operation_id,
            status=self.state,
            percent=self.pct,
            waiting_until=self.deadline,
        )

    def wait_step(self) -> StepText:
        pct_text = f" {self.pct:g}%" if self.pct is not None else ""
        return StepText(
            (f"Last seen {self.state}{pct_text} · " if self.state else "First check · ")
            + f"checks ≤ {span(self.max_poll_interval)} apart until it ends or moves {REPORT_PCT_STEP:g} points",
            f"operation {self.operation_id} did not finish within {self.timeout}",
        )

    def failed(self, op: Operation) -> None:
        self.track(
            "failed",
            f"Failed: {self.what} {code(self.operation_id)} FAILED",
            [("Fullstory says", escape(op.error_details or "no errorDetails given")), ("Checks", f"{self.checks:,}")],
            status="FAILED",
            waiting_until=None,
        )

    def completed(self) -> None:
        self.track(
            "completed",
            f"{self.what.capitalize()} {code(self.operation_id)} COMPLETED",
            [("Progress", bar(100.0)), ("Checks", f"{self.checks:,}"), ("Then", self.then)],
            status="COMPLETED",
            percent=100.0,
            waiting_until=None,
        )


def start_texts(args: OperationInput) -> tuple[str, str, list[Row]]:
    """(summary, headline, rows) for the UI's static texts, set by whoever starts the workflow."""
    return (
        f"Wait for Fullstory operation {args.operation_id}",
        f"Fullstory operation {code(args.operation_id)}",
        [
            ("Deadline", f"{span(args.timeout)} after start"),
            status_checks_row(args.max_poll_interval),
            (
                "Result",
                "the final operation; FAILED fails the workflow with `OperationFailed` and Fullstory's errorDetails",
            ),
            LIVE_STATUS_ROW,
        ],
    )
