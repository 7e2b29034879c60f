"""How a workflow takes a step: parse the input, run one activity until a deadline, keep `progress`.

    class MyWorkflow(ProgressWorkflow):
        timeout_error = errors.BATCH_JOB_TIMEOUT

        @workflow.run
        async def run(self, input: dict[str, Any]) -> MyResult:
            args = parse_input(MyInput, input)
            job = await self.step(BatchActivities.create_batch_job, params, deadline=...,
                                  text=StepText("Create ...", "creating ... did not succeed in time"))

`step` calls the activity by method (typed: it returns what the activity returns), and turns its
failure into the workflow's own, clearly worded; `ProgressWorkflow` answers the `progress` query.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from activities.locations import CheckLocationsParams, LocationActivities
    from vocabulary import errors
    from vocabulary.contract import Progress, describe_validation_error
    from vocabulary.placeholders import (
        SCHEDULED_START_TIME,
        fields_with_placeholders,
        fill_placeholders,
        unscheduled_message,
    )
    from vocabulary.policies import CALL_RETRY, CALL_TIMEOUT, UNATTENDED_STEP_BUDGET
    from vocabulary.texts import Row, current_details, escape, one_line

CHECK_LOCATIONS_PATCH = "check-locations"  # 2026-11: runs started before it replay without the check
# 2026-12: a run not started by a schedule whose input holds {date}/{datetime} fails with InvalidInput;
# runs started before (none had a reason to hold one) replay as they ran.
UNSCHEDULED_PLACEHOLDERS_PATCH = "unscheduled-placeholders"
SCHEDULED_START_KEY = SearchAttributeKey.for_datetime(SCHEDULED_START_TIME)

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P")
R = TypeVar("R")


class StepText(NamedTuple):
    """What a step says: its summary in the UI, and the message if it misses its deadline."""

    summary: str
    timeout_message: str


def parse_input(model: type[M], raw: Any) -> M:
    """Validate a workflow input; bad input fails the workflow at once (never a retry loop)."""
    if isinstance(raw, model):
        return raw
    raw = fill_scheduled_placeholders(raw)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise errors.INVALID_INPUT(describe_validation_error(model, e)) from None


def scheduled_time() -> datetime | None:
    """The time the schedule that started this run scheduled it for (late, caught up or backfilled runs
    included); None when no schedule started it. Deterministic: from the run's start event."""
    return workflow.info().typed_search_attributes.get(SCHEDULED_START_KEY)


def fill_scheduled_placeholders(raw: Any) -> Any:
    """A scheduled run's input with {date}/{datetime} in its top-level strings filled from its scheduled
    time (vocabulary/placeholders.py). Outside a schedule a placeholder is an InvalidInput: it would
    otherwise name a file that does not exist. An input without placeholders is returned as it is."""
    fields = fields_with_placeholders(raw)
    if not fields or not workflow.in_workflow():
        return raw
    scheduled = scheduled_time()
    if scheduled is not None:
        return fill_placeholders(raw, scheduled)
    if workflow.patched(UNSCHEDULED_PLACEHOLDERS_PATCH):
        raise errors.INVALID_INPUT(unscheduled_message(fields))
    return raw


def raise_activity_failure(err: ActivityError, *, timeout_message: str, timeout_error: errors.ErrorType) -> NoReturn:
    """Re-raise an activity's failure as the workflow's own, with its clear message at the top.

    A schedule-to-close timeout is the step's deadline: it becomes `timeout_error` with `timeout_message`.
    """
    cause = err.cause
    # The deadline shows either as a schedule-to-close timeout, or (when the next retry would land past
    # it) as the last attempt's failure with retry state TIMEOUT.
    timed_out = isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_CLOSE
    if timed_out or err.retry_state == RetryState.TIMEOUT:
        inner = cause.cause if isinstance(cause, TimeoutError) else cause
        last = inner.message if isinstance(inner, ApplicationError) else None
        raise timeout_error(timeout_message + (f" (last check: {last})" if last else "")) from err
    if isinstance(cause, ApplicationError):
        raise ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True) from err
    raise ApplicationError(str(cause or err), type=type(cause or err).__name__, non_retryable=True) from err


def remaining(deadline: datetime, floor: timedelta = timedelta(seconds=1)) -> timedelta:
    """Time left until `deadline` (a workflow-time datetime), never below `floor`."""
    return max(deadline - workflow.now(), floor)


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
    """Base of every workflow here: the `progress` query, and `step`, the one way to run an activity."""

    # The error a step's deadline becomes, unless the step names its own.
    timeout_error: ClassVar[errors.ErrorType]

    def __init__(self) -> None:
        self._tracker = ProgressTracker()

    @workflow.query(name="progress")
    def progress(self) -> Progress:
        return self._tracker.progress

    @property
    def tracker(self) -> ProgressTracker:
        """The progress query's answer and the UI's current details, for a step shared by several workflows."""
        return self._tracker

    async def step(
        self,
        activity: Callable[[Any, P], Awaitable[R]],
        params: P,
        *,
        deadline: datetime,
        text: StepText,
        retry: RetryPolicy = CALL_RETRY,
        start_to_close: timedelta = CALL_TIMEOUT,
        heartbeat: timedelta | None = None,
        task_queue: str | None = None,
    ) -> R:
        """Run one activity (by method) until `deadline`; its failure becomes the workflow's, clearly worded."""
        try:
            return await workflow.execute_activity_method(
                activity,
                params,
                summary=text.summary,
                schedule_to_close_timeout=remaining(deadline),
                start_to_close_timeout=start_to_close,
                heartbeat_timeout=heartbeat,
                retry_policy=retry,
                task_queue=task_queue,
            )
        except ActivityError as err:
            self._tracker.set(
                "failed",
                "Failed: " + escape(str(getattr(err.cause, "message", None) or err)),
                [("Step", escape(text.summary))],
                waiting_until=None,
            )
            raise_activity_failure(err, timeout_message=text.timeout_message, timeout_error=self.timeout_error)

    async def unattended_step(
        self, activity: Callable[[Any, P], Awaitable[R]], params: P, summary: str, **options: Any
    ) -> R:
        """A step of a sync that runs for months: retried for UNATTENDED_STEP_BUDGET before the sync gives up."""
        return await self.step(
            activity,
            params,
            deadline=workflow.now() + UNATTENDED_STEP_BUDGET,
            text=StepText(summary, f"{summary}: did not succeed within {UNATTENDED_STEP_BUDGET}"),
            **options,
        )

    async def check_locations(self, **locations: str | None) -> None:
        """Fail at once, before any call to Fullstory, on a location outside FULLSTORY_ALLOWED_LOCATIONS.

        Skipped when the input names none (the default destination is always allowed). Runs that
        started before this check existed replay without it (`workflow.patched`).
        """
        named = {field: value for field, value in locations.items() if value is not None}
        if not named or not workflow.patched(CHECK_LOCATIONS_PATCH):
            return
        await self.step(
            LocationActivities.check_locations,
            CheckLocationsParams(locations=named),
            deadline=workflow.now() + CALL_TIMEOUT * 4,
            text=StepText(
                "Check the locations named in the input against FULLSTORY_ALLOWED_LOCATIONS",
                "checking the input's locations did not succeed in time",
            ),
        )
