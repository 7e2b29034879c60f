"""Small pieces every workflow uses: input parsing, failure unwrapping, progress."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from workflows.activity_types import INVALID_INPUT
    from workflows.models import Progress, describe_validation_error
    from workflows.ui_text import Row, current_details, escape, one_line

M = TypeVar("M", bound=BaseModel)


def parse_input(model: type[M], raw: Any) -> M:
    """Validate a workflow input; bad input fails the workflow at once (never a retry loop)."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ApplicationError(describe_validation_error(model, e), type=INVALID_INPUT, non_retryable=True) from None


def raise_activity_failure(err: ActivityError, timeout_message: str, timeout_type: str) -> NoReturn:
    """Re-raise an activity's failure as the workflow's own, with its clear message at the top.

    A schedule-to-close timeout is the workflow's overall deadline: it becomes
    `timeout_type` with `timeout_message`.
    """
    cause = err.cause
    # The deadline shows either as a schedule-to-close timeout, or (when the next retry would land past
    # it) as the last attempt's failure with retry state TIMEOUT.
    timed_out = isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_CLOSE
    if timed_out or err.retry_state == RetryState.TIMEOUT:
        inner = cause.cause if isinstance(cause, TimeoutError) else cause
        last = inner.message if isinstance(inner, ApplicationError) else None
        raise ApplicationError(
            timeout_message + (f" (last check: {last})" if last else ""), type=timeout_type, non_retryable=True
        ) from err
    if isinstance(cause, ApplicationError):
        raise ApplicationError(
            cause.message, *cause.details, type=cause.type, non_retryable=True
        ) from err
    raise ApplicationError(str(cause or err), type=type(cause or err).__name__, non_retryable=True) from err


class ProgressTracker:
    """Keeps the `progress` query answer and the UI's current details in step.

    One source, two renderings: the UI gets a bold headline and a bullet per row (markdown); the
    query's `detail` gets the same as one plain line.
    """

    def __init__(self) -> None:
        self.progress = Progress()

    def set(self, phase: str, headline: str, rows: Iterable[Row] = (), **fields: Any) -> None:
        rows = list(rows)
        self.progress = self.progress.model_copy(
            update={"phase": phase, "detail": one_line(headline, rows), "updated_at": workflow.now(), **fields}
        )
        workflow.set_current_details(current_details(headline, rows))


class ProgressWorkflow:
    """Base of every workflow here: one ProgressTracker and the `progress` query that reads it."""

    def __init__(self) -> None:
        self._tracker = ProgressTracker()

    @workflow.query(name="progress")
    def progress(self) -> Progress:
        return self._tracker.progress


def remaining(deadline: Any, floor: timedelta = timedelta(seconds=1)) -> timedelta:
    """Time left until `deadline` (a workflow-time datetime), never below `floor`."""
    return max(deadline - workflow.now(), floor)


NON_RETRYABLE = ["InvalidInput", "FullstoryBadRequest", "FullstoryUnauthorized", "FullstoryForbidden",
                 "FullstoryNotFound", "FullstoryUnprocessable", "FullstoryClientError",
                 "UnsupportedDestination", "DestinationNotWritable"]

# A single HTTP call: retried with backoff (or the server's Retry-After) until the deadline.
CALL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                         maximum_interval=timedelta(minutes=2), non_retryable_error_types=NON_RETRYABLE)
# Short, so a call held by a worker that died is retried elsewhere within about 30 s.
CALL_TIMEOUT = timedelta(seconds=30)


def poll_retry(max_interval: timedelta) -> RetryPolicy:
    """Retry policy of a wait: the activity's `next_retry_delay` sets each gap; this is the fallback."""
    return RetryPolicy(initial_interval=min(timedelta(seconds=2), max_interval), backoff_coefficient=1.5,
                       maximum_interval=max_interval, non_retryable_error_types=NON_RETRYABLE)


async def run_activity(
    tracker: ProgressTracker, activity: str, params: Any, result_type: type, *, deadline: Any, summary: str,
    timeout_message: str, timeout_type: str, retry: RetryPolicy = CALL_RETRY,
    start_to_close: timedelta = CALL_TIMEOUT, heartbeat: timedelta | None = None, task_queue: str | None = None,
) -> Any:
    """Run one activity until `deadline`; its failure becomes the workflow's, clearly worded."""
    try:
        return await workflow.execute_activity(
            activity, params, result_type=result_type, summary=summary,
            schedule_to_close_timeout=remaining(deadline), start_to_close_timeout=start_to_close,
            heartbeat_timeout=heartbeat, retry_policy=retry, task_queue=task_queue,
        )
    except ActivityError as err:
        tracker.set("failed", "Failed: " + escape(str(err.cause.message if err.cause else err)),
                    [("Step", escape(summary))], waiting_until=None)
        raise_activity_failure(err, timeout_message, timeout_type)
